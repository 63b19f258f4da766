"""Drops no report could carry: a tiny fixed-size counters file beside the spool.

When a client loses events and cannot tell the daemon in-band (no daemon, the socket
full, or the spool itself full), it adds the counts here; the daemon takes them on its
next spool scan and counts them as ``client_drop.<reason>``, so `rkd status` shows
every loss, even one that happened while it was down.

Besides the counts, the file holds up to :data:`CLAIM_SLOTS` *claims*: "client C's
events numbered F..L were sent, never confirmed, and could not be spooled" (a process
leaving while the daemon was frozen or gone, with the spool full). Some of those may
still reach the daemon (they were in its queue); so it counts as lost only the numbers
it did not receive (:class:`rkd.daemon.clients.ClientLedger`), which makes
"stored + counted as lost = sent" exact. With every slot taken, a claim is counted as
plain ``unconfirmed`` drops instead (an upper bound).

The file is 0600, a regular file of the user's (never followed through a link), always
:data:`SIZE` bytes, updated under an exclusive ``flock``; counters saturate at 2^63 - 1.
A file of the first format (counts only) is read and rewritten in this one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from os.path import join
from typing import TYPE_CHECKING, Final, NamedTuple

from rkd.client.files import UnsafePath, ensure_private_dir, lock_patiently, open_private_file
from rkd.client.wire import DROP_REASONS

if TYPE_CHECKING:
    from rkd.client.files import StrPath

DROPS_FILE: Final = "drops.bin"
MAGIC: Final = b"RKDROP02"
MAGIC_V1: Final = b"RKDROP01"
REASONS: Final = tuple(sorted(DROP_REASONS))
CLAIM_SLOTS: Final = 32
_COUNTS: Final = struct.Struct(f"<8s{len(REASONS)}Q")
_CLAIM: Final = struct.Struct("<4Q")  # client, first, last, reason index (client 0: free)
SIZE: Final = _COUNTS.size + CLAIM_SLOTS * _CLAIM.size
SIZE_V1: Final = _COUNTS.size
MAX: Final = (1 << 63) - 1
MAX_CLAIM: Final = 1 << 32  # events in one claim; a longer range is a lie, not a loss


class Claim(NamedTuple):
    """Events ``first``..``last`` (inclusive) of connection ``client``, maybe lost."""

    client: int
    first: int
    last: int
    reason: str


def _read(fd: int) -> tuple[list[int], list[Claim]]:
    """The counters and claims, or nothing for a file that is not one (wrong size or
    magic): a damaged file counts nothing rather than an invented loss."""
    data = os.pread(fd, SIZE + 1, 0)
    none: tuple[list[int], list[Claim]] = ([0] * len(REASONS), [])
    if len(data) == SIZE_V1 and data[:8] == MAGIC_V1:
        return [min(c, MAX) for c in _COUNTS.unpack(data)[1:]], []
    if len(data) != SIZE or data[:8] != MAGIC:
        return none
    counts = [min(c, MAX) for c in _COUNTS.unpack_from(data)[1:]]
    claims = []
    for client, first, last, reason in _CLAIM.iter_unpack(data[_COUNTS.size :]):
        if client and 1 <= first <= last and last - first < MAX_CLAIM and reason < len(REASONS):
            claims.append(Claim(client, first, last, REASONS[reason]))
    return counts, claims


def _write(fd: int, counts: list[int], claims: list[Claim]) -> None:
    slots = [_CLAIM.pack(c.client, c.first, c.last, REASONS.index(c.reason)) for c in claims]
    slots += [bytes(_CLAIM.size)] * (CLAIM_SLOTS - len(slots))
    os.pwrite(fd, _COUNTS.pack(MAGIC, *counts) + b"".join(slots), 0)
    os.ftruncate(fd, SIZE)


LOCK_PATIENCE_SECS: Final = 0.02  # an update takes microseconds; a holder that stays is stuck


def _lock(fd: int) -> None:
    """Take the file's exclusive lock within ~20 ms, or raise BlockingIOError: a process
    stopped (^Z) or hostile holding it must not freeze an exit or the daemon's loop."""
    if not lock_patiently(fd, LOCK_PATIENCE_SECS, 0.001):
        raise BlockingIOError("the drops file is held by another process")


def _reason(reason: str) -> str:
    return reason if reason in DROP_REASONS else "other"


def add_drops(spool_dir: StrPath, drops: Mapping[str, int], claims: Iterable[Claim] = ()) -> bool:
    """Add ``drops`` (reason -> n) and ``claims`` to the file; False if it could not be
    written. A claim with no free slot is added to the counts instead."""
    claims = [c._replace(reason=_reason(c.reason)) for c in claims if c.last >= c.first]
    if not any(drops.values()) and not claims:
        return True
    try:
        ensure_private_dir(spool_dir)
        fd = open_private_file(join(spool_dir, DROPS_FILE), os.O_RDWR | os.O_CREAT)
    except (OSError, UnsafePath):
        return False
    try:
        _lock(fd)
        counts, held = _read(fd)
        overflow: dict[str, int] = {}
        for c in claims:
            if len(held) < CLAIM_SLOTS:
                held.append(c)
            else:
                overflow[c.reason] = overflow.get(c.reason, 0) + c.last - c.first + 1
        for reason, n in [*drops.items(), *overflow.items()]:
            i = REASONS.index(_reason(reason))
            counts[i] = min(MAX, counts[i] + max(0, n))
        _write(fd, counts, held)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def take_drops(spool_dir: StrPath) -> tuple[dict[str, int], list[Claim]]:
    """The daemon's side: the counts and claims since the last take (then none). Nothing
    when the file is missing or not one of ours (UnsafePath is the caller's to log)."""
    try:
        fd = open_private_file(join(spool_dir, DROPS_FILE), os.O_RDWR, tighten=False)
    except FileNotFoundError:
        return {}, []
    try:
        _lock(fd)
        counts, claims = _read(fd)
        if any(counts) or claims:
            _write(fd, [0] * len(REASONS), [])
        return {r: n for r, n in zip(REASONS, counts, strict=True) if n}, claims
    except BlockingIOError:  # another process holds it: the next scan takes it
        return {}, []
    finally:
        os.close(fd)
