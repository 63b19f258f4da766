"""Every event id the daemon holds: stored in the database or waiting to be written.

The dedup stage asks it about every event, so it is an open-addressing hash table of
64-bit keys in an ``array`` (8 bytes a slot, kept at most half full: 16-32 bytes an id,
where a Python set of ints takes ~60) with one probe on average, ~0.7 µs an add.

Exact: it is loaded from the database at start and told of every event accepted since,
so an id is found for as long as its event is stored (the retention window), however
many arrived in between. The key is the id's low 64 bits; in a uuid4 62 of them are
random, so two different events share a key with a probability of ~n / 2^62 (about
10^-13 with a million ids stored).

Ids of events pruned since stay in the table, which is harmless (a copy of a pruned
event is still a copy); once they make up most of it, it is rebuilt from the database a
step at a time between socket turns, so pruned ids leave. Neither growing nor a rebuild
pauses the loop for long: the old table is asked until the new one is complete.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable
from typing import Final

LOW64: Final = (1 << 64) - 1
_EMPTY: Final = 0
_ZERO_KEY: Final = 1 << 63  # the key 0 marks an empty slot; an id whose key is 0 uses this
MIN_BITS: Final = 16  # 65,536 slots (512 KiB) at least


def key_of(event_id_bytes: bytes) -> int:
    """The table key of a 16-byte event id: its two halves xor-ed (:func:`key_of_int`)."""
    return int.from_bytes(event_id_bytes[:8], "big") ^ int.from_bytes(event_id_bytes[8:16], "big")


def key_of_int(event_id: int) -> int:
    """The table key of an event id as ``uuid.int``: both halves folded into 64 bits, so
    ids that share a half (every uuid1 of one host shares its low 64 bits) differ."""
    return (event_id ^ (event_id >> 64)) & LOW64


_MIX: Final = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads any key set over the slots


class _Table:
    """Linear probing from a slot chosen by a salted multiplicative hash of the key: an
    application choosing its ids cannot pile them into one run (the salt is random per
    daemon run), and ids that are not random still spread."""

    __slots__ = ("mask", "n", "salt", "shift", "slots")

    def __init__(self, expected: int, salt: int | None = None) -> None:
        bits = max(MIN_BITS, (max(1, expected) * 4 - 1).bit_length())  # load <= 1/4 at start
        self.slots = array("Q", bytes(8 << bits))
        self.mask = (1 << bits) - 1
        self.shift = 64 - bits
        self.salt = int.from_bytes(os.urandom(8), "big") if salt is None else salt
        self.n = 0

    def add(self, key: int) -> bool:
        """Put ``key`` in; False when it was there already."""
        slots, mask = self.slots, self.mask
        i = (((key ^ self.salt) * _MIX) & LOW64) >> self.shift
        while True:
            v = slots[i]
            if v == key:
                return False
            if v == _EMPTY:
                slots[i] = key
                self.n += 1
                return True
            i = (i + 1) & mask

    def __contains__(self, key: int) -> bool:
        slots, mask = self.slots, self.mask
        i = (((key ^ self.salt) * _MIX) & LOW64) >> self.shift
        while True:
            v = slots[i]
            if v == key:
                return True
            if v == _EMPTY:
                return False
            i = (i + 1) & mask

    def full(self) -> bool:
        return self.n * 2 > len(self.slots)

    def grown(self) -> _Table:
        """A table twice the size with the same keys (all at once: for rare cases only)."""
        new = _Table(self.n * 2, self.salt)
        for v in self.slots:
            if v != _EMPTY:
                new.add(v)
        return new


class SeenIds:
    """The set of event ids the daemon holds, as 64-bit keys (see the module's notes).

    Growing never pauses the loop: at half full a table twice the size takes over and
    the old one's slots move into it a few at a time with each add (:data:`MOVE_PER_ADD`),
    the old one being asked meanwhile. A rebuild from the database (to let pruned ids go)
    works the same way, with the database as the source, a step per timer turn.
    """

    MOVE_PER_ADD: Final = 8

    def __init__(self, keys: Iterable[int] = (), expected: int = 0) -> None:
        self._table = _Table(expected)
        self._old: _Table | None = None  # the table being replaced, asked until then
        self._cursor: int | None = None  # next old slot to move (None: the database moves)
        for key in keys:
            self.add(key)

    def add(self, key: int) -> bool:
        """Remember ``key``; False when it was held already (a duplicate)."""
        key = key or _ZERO_KEY
        old = self._old
        if old is not None:
            if self._cursor is not None:
                self._move_some(old, self._cursor)
            if key in old:
                self._table.add(key)
                return False
        t = self._table
        if t.full():
            if self._old is None:  # grow: the old slots move over with the next adds
                self._old, self._cursor, self._table = t, 0, _Table(t.n)
            else:  # half full while still replacing another: grow at once (rare)
                self._table = t.grown()
        return self._table.add(key)

    def _move_some(self, old: _Table, start: int) -> None:
        slots = old.slots
        end = min(start + self.MOVE_PER_ADD, len(slots))
        add = self._table.add
        for i in range(start, end):
            v = slots[i]
            if v != _EMPTY:
                add(v)
        if end == len(slots):
            self._old = self._cursor = None
        else:
            self._cursor = end

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        key = key or _ZERO_KEY
        return key in self._table or (self._old is not None and key in self._old)

    def __len__(self) -> int:
        return self._table.n

    def needs_rebuild(self, stored: int) -> bool:
        """Ids of pruned events make up most of the table: time to :meth:`begin_rebuild`."""
        return self._old is None and self._table.n > 2 * stored + 65_536

    @property
    def rebuilding(self) -> bool:
        return self._old is not None and self._cursor is None

    def begin_rebuild(self, expected: int, held: Iterable[int] = ()) -> None:
        """Start a new table for ``expected`` ids, with ``held`` (ids not yet stored) in it;
        the database's ids follow through :meth:`rebuild_step`, then :meth:`end_rebuild`."""
        self._old, self._cursor = self._table, None
        self._table = _Table(expected)
        for key in held:
            self._table.add(key or _ZERO_KEY)

    def rebuild_step(self, keys: Iterable[int]) -> None:
        for key in keys:
            key = key or _ZERO_KEY
            if self._table.full():
                self._table = self._table.grown()
            self._table.add(key)

    def end_rebuild(self) -> None:
        self._old = None

    def clear(self) -> None:
        """Forget everything (after `rkd delete`)."""
        self._table = _Table(0)
        self._old = self._cursor = None
