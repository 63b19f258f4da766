"""A bounded memory of what the daemon has seen (the sync tokens of client reports):
it keeps only the newest entries, so its memory is fixed however long the daemon runs.
"""

from __future__ import annotations

from array import array
from collections import deque


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

    def clear(self) -> None:
        self._members.clear()
        self._order.clear()

    def dump(self) -> bytes:
        """The members that are 64-bit keys, oldest first, 8 bytes each (for the next run)."""
        return array("Q", (k for k in self._order if 0 <= k < 1 << 64)).tobytes()

    def load(self, data: object) -> None:
        """Add the members :meth:`dump` made (the newest ``limit``); anything else (none,
        damaged, hostile) is ignored."""
        if not isinstance(data, bytes) or len(data) % 8:
            return
        keys = array("Q")
        keys.frombytes(data[-8 * self.limit :] if self.limit else b"")
        for key in keys:
            self.add(key)
