"""Private folders and files: created owner-only, checked before use, written whole.

Everything rkd keeps goes through these helpers (the runtime folder with its lock and
sockets, the data and spool folders, the database, the salt, consent and spool files),
so one policy holds everywhere: a folder or file must be a real one, never a symlink,
of the expected type, owned by this user. A loose mode on one of our own is tightened
(folders 0700, files 0600); anything else is refused with :class:`UnsafePath`.

The hazard is another local user: with no ``XDG_RUNTIME_DIR`` the runtime folder lives
in the shared, world-writable temp folder, where anyone can create ``rkd-<uid>`` first,
or a symlink or a FIFO by that name. Files inside a folder we verified as ours and 0700
cannot be swapped by anyone else (root aside), so an ``lstat`` there is not racy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from os import PathLike

    # A path as the daemon and CLI hold it (pathlib.Path) or as the client does (str):
    # the client's start-up never imports pathlib, ~4 ms with urllib.parse and ipaddress.
    StrPath = str | PathLike[str]

# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
_OPEN_FLAGS: Final = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS: Final = {
    stat.S_IFDIR: "directory", stat.S_IFREG: "regular file", stat.S_IFSOCK: "socket",
    stat.S_IFLNK: "symbolic link", stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}  # fmt: skip
_REASONS: Final = {stat.S_IFDIR: "not_directory", stat.S_IFREG: "not_regular",
                   stat.S_IFSOCK: "not_socket"}  # fmt: skip


class UnsafePath(PermissionError):
    """A path rkd will not use. ``reason``: symlink, not_directory, not_regular,
    not_socket or not_owned. The message is one line naming the path."""

    def __init__(self, path: StrPath, reason: str, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.path = path
        self.reason = reason


def verify(path: StrPath, st: os.stat_result, expect: int) -> None:
    """Raise UnsafePath unless ``st`` (of ``path``, from lstat/fstat) is an ``expect``
    (``stat.S_IFDIR``, ``S_IFREG``, ``S_IFSOCK``) owned by this user."""
    kind = stat.S_IFMT(st.st_mode)
    if kind != expect:
        reason = "symlink" if kind == stat.S_IFLNK else _REASONS[expect]
        what = f"is a {_KINDS.get(kind, 'special file')}, not a {_KINDS[expect]}"
        raise UnsafePath(path, reason, what)
    if st.st_uid != os.getuid():
        what = f"belongs to another user (uid {st.st_uid}, not {os.getuid()})"
        raise UnsafePath(path, "not_owned", what)


def ensure_private_dir(path: StrPath, create: bool = True) -> None:
    """Make sure ``path`` is a private folder of ours: created 0700 (with parents) when
    ``create``, a loose mode tightened to 0700; a symlink, a non-folder or another user's
    folder raises UnsafePath. Without ``create`` a missing folder raises FileNotFoundError.

    Only ``path`` itself is checked: its parents are the user's (or the system's).
    """
    if create:
        # FileExistsError: a file, or a symlink to one, is there; refused just below.
        with contextlib.suppress(FileExistsError):
            os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    verify(path, st, stat.S_IFDIR)
    if st.st_mode & 0o077:
        # Tighten through a descriptor of the folder we checked, never through a name.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _OPEN_FLAGS)
        try:
            verify(path, os.fstat(fd), stat.S_IFDIR)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)


def check_private_path(path: StrPath, expect: int) -> bool:
    """Whether ``path`` exists; if it does, it must be an ``expect`` of ours (lstat: a
    symlink is refused, never followed), else UnsafePath."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    verify(path, st, expect)
    return True


def open_private_file(path: StrPath, flags: int = os.O_RDONLY, tighten: bool = True) -> int:
    """``os.open`` a regular file of ours, never through a symlink (new files 0600).

    A FIFO, socket or device is refused without blocking, as is a file of another user;
    with ``tighten`` a loose mode is set to 0600. Never pass ``O_TRUNC``: the file is
    only checked after it is opened. Returns the descriptor (the caller closes it).
    """
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, 0o600)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP):
            check_private_path(path, stat.S_IFREG)  # says what it is instead
        raise
    try:
        st = os.fstat(fd)
        verify(path, st, stat.S_IFREG)
        if tighten and st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (it may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # cannot happen for a regular file; never loop forever
            raise OSError(errno.EIO, "write made no progress")
        view = view[n:]


def write_atomic(path: StrPath, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step (temporary file + rename), as ``mode``.

    A reader sees the old content or the new, never half of it, even after a power cut
    (the data is fsynced before the rename); a crash leaves at most a stray
    ``.<name>.<pid>.<random>.tmp`` beside it. The temporary file is always a new one
    (``O_EXCL``), never a file or symlink someone left under that name.
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def lock_patiently(fd: int, patience_secs: float, step_secs: float) -> bool:
    """Take ``fd``'s exclusive flock, trying again every ``step_secs`` for up to
    ``patience_secs`` (another process may hold it for a moment); whether it was taken.
    Never blocks for good: a holder stopped (^Z) or hostile cannot freeze the caller."""
    end = time.monotonic() + patience_secs
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= end:
                return False
            time.sleep(step_secs)
