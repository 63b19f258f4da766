"""The per-user runtime folder: its permissions, the single-daemon lock, the sockets.

Every check refuses rather than repairs what is not ours (see :mod:`rkd.client.files`):
a symlink as the folder (never followed, its target never chmodded), another user's
folder, a lock that is a FIFO, a symlink or another user's file, a socket path that is
not a socket of ours. Each refusal is a RuntimeDirError, which restarting cannot fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import TracebackType
from typing import Final

from rkd.client.files import (
    UnsafePath,
    check_private_path,
    ensure_private_dir,
    lock_patiently,
    open_private_file,
)
from rkd.client.wire import BATCHES_SOCKET, CONTROL_SOCKET, EVENTS_SOCKET, LOCK_FILE

# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
MAX_SOCKET_PATH: Final = 103
# Clients and rkd commands take the lock's shared side for a moment to see whether a
# daemon runs (control.daemon_pid); a daemon holds the exclusive side for its life. So
# a held lock is tried again for this long before it counts as another daemon's.
LOCK_PATIENCE_SECS: Final = 1.0


class RuntimeDirError(Exception):
    """The runtime folder cannot be used safely. The message is one line.

    Permanent: the daemon exits 78 (restarting cannot fix another user's folder).
    """


class AlreadyRunning(RuntimeDirError):
    """Another daemon of this user holds the lock."""


class DaemonLock:
    """An exclusive ``flock`` on ``daemon.lock``: held for the daemon's whole life.

    The kernel releases it when the process dies, however it dies, so a lock file left
    behind by a killed daemon never blocks the next one.
    """

    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = runtime_dir
        self.path = runtime_dir / LOCK_FILE
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock, or raise RuntimeDirError (AlreadyRunning if a daemon holds it).

        Once held, the socket paths are checked: only then may stale ones be removed.
        """
        prepare_runtime_dir(self.runtime_dir)
        try:
            fd = open_private_file(self.path, os.O_RDWR | os.O_CREAT)
        except UnsafePath as e:
            raise RuntimeDirError(f"unsafe lock file: {e}") from None
        except OSError as e:
            raise RuntimeDirError(f"{self.path}: cannot open the lock: {e.strerror}") from None
        if not lock_patiently(fd, LOCK_PATIENCE_SECS, 0.005):
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {text})" if text.isdigit() else ""
            raise AlreadyRunning(
                f"another rkd daemon{who} is already running for this user"
            ) from None
        try:
            check_sockets(self.runtime_dir)
        except RuntimeDirError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock; the file stays, harmlessly
            self._fd = -1

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def prepare_runtime_dir(path: Path) -> None:
    """Create the folder 0700 (a loose one of ours is tightened); refuse a symlink, a
    non-folder or another user's folder."""
    try:
        ensure_private_dir(path)
    except UnsafePath as e:
        raise RuntimeDirError(f"unsafe runtime folder: {e}") from None
    except OSError as e:
        raise RuntimeDirError(f"{path}: cannot create the runtime folder: {e.strerror}") from None
    longest = path / max(EVENTS_SOCKET, BATCHES_SOCKET, CONTROL_SOCKET, key=len)
    if len(str(longest).encode()) > MAX_SOCKET_PATH:
        raise RuntimeDirError(
            f"{path}: path too long for a socket ({len(str(longest))} > {MAX_SOCKET_PATH} "
            "bytes); set XDG_RUNTIME_DIR to a shorter folder"
        )


def socket_paths(runtime_dir: Path) -> tuple[Path, Path, Path]:
    """The event sockets (batches, and single events from older clients), the control."""
    return runtime_dir / BATCHES_SOCKET, runtime_dir / EVENTS_SOCKET, runtime_dir / CONTROL_SOCKET


def check_sockets(runtime_dir: Path) -> None:
    """Each socket path must be absent or a socket of ours, else RuntimeDirError."""
    for p in socket_paths(runtime_dir):
        try:
            check_private_path(p, stat.S_IFSOCK)
        except UnsafePath as e:
            raise RuntimeDirError(f"unsafe socket path: {e}") from None


def remove_sockets(runtime_dir: Path) -> list[Path]:
    """Remove socket files (stale ones of a dead daemon, or ours at exit); return them.

    Call with the lock held, after :func:`check_sockets` (``DaemonLock.acquire`` does).
    """
    removed = []
    for p in socket_paths(runtime_dir):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed
