"""Anonymous sessions: a new one after 30 minutes idle and at least once a day.

Decisions use the daemon's monotonic clock, so a wall clock that jumps backwards or
forwards can neither freeze a session nor split one; the wall clock only labels
``started_at``. A session survives a daemon restart if it is still fresh.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Final

from rkd.daemon.storage import SessionRow, now_ms

IDLE_SECS: Final = 30 * 60
MAX_AGE_SECS: Final = 24 * 60 * 60


class SessionStamper:
    """Hands out (session, sequence) for each accepted event."""

    def __init__(
        self,
        last: SessionRow | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.current: SessionRow | None = None
        self._started = self._seen = 0.0
        if last is not None:
            idle = (now_ms() - last.last_ms) / 1000
            age = (now_ms() - last.started_ms) / 1000
            if 0 <= idle < IDLE_SECS and 0 <= age < MAX_AGE_SECS:
                self.current = last
                self._started = clock() - age
                self._seen = clock() - idle

    def stamp(self, ts_ms: int) -> tuple[SessionRow, int]:
        """The session for an event (time ``ts_ms``) received now, and its sequence."""
        t = self._clock()
        s = self.current
        if s is None or t - self._seen > IDLE_SECS or t - self._started >= MAX_AGE_SECS:
            started = min(now_ms(), ts_ms)  # the event that opens it may be older
            s = SessionRow(
                rowid=None, uuid=str(uuid.uuid4()), started_ms=started, last_ms=started, events=0
            )
            self.current = s
            self._started = t
        self._seen = t
        s.events += 1
        s.last_ms = now_ms()
        return s, s.events

    def rotate(self) -> None:
        """Start a new session with the next event (after `rkd delete`)."""
        self.current = None
