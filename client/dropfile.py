"""Drops no report could carry: a tiny fixed-size counters file beside the spool.

When a client loses events and cannot tell the daemon in-band (no daemon, the socket
full, or the spool itself full), it adds the counts here; the daemon takes them on its
next spool scan and counts them as ``client_drop.<reason>``, so `rkd status` shows
every loss, even one that happened while it was down. The file is 0600, a regular file
of the user's (never followed through a link), always 8 + 8 x len(DROP_REASONS) bytes,
updated under an exclusive ``flock``; counters saturate at 2^63 - 1.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from rkd.client.files import UnsafePath, ensure_private_dir, open_private_file
from rkd.client.wire import DROP_REASONS

DROPS_FILE: Final = "drops.bin"
MAGIC: Final = b"RKDROP01"
REASONS: Final = tuple(sorted(DROP_REASONS))
_FORMAT: Final = struct.Struct(f"<8s{len(REASONS)}Q")
SIZE: Final = _FORMAT.size
MAX: Final = (1 << 63) - 1


def _read(fd: int) -> list[int]:
    """The counters, or zeros for a file that is not one (wrong size or magic): a
    damaged file counts nothing rather than an invented loss."""
    data = os.pread(fd, SIZE + 1, 0)
    if len(data) != SIZE:
        return [0] * len(REASONS)
    magic, *counts = _FORMAT.unpack(data)
    return [min(c, MAX) for c in counts] if magic == MAGIC else [0] * len(REASONS)


def _write(fd: int, counts: list[int]) -> None:
    os.pwrite(fd, _FORMAT.pack(MAGIC, *counts), 0)
    os.ftruncate(fd, SIZE)


def add_drops(spool_dir: Path, drops: Mapping[str, int]) -> bool:
    """Add ``drops`` (reason -> n) to the file; False if it could not be written."""
    if not any(drops.values()):
        return True
    try:
        ensure_private_dir(spool_dir)
        fd = open_private_file(spool_dir / DROPS_FILE, os.O_RDWR | os.O_CREAT)
    except (OSError, UnsafePath):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        counts = _read(fd)
        for reason, n in drops.items():
            i = REASONS.index(reason if reason in DROP_REASONS else "other")
            counts[i] = min(MAX, counts[i] + max(0, n))
        _write(fd, counts)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def take_drops(spool_dir: Path) -> dict[str, int]:
    """The daemon's side: the counts since the last take (then zero). Nothing when the
    file is missing or not one of ours (UnsafePath is the caller's to log)."""
    try:
        fd = open_private_file(spool_dir / DROPS_FILE, os.O_RDWR, tighten=False)
    except FileNotFoundError:
        return {}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        counts = _read(fd)
        if any(counts):
            _write(fd, [0] * len(REASONS))
        return {r: n for r, n in zip(REASONS, counts, strict=True) if n}
    finally:
        os.close(fd)
