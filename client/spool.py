"""The on-disk spool: where events go when no daemon is running.

A spool file is written whole under a temporary name, then renamed, so the daemon only
ever sees complete files. Format: the magic ``RKS1`` then records of a 4-byte
little-endian length and a frame. Files are 0600 in a 0700 folder; the folder's total
size is capped, and frames over the cap are counted as dropped by the caller.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Final

MAGIC: Final = b"RKS1"
SUFFIX: Final = ".spool"
# Room for several processes leaving at once with their unconfirmed copies (a few MB
# each); the daemon empties the folder within seconds.
MAX_SPOOL_BYTES: Final = 128 * 1024 * 1024
_LEN: Final = struct.Struct("<I")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700; refuse a folder another user owns."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def spool_size(spool_dir: Path) -> int:
    """Total bytes of the spool files in ``spool_dir`` (0 when it does not exist)."""
    try:
        with os.scandir(spool_dir) as it:
            return sum(e.stat().st_size for e in it if e.name.endswith(SUFFIX))
    except FileNotFoundError:
        return 0


def write_spool(spool_dir: Path, frames: list[bytes], cap: int = MAX_SPOOL_BYTES) -> int:
    """Write as many ``frames`` as fit under ``cap`` into a new spool file; return how many."""
    room = cap - spool_size(spool_dir) - len(MAGIC)
    parts, n = [MAGIC], 0
    for frame in frames:
        room -= _LEN.size + len(frame)
        if room < 0:
            break
        parts += (_LEN.pack(len(frame)), frame)
        n += 1
    if n == 0:
        return 0
    ensure_private_dir(spool_dir)
    name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"  # secrets costs ~5 ms
    tmp = spool_dir / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"".join(parts))
    finally:
        os.close(fd)
    os.rename(tmp, spool_dir / f"{name}{SUFFIX}")
    return n


def spool_files(spool_dir: Path) -> list[Path]:
    """Complete spool files, oldest first."""
    try:
        names = sorted(n for n in os.listdir(spool_dir) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    return [spool_dir / n for n in names]


def read_spool(data: bytes) -> tuple[list[bytes], bool]:
    """Split a spool file into frames; the flag says whether it was damaged."""
    if not data.startswith(MAGIC):
        return [], True
    frames: list[bytes] = []
    pos, end = len(MAGIC), len(data)
    while pos + _LEN.size <= end:
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + n > end:
            return frames, True
        frames.append(data[pos : pos + n])
        pos += n
    return frames, pos != end
