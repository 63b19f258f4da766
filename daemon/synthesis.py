"""What the daemon adds around the events it accepts: session boundaries, feature adoption,
the crash report, all stamped into the pending buffer in order.

A mixin of :class:`~rkd.daemon.service.Daemon` (state declared in
:class:`~rkd.daemon.state.DaemonState`). The rules themselves live in
:mod:`rkd.daemon.sessions` and :mod:`rkd.daemon.derived`; this is where their events are
made and placed.
"""

from __future__ import annotations

import os

import msgspec
import structlog
from rkd.client.clock import now_ms
from rkd.client.schema import CrashDetected, Envelope, SessionEnded, SessionStarted
from rkd.daemon.own import own_event
from rkd.daemon.state import DaemonState
from rkd.daemon.storage import Record

log = structlog.get_logger("rkd.daemon")


class SynthesisMixin(DaemonState):
    """Stamps accepted events and writes the events the daemon derives."""

    def _stamp(self, envelope: Envelope, ts_ms: int, out: list[Record]) -> None:
        """Append the event to ``out`` in its session, preceded by the session boundaries
        it crosses and followed by the feature adoption events it reaches."""
        session, sequence = self.stamper.stamp(ts_ms)
        if self.stamper.ended or self.stamper.opened:
            self._boundaries(out)
        out.append(Record(envelope, session, sequence, ts_ms))
        derived = self.features.use(envelope.source.product, envelope.payload, ts_ms)  # type: ignore[attr-defined]
        if derived and "command_usage" in self.settings.categories:
            for payload in derived:
                session.events += 1
                own = own_event(payload, envelope.source, ts_ms)
                out.append(Record(own, session, session.events, ts_ms))

    def _boundaries(self, out: list[Record]) -> None:
        """session_ended / session_started for the boundaries the stamper noted."""
        ended, opened = self.stamper.take()
        for s, reason, duration_ms in ended:
            if not self.stamper.markers:
                self._touched.append(s)  # its end is still written, without an event
                continue
            payload = SessionEnded(duration_ms=duration_ms, event_count=s.events, reason=reason)
            s.events += 1
            assert s.ended_ms is not None
            out.append(Record(own_event(payload, ts_ms=s.ended_ms), s, s.events, s.ended_ms))
        for s, start_reason in opened:
            own = own_event(SessionStarted(reason=start_reason), ts_ms=s.started_ms)
            out.append(Record(own, s, 1, s.started_ms))

    def _markers_on(self) -> bool:
        return self.settings.enabled and "session_metadata" in self.settings.categories

    def end_idle_session(self) -> None:
        """The timer's look at the current session: end it after 30 minutes idle or a day."""
        self.stamper.end_if_due()
        if self.stamper.ended:
            self._boundaries(self.pending)
            self._dirty = True

    def _mark_running(self) -> None:
        marker = {"pid": os.getpid(), "started_ms": self.started_ms}
        self.storage.set_meta("daemon_running", msgspec.json.encode(marker).decode())

    def _report_crash(self, marker: str) -> None:
        """crash_detected for the previous run, if error types are consented to."""
        log.warning("previous_run_ended_uncleanly")
        if not self.settings.enabled or "error_types" not in self.settings.categories:
            return
        try:
            previous = msgspec.json.decode(marker)
            uptime = max(0, ((self.last_flush_ms or 0) - int(previous["started_ms"])) // 1000)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            uptime = None
        self._accept(own_event(CrashDetected(component="daemon", uptime_secs=uptime)), now_ms())
        self.flush(force=True)
