"""Anonymous sessions: a new one after 30 minutes idle and at least once a day.

Decisions use the daemon's monotonic clock, so a wall clock that jumps backwards or
forwards can neither freeze a session nor split one; the wall clock only labels
``started_at`` and the event times. A session survives a daemon restart if it is still
fresh.

The stamper also says where sessions begin and end, so the daemon can write the
``session_started`` / ``session_ended`` events (spec §2.1): :attr:`SessionStamper.ended`
and :attr:`SessionStamper.opened` collect the boundaries; the daemon takes them with
:meth:`SessionStamper.take`. With ``markers`` on (the user consented to session
metadata), a new session's sequence 1 is kept for its ``session_started`` event, so the
first application event is sequence 2. Ends are always noted (the row records when the
session ended); the daemon writes a ``session_ended`` event for them only with markers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Final, Literal, NamedTuple

from rkd.client.clock import now_ms
from rkd.daemon.storage import SessionRow

IDLE_SECS: Final = 30 * 60
MAX_AGE_SECS: Final = 24 * 60 * 60

StartReason = Literal["first", "idle", "daily", "restart"]
EndReason = Literal["idle", "daily"]


class Ended(NamedTuple):
    """A session that ended and still needs its ``session_ended`` event."""

    session: SessionRow
    reason: EndReason
    duration_ms: int


class Opened(NamedTuple):
    """A session that began and still needs its ``session_started`` event."""

    session: SessionRow
    reason: StartReason


class SessionStamper:
    """Hands out (session, sequence) for each accepted event, and notes the boundaries."""

    def __init__(
        self,
        last: SessionRow | None,
        clock: Callable[[], float] = time.monotonic,
        markers: bool = True,
    ) -> None:
        self._clock = clock
        self.markers = markers
        self.current: SessionRow | None = None
        self.ended: list[Ended] = []
        self.opened: list[Opened] = []
        self._started = self._seen = 0.0
        self._next_reason: StartReason = "first" if last is None else "restart"
        if last is None or last.ended_ms is not None:
            return
        wall = now_ms()
        idle, age = (wall - last.last_ms) / 1000, (wall - last.started_ms) / 1000
        if 0 <= idle < IDLE_SECS and 0 <= age < MAX_AGE_SECS:
            self.current = last  # still fresh: it goes on
            self._started = clock() - age
            self._seen = clock() - idle
        else:  # went stale while no daemon ran (or the wall clock moved under it)
            reason: EndReason = "daily" if age >= MAX_AGE_SECS else "idle"
            self._close(last, reason, max(0, last.last_ms - last.started_ms))

    def stamp(self, ts_ms: int) -> tuple[SessionRow, int]:
        """The session for an event (time ``ts_ms``) received now, and its sequence."""
        t = self._clock()
        self.end_if_due(t)
        s = self.current
        if s is None:
            started = min(now_ms(), ts_ms)  # the event that opens it may be older
            s = SessionRow(
                rowid=None, uuid=str(uuid.uuid4()), started_ms=started, last_ms=started,
                events=1 if self.markers else 0,
            )  # fmt: skip
            if self.markers:
                self.opened.append(Opened(s, self._next_reason))
            self.current = s
            self._started = t
        self._seen = t
        s.events += 1
        s.last_ms = now_ms()
        return s, s.events

    def end_if_due(self, t: float | None = None) -> None:
        """End the current session if it has been idle 30 minutes or is a day old."""
        s = self.current
        if s is None:
            return
        t = self._clock() if t is None else t
        if t - self._started >= MAX_AGE_SECS:
            self._close(s, "daily", int((self._seen - self._started) * 1000))
        elif t - self._seen > IDLE_SECS:
            self._close(s, "idle", int((self._seen - self._started) * 1000))

    def _close(self, s: SessionRow, reason: EndReason, duration_ms: int) -> None:
        s.ended_ms = s.last_ms
        self.ended.append(Ended(s, reason, max(0, duration_ms)))  # an event only with markers
        self._next_reason = reason
        self.current = None

    def take(self) -> tuple[list[Ended], list[Opened]]:
        """The boundaries noted since the last call (ends first, then beginnings)."""
        ended, opened = self.ended, self.opened
        self.ended, self.opened = [], []
        return ended, opened

    def rotate(self) -> None:
        """Start afresh with the next event (after `rkd delete`): no history is left."""
        self.current = None
        self.ended.clear()
        self.opened.clear()
        self._next_reason = "first"
