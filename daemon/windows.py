"""A bounded memory of what the daemon has seen (the sync tokens of client reports):
it keeps only the newest entries, so its memory is fixed however long the daemon runs.
"""

from __future__ import annotations

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
