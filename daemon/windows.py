"""Bounded memories of what the daemon has seen: sync tokens and recent event ids.

Both keep only the newest entries, so their memory is fixed however long the daemon
runs; both are asked far less often than they are fed.
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import Final


class BoundedSet:
    """A set that forgets its oldest members beyond ``limit``; O(1) per operation.

    (A dict popped from the front through ``next(iter(d))`` looks the same but costs
    ~40 µs per call once deleted slots pile up: measured, and it was per event.)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._members: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, key: int) -> None:
        if key in self._members:
            return
        self._members.add(key)
        self._order.append(key)
        if len(self._order) > self.limit:
            self._members.discard(self._order.popleft())

    def __contains__(self, key: object) -> bool:
        return key in self._members


class RecentIds:
    """The newest ``limit`` (or a few thousand more) event ids, as 64-bit keys.

    The live path only appends, into arrays of 8 bytes per id (200,000 ids: 1.6 MB,
    where a set of Python ints took ~17 MB). Membership is asked only for a spooled
    batch, and answered for the whole batch in one pass over the arrays.
    """

    BLOCK: Final = 8192

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._blocks: deque[array[int]] = deque([array("Q")])
        self._full = 0  # ids in the blocks before the last

    def add(self, key: int) -> None:
        block = self._blocks[-1]
        block.append(key)
        if len(block) >= self.BLOCK:
            self._blocks.append(array("Q"))
            self._full += len(block)
            while self._full - len(self._blocks[0]) >= self.limit:
                self._full -= len(self._blocks.popleft())

    def among(self, keys: set[int]) -> set[int]:
        """Those of ``keys`` that are recent ids."""
        found: set[int] = set()
        for block in self._blocks:
            found |= keys.intersection(block)
        return found

    def __len__(self) -> int:
        return self._full + len(self._blocks[-1])
