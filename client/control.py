"""Talking to a running daemon: is one up, and a request/reply with a deadline.

Nothing is trusted before it is checked: the runtime folder must be a real folder of
ours (not a symlink, not another user's, 0700), the lock a regular file of ours and each
socket a socket of ours. Without ``XDG_RUNTIME_DIR`` the folder is ``<tmp>/rkd-<uid>``,
where another local user could create it first and receive our events or answer our
requests; such a folder is refused (:class:`UnsafeRuntimeDir`), never used.
"""

from __future__ import annotations

import fcntl
import os
import stat
from os.path import join
from typing import TYPE_CHECKING, Any, Final

import msgspec
from rkd.client.files import UnsafePath, check_private_path, ensure_private_dir, open_private_file
from rkd.client.wire import CONTROL_SOCKET, LOCK_FILE, ControlRequest, Reply, StatusRequest

if TYPE_CHECKING:
    from rkd.client.files import StrPath


class DaemonUnavailable(Exception):
    """No daemon answered in time. The message is one line for the user."""


class UnsafeRuntimeDir(DaemonUnavailable):
    """The runtime folder, its lock or a socket in it is not safely ours: refused."""


class DaemonNotResponding(DaemonUnavailable):
    """Our daemon holds its lock (it runs) but does not answer: stopped (SIGSTOP, a
    debugger) or stuck. Not the same as "not running": nothing may act in its place."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"the rkd daemon (pid {pid}) is not responding (stopped?)")
        self.pid = pid


NOT_RUNNING: Final = (
    "the rkd daemon is not running (start it with 'rkd start', or keep it running with"
    " 'rkd service install')"
)
PROBE_MS: Final = 1000  # a running daemon answers a status request well within this


def process_stopped(pid: int) -> bool:
    """True when the kernel says ``pid`` is stopped (state T or t in /proc/<pid>/stat):
    it cannot answer until it gets SIGCONT. False where there is no /proc (macOS)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read(4096)
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses; the last ")" ends it.
    return stat_line[stat_line.rfind(b")") + 2 :][:1] in (b"T", b"t")


def check_runtime_dir(runtime_dir: StrPath, sock: str | None = None) -> bool:
    """Verify ``runtime_dir`` before any use; False when it does not exist (no daemon).

    It must be a real folder of ours (a loose mode is tightened to 0700), its lock, if
    any, a regular file of ours, and the socket ``sock``, if there, a socket of ours.
    Raises UnsafeRuntimeDir, whose one-line message names the path and what is wrong.
    """
    try:
        ensure_private_dir(runtime_dir, create=False)
        check_private_path(join(runtime_dir, LOCK_FILE), stat.S_IFREG)
        if sock is not None:
            check_private_path(join(runtime_dir, sock), stat.S_IFSOCK)
    except UnsafePath as e:
        raise UnsafeRuntimeDir(f"refusing an unsafe rkd runtime folder: {e}") from None
    except FileNotFoundError:
        return False
    except OSError as e:
        raise UnsafeRuntimeDir(f"{runtime_dir}: cannot check it: {e.strerror}") from None
    return True


