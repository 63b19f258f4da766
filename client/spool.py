"""The on-disk spool: where events go when no daemon is running.

A spool file is written whole under a temporary name, then renamed, so the daemon only
ever sees complete files (written whole, fsynced, then renamed). Format: the magic ``RKS1`` then records of a 4-byte
little-endian length and a frame. Files are 0600 in a 0700 folder; the folder's total
size is capped, and frames over the cap are counted as dropped by the caller.
"""

from __future__ import annotations

import os
import struct
import time
from os.path import join
from typing import TYPE_CHECKING, Final

from rkd.client.files import UnsafePath, ensure_private_dir, open_private_file, write_atomic

if TYPE_CHECKING:
    from pathlib import Path

    from rkd.client.files import StrPath

__all__ = [  # ensure_private_dir lives in rkd.client.files; importable from here too
    "MAGIC",
    "MAX_SPOOL_BYTES",
    "SUFFIX",
    "SpoolDamaged",
    "SpoolFileRefused",
    "ensure_private_dir",
    "frame_at",
    "read_spool",
    "read_spool_file",
    "spool_files",
    "spool_size",
    "write_spool",
]  # fmt: skip

MAGIC: Final = b"RKS1"
SUFFIX: Final = ".spool"
# Room for several processes leaving at once with their unconfirmed copies (a few MB
# each); the daemon empties the folder within seconds.
MAX_SPOOL_BYTES: Final = 128 * 1024 * 1024
_LEN: Final = struct.Struct("<I")


class SpoolFileRefused(Exception):
    """A spool file that is not a regular file of ours: it is never read.

    ``reason`` is one snake_case word: ``symlink``, ``not_regular``, ``not_owned`` or
    ``too_big``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def spool_size(spool_dir: StrPath) -> int:
    """Total bytes of the spool files in ``spool_dir`` (0 when it does not exist)."""
    try:
        with os.scandir(spool_dir) as it:
            return sum(e.stat().st_size for e in it if e.name.endswith(SUFFIX))
    except FileNotFoundError:
        return 0


def write_spool(spool_dir: StrPath, frames: list[bytes], cap: int = MAX_SPOOL_BYTES) -> int:
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
    parent = os.path.dirname(os.fspath(spool_dir).rstrip("/"))
    if not os.path.isdir(parent):  # an application is first: the data folder is 0700 too
        ensure_private_dir(parent)
    ensure_private_dir(spool_dir)
    name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"  # secrets costs ~5 ms
    # Whole, fsynced, then renamed: the daemon never sees a partial file, even after a
    # power cut (a crash leaves at most a .tmp, which it sweeps).
    write_atomic(join(spool_dir, f"{name}{SUFFIX}"), b"".join(parts))
    return n


def read_spool_file(path: StrPath) -> bytes:
    """The bytes of the spool file ``path``, if it is a regular file of ours.

    Opened without following a symlink and without blocking on a FIFO; anything else,
    or a file another user put there, raises SpoolFileRefused (the file is not read).
    A file that vanished raises FileNotFoundError.
    """
    try:
        fd = open_private_file(path, os.O_RDONLY, tighten=False)
    except UnsafePath as e:
        raise SpoolFileRefused(e.reason) from None
    with open(fd, "rb") as f:
        data = f.read(MAX_SPOOL_BYTES + 1)
    if len(data) > MAX_SPOOL_BYTES:
        raise SpoolFileRefused("too_big")  # no client writes one: the spool's cap is this
    return data


def spool_files(spool_dir: Path) -> list[Path]:
    """Complete spool files, oldest first (the daemon's: pathlib is loaded there)."""
    try:
        names = sorted(n for n in os.listdir(spool_dir) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    return [spool_dir / n for n in names]


class SpoolDamaged(ValueError):
    """A spool file that ends inside a record (a write cut short)."""


def frame_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """Where the frame of the record at ``pos`` lies in ``data``: (start, end); None when
    ``pos`` is the end of the data; SpoolDamaged when the data ends inside the record.
    The one parser of the record format, for whole files and for reading in slices."""
    if pos == len(data):
        return None
    start = pos + _LEN.size
    if start > len(data):
        raise SpoolDamaged("a length cut short")
    (n,) = _LEN.unpack_from(data, pos)
    if start + n > len(data):
        raise SpoolDamaged("a frame cut short")
    return start, start + n


def read_spool(data: bytes) -> tuple[list[bytes], bool]:
    """Split a spool file into frames; the flag says whether it was damaged."""
    if not data.startswith(MAGIC):
        return [], True
    frames: list[bytes] = []
    pos = len(MAGIC)
    try:
        while (at := frame_at(data, pos)) is not None:
            frames.append(data[at[0] : at[1]])
            pos = at[1]
    except SpoolDamaged:
        return frames, True
    return frames, False
