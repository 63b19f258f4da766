"""What the daemon adds around the events it accepts: session boundaries, feature adoption,
the crash report, all stamped into the pending buffer in order.

The rules themselves live in :mod:`rkd.daemon.sessions` and :mod:`rkd.daemon.derived`;
:class:`Synthesis` is where their events are made and placed. The daemon hands it the
list to stamp into (its pending buffer) and tells it when the settings change; it holds
no reference to the daemon.
"""

from __future__ import annotations

import msgspec
import structlog
from rkd.client.config import Settings
from rkd.client.schema import CrashDetected, Envelope, SessionEnded, SessionStarted
from rkd.daemon.derived import FeatureCounter
from rkd.daemon.own import own_event
from rkd.daemon.sessions import SessionStamper
from rkd.daemon.storage import Record, SessionRow

log = structlog.get_logger("rkd.daemon")


class Synthesis:
    """Stamps accepted events into sessions and writes the events the daemon derives."""

    def __init__(
        self, settings: Settings, last_session: SessionRow | None, feature_uses: FeatureCounter
    ) -> None:
        self.enabled = settings.enabled
        self.categories = frozenset(settings.categories)
        self.stamper = SessionStamper(last_session, markers=self._markers(settings))
        self.features = feature_uses
        self.touched: list[SessionRow] = []  # sessions that ended without an event to say so

    @staticmethod
    def _markers(settings: Settings) -> bool:
        return settings.enabled and "session_metadata" in settings.categories

    def configure(self, settings: Settings) -> None:
        """New settings (a reload): which derived events the user consented to."""
        self.enabled = settings.enabled
        self.categories = frozenset(settings.categories)
        self.stamper.markers = self._markers(settings)

    def stamp(self, envelope: Envelope, ts_ms: int, out: list[Record]) -> None:
        """Append the event to ``out`` in its session, preceded by the session boundaries
        it crosses and followed by the feature adoption events it reaches."""
        session, sequence = self.stamper.stamp(ts_ms)
        if self.stamper.ended or self.stamper.opened:
            self._boundaries(out)
        out.append(Record(envelope, session, sequence, ts_ms))
        derived = self.features.use(envelope.source.product, envelope.payload, ts_ms)  # type: ignore[attr-defined]
        if derived and "command_usage" in self.categories:
            for payload in derived:
                session.events += 1
                own = own_event(payload, envelope.source, ts_ms)
                out.append(Record(own, session, session.events, ts_ms))

    def _boundaries(self, out: list[Record]) -> None:
        """session_ended / session_started for the boundaries the stamper noted."""
        ended, opened = self.stamper.take()
        for s, reason, duration_ms in ended:
            if not self.stamper.markers:
                self.touched.append(s)  # its end is still written, without an event
                continue
            payload = SessionEnded(duration_ms=duration_ms, event_count=s.events, reason=reason)
            s.events += 1
            assert s.ended_ms is not None
            out.append(Record(own_event(payload, ts_ms=s.ended_ms), s, s.events, s.ended_ms))
        for s, start_reason in opened:
            own = own_event(SessionStarted(reason=start_reason), ts_ms=s.started_ms)
            out.append(Record(own, s, 1, s.started_ms))

    def end_idle_session(self, out: list[Record]) -> bool:
        """The timer's look at the current session: end it after 30 minutes idle or a day.
        True when something changed (an event in ``out``, or a session to update)."""
        self.stamper.end_if_due()
        if not self.stamper.ended:
            return False
        self._boundaries(out)
        return True

    def crash_report(self, marker: str, last_flush_ms: int | None) -> Envelope | None:
        """crash_detected for the previous run, if error types are consented to."""
        log.warning("previous_run_ended_uncleanly")
        if not self.enabled or "error_types" not in self.categories:
            return None
        try:
            previous = msgspec.json.decode(marker)
            uptime = max(0, ((last_flush_ms or 0) - int(previous["started_ms"])) // 1000)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            uptime = None
        return own_event(CrashDetected(component="daemon", uptime_secs=uptime))

    def written(self) -> None:
        """The batch holding the touched sessions and changed feature counts is stored."""
        self.touched.clear()
        self.features.changed.clear()

    def forget(self) -> None:
        """After `rkd delete`: a new session, no feature uses."""
        self.stamper.rotate()
        self.features.clear()
        self.touched.clear()