def daemon_pid(runtime_dir: StrPath) -> int | None:
    """Pid of our daemon holding the lock in ``runtime_dir``, or None if none runs.

    The daemon holds an exclusive ``flock`` for its whole life, so a stale lock file or
    socket left by a killed daemon does not look alive. An unsafe folder (see
    :func:`check_runtime_dir`, which says why) holds no daemon of ours: None. -1 when the
    lock is held but names no pid.
    """
    try:
        if not check_runtime_dir(runtime_dir):
            return None
        fd = open_private_file(join(runtime_dir, LOCK_FILE), os.O_RDONLY, tighten=False)
    except (DaemonUnavailable, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    except OSError:
        return None
    finally:
        os.close(fd)  # closing also releases the shared lock we may have taken
    return None


def listener(path: StrPath, timeout_secs: float = 1.0) -> tuple[int, int] | None:
    """(pid, uid) of the process listening on the unix socket ``path``, from the kernel.

    Linux's ``SO_PEERCRED`` on a plain connection gives the credentials the listener had
    when it called ``listen()``; zmq sees a peer that connects and leaves, harmlessly.
    None where the platform has no ``SO_PEERCRED``. Raises OSError when nobody listens.
    """
    import socket  # ~2 ms: only `rkd stop` needs it, never an application
    import struct

    if not hasattr(socket, "SO_PEERCRED"):
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_secs)
        s.connect(os.fspath(path))
        pid, uid, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def verified_daemon_pid(runtime_dir: StrPath) -> int | None:
    """Pid of our daemon, proven before anyone signals it; None when none runs.

    Proof: the folder, lock and control socket pass :func:`check_runtime_dir`, the lock
    is held and names pid P, and (on Linux) the kernel says the control socket's listener
    is P, running as this user. Where the kernel cannot say, the lock alone is the proof:
    a file of ours in a 0700 folder of ours. Raises UnsafeRuntimeDir when the proof fails
    and DaemonUnavailable when it cannot be had yet (a daemon still starting).
    """
    if not check_runtime_dir(runtime_dir, CONTROL_SOCKET):
        return None
    pid = daemon_pid(runtime_dir)
    if pid is None:
        return None
    lock, sock = join(runtime_dir, LOCK_FILE), join(runtime_dir, CONTROL_SOCKET)
    if pid <= 0:
        raise UnsafeRuntimeDir(f"{lock}: held, but it names no pid; not signalling anyone")
    try:
        peer = listener(sock)
    except OSError as e:
        raise DaemonUnavailable(f"{sock}: cannot check who serves it: {e.strerror}") from None
    if peer is not None and peer != (pid, os.getuid()):
        raise UnsafeRuntimeDir(
            f"{sock}: served by pid {peer[0]} (uid {peer[1]}) while {lock} names pid {pid};"
            " not signalling either"
        )
    return pid


def request(
    runtime_dir: StrPath,
    req: ControlRequest,
    timeout_ms: int = 5000,
    ctx: Any = None,
    probe: bool = False,
) -> Reply:
    """Send one control request; raise DaemonUnavailable when nobody answers in time,
    UnsafeRuntimeDir (a DaemonUnavailable) when the runtime folder is not safely ours,
    DaemonNotResponding when our daemon runs but is stopped or does not answer.

    ``probe``: before a request that may rightly take long (prune, flush), ask for the
    status with a PROBE_MS deadline, so a daemon that cannot answer is told within a
    second rather than after ``timeout_ms``.
    """
    pid = daemon_pid(runtime_dir) if check_runtime_dir(runtime_dir, CONTROL_SOCKET) else None
    if pid is None:
        raise DaemonUnavailable(NOT_RUNNING)
    if pid > 0 and process_stopped(pid):
        raise DaemonNotResponding(pid)
    import zmq

    if ctx is None:
        ctx = zmq.Context.instance()
    if probe and timeout_ms > PROBE_MS:
        _ask(runtime_dir, StatusRequest(), PROBE_MS, ctx, pid)
    return _ask(runtime_dir, req, timeout_ms, ctx, pid)


def _ask(runtime_dir: StrPath, req: ControlRequest, timeout_ms: int, ctx: Any, pid: int) -> Reply:
    import zmq

    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)  # LINGER defaults to forever: exit could hang
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    try:
        sock.connect(f"ipc://{join(runtime_dir, CONTROL_SOCKET)}")
        sock.send(msgspec.msgpack.encode(req))
        return msgspec.msgpack.decode(sock.recv(), type=Reply)
    except zmq.Again:
        if pid > 0 and daemon_pid(runtime_dir) == pid:  # still holds the lock: it runs
            raise DaemonNotResponding(pid) from None
        raise DaemonUnavailable(f"the rkd daemon did not answer within {timeout_ms} ms") from None
    except (zmq.ZMQError, msgspec.DecodeError) as e:
        raise DaemonUnavailable(f"cannot talk to the rkd daemon: {e}") from None
    except RecursionError:  # a reply nested deeper than msgspec recurses: not our daemon
        raise DaemonUnavailable("cannot talk to the rkd daemon: a malformed reply") from None
    finally:
        sock.close(linger=0)
