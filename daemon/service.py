"""The daemon: one loop that owns the sockets, the pending buffer and every write.

Timers (flush, spool scan, retention) run on the same loop, so nothing needs a lock.
Signals only write a byte to a wake-up socket the loop polls; the loop handles them.
The daemon's other duties are mixins in modules of their own: control requests
(:mod:`rkd.daemon.control`), derived events (:mod:`rkd.daemon.synthesis`) and spool
ingestion (:mod:`rkd.daemon.spooling`); the state they share is declared in
:mod:`rkd.daemon.state`.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import apsw
import msgspec
import structlog
import zmq
from rkd.client.clock import DAY_MS, now_ms, utc_now
from rkd.client.config import ConfigError, Settings, load_settings
from rkd.client.schema import (
    Envelope,
)
from rkd.client.wire import (
    is_report,
)
from rkd.daemon.control import ControlMixin
from rkd.daemon.derived import SESSION_TYPES, FeatureCounter
from rkd.daemon.firewall import Firewall, load_salt
from rkd.daemon.notify import sd_notify
from rkd.daemon.pipeline import Rejected, decode, decode_report, validate
from rkd.daemon.rollup import rollup_all, rollup_step
from rkd.daemon.runtime import remove_sockets, socket_paths
from rkd.daemon.sessions import SessionStamper
from rkd.daemon.spooling import SpoolMixin
from rkd.daemon.storage import Record, SessionRow, Storage
from rkd.daemon.synthesis import SynthesisMixin
from rkd.daemon.windows import BoundedSet, RecentIds

log = structlog.get_logger("rkd.daemon")

DRAIN_LIMIT: Final = 1000  # frames per loop turn: bounds a turn, the pending batch and its memory
MAX_PENDING: Final = 100_000  # events held while the database cannot be written
SPOOL_SCAN_SECS: Final = 5.0
MAINTENANCE_SECS: Final = 3600.0
SHUTDOWN_DRAIN_SECS: Final = 5.0
# Frames queued per client connection: bounds memory and what is in flight. A queued
# frame costs the daemon ~1.1 KB of RSS; with 4 clients outpacing it, 10,000 each took
# the daemon to ~100 MB, 1,000 each to ~55 MB. Beyond it clients spool (zero loss: the
# spool is ingested exactly once), which costs the daemon no more per event.
RCVHWM: Final = 1000
# Event ids remembered to drop spooled duplicates: copies arrive within seconds of a
# client's exit, so this covers ~8 s of full-speed ingestion. Kept as the low 64 bits
# of each id, 8 bytes each (RecentIds), not UUID objects.
RECENT_IDS_KEPT: Final = 200_000
_LOW64: Final = (1 << 64) - 1
SYNC_TOKENS_KEPT: Final = 10_000
# Ids of the newest events stored from the spool: an original still queued on the socket
# when its spooled copy was stored is dropped on arrival. Copies are spooled for frames
# in flight at a client's exit (at most its queue, ~1,000 per connection), so the
# newest 50,000 cover many clients exiting at once (~5 MB at most).
SPOOLED_IDS_KEPT: Final = 50_000
HARD_MAX_MSG: Final = 1024 * 1024  # zmq drops the peer beyond this; 64 KiB..1 MiB is counted
RETRY_MAX_SECS: Final = 5.0  # longest wait between write attempts while writes fail
SESSION_CHECK_SECS: Final = 60.0  # how often an idle session is looked at to end it
# The collector's generation-0 threshold once the daemon runs (Python's default: 700).
# Ingestion allocates tracked objects (UUIDs, tuples) by the thousand and frees them by
# reference counting; collecting every 700 net allocations cost ~10% of the CPU per event.
GC_THRESHOLDS: Final = (10_000, 20, 20)


def settle_collector() -> None:
    """Move what start-up left alive (modules, schema, caches) out of the collector's
    sight, and collect young objects less often; cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Timer:
    """A repeating job on the loop's monotonic clock."""

    def __init__(self, interval: float, job: Callable[[], object], first: float = 0.0) -> None:
        self.interval, self.job = interval, job
        self.due = time.monotonic() + first

    def run_if_due(self, now: float) -> None:
        if now >= self.due:
            self.due = now + self.interval
            self.job()


class Daemon(ControlMixin, SynthesisMixin, SpoolMixin):
    """The per-user daemon. Build it, call :meth:`run`; it returns after a clean stop."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.counters: Counter[str] = Counter(storage.counters())
        self.events_stored = storage.count_events()
        last_flush = storage.meta("last_flush_ms")
        self.last_flush_ms: int | None = last_flush if isinstance(last_flush, int) else None
        self.pending: list[Record] = []
        self._synced = BoundedSet(SYNC_TOKENS_KEPT)  # tokens of client reports processed
        self._recent = RecentIds(RECENT_IDS_KEPT)
        self._spooled = BoundedSet(SPOOLED_IDS_KEPT)
        for key in storage.recent_id_keys(RECENT_IDS_KEPT):
            self._recent.add(key)
        self.firewall = Firewall(settings.privacy, load_salt(settings.data_dir), self.counters)
        self.stamper = SessionStamper(storage.last_session(), markers=self._markers_on())
        self.features = FeatureCounter(storage.feature_uses())
        self._touched: list[SessionRow] = []  # sessions that ended without an event to say so
        self.started_ms = now_ms()
        self.recovered = storage.meta("recovered")
        # A run that did not end cleanly leaves its marker: the next start reports a crash.
        self._previous_run = storage.meta("daemon_running")
        self._mark_running()
        self.started_mono = time.monotonic()
        self._dirty = False
        self._flush_soon = False
        self._write_failures = 0
        self._retry_at = 0.0
        self._logged: set[str] = set()
        self._signals: list[int] = []
        self._stop = False
        self.timers = [
            Timer(settings.flush_interval_secs, self.flush, settings.flush_interval_secs),
            Timer(SPOOL_SCAN_SECS, self.ingest_spool),
            Timer(MAINTENANCE_SECS, self.maintain_step, 1.0),
            Timer(SESSION_CHECK_SECS, self.end_idle_session, SESSION_CHECK_SECS),
        ]

    # -- sockets and the loop ----------------------------------------------------------

    def _open_sockets(self) -> None:
        events_path, control_path = socket_paths(self.settings.runtime_dir)
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.RCVHWM, RCVHWM)
        self.pull.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MSG)
        self.pull.bind(f"ipc://{events_path}")
        self.rep = self.ctx.socket(zmq.REP)
        self.rep.setsockopt(zmq.LINGER, 0)
        self.rep.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        self.rep.bind(f"ipc://{control_path}")
        for p in (events_path, control_path):
            os.chmod(p, 0o600)

    def _install_signals(self) -> socket.socket:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: self._signals.append(signum))
        return wake_r

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully: nothing buffered is lost."""
        self._open_sockets()
        wake = self._install_signals()
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.rep, zmq.POLLIN)
        poller.register(wake.fileno(), zmq.POLLIN)
        log.info("daemon_started", pid=os.getpid(), db=str(self.storage.path),
                 events_stored=self.events_stored, enabled=self.settings.enabled)  # fmt: skip
        self.ingest_spool()
        self.end_idle_session()  # a session that went stale while no daemon ran
        if self._previous_run is not None:
            self._report_crash(self._previous_run)
        settle_collector()
        sd_notify(f"READY=1\nSTATUS=storing to {self.storage.path}\nMAINPID={os.getpid()}")
        try:
            while not self._stop:
                ready = dict(poller.poll(self._next_timeout_ms()))
                if self.pull in ready:
                    self.drain()
                if self.rep in ready:
                    self.serve_control()
                if wake.fileno() in ready:
                    self._on_signals(wake)
                now = time.monotonic()
                for timer in self.timers:
                    timer.run_if_due(now)
                if self._write_failures and now >= self._retry_at:
                    self.flush()  # the retry the backoff scheduled
        finally:
            self._shutdown(wake)

    def _next_timeout_ms(self) -> int:
        due = min(t.due for t in self.timers)
        if self._write_failures:
            due = min(due, self._retry_at)
        return max(0, int((due - time.monotonic()) * 1000) + 1)

    def _on_signals(self, wake: socket.socket) -> None:
        try:
            while wake.recv(512):
                pass
        except BlockingIOError:
            pass
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum == signal.SIGHUP:
                sd_notify("RELOADING=1")
                self.reload()
                sd_notify("READY=1")
            else:
                log.info("stopping", signal=signal.Signals(signum).name)
                self._stop = True

    def _shutdown(self, wake: socket.socket) -> None:
        sd_notify("STOPPING=1\nSTATUS=writing pending events")
        remove_sockets(self.settings.runtime_dir)  # new clients spool from here on
        deadline = time.monotonic() + SHUTDOWN_DRAIN_SECS
        while time.monotonic() < deadline and self.drain(flush=False):
            pass
        if self.flush(force=True):
            self.storage.set_meta("daemon_running", None)  # a clean exit: no crash to report
        self.pull.close(linger=0)
        self.rep.close(linger=0)
        self.ctx.term()
        signal.set_wakeup_fd(-1)
        wake.close()
        self._wake_w.close()
        log.info("daemon_stopped", events_stored=self.events_stored, pending=len(self.pending))

    # -- ingestion -----------------------------------------------------------------------

    def drain(self, flush: bool = True) -> int:
        """Take every queued frame (up to DRAIN_LIMIT) through the pipeline; return count."""
        now = utc_now()
        n = 0
        recv = self.pull.recv
        for n in range(1, DRAIN_LIMIT + 1):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                n -= 1
                break
            item = self.ingest(frame, now)
            if item is not None:
                self._accept(*item)
        if flush and (self._flush_soon or len(self.pending) >= self.settings.batch_size):
            self.flush()
        return n

    def ingest(self, frame: bytes, now: dt.datetime) -> tuple[Envelope, int] | None:
        """One frame through decode, gates, validate and the firewall: the filtered envelope
        and its time in ms, or None (a client report, or a rejection, counted here)."""
        try:
            if is_report(frame):
                drops, token = decode_report(frame)
                for reason, n in drops.items():
                    self.counters[f"client_drop.{reason}"] += n
                    self._dirty = True
                if token:
                    self._synced.add(token)
                return None
            if not self.settings.enabled:
                raise Rejected("disabled")
            envelope = decode(frame)
            payload: Any = envelope.payload  # type: ignore[attr-defined]
            if payload.category not in self.settings.categories:
                raise Rejected("category_off")  # the user has not consented to it
            if payload.event_type in SESSION_TYPES:  # only the daemon starts and ends them
                raise Rejected("daemon_owned")
            ts_ms = validate(envelope, now)
            envelope = self.firewall(envelope)
        except Rejected as r:
            self.counters[f"rejected.{r.reason}"] += 1
            self._dirty = True
            self._log_once(f"rejected.{r.reason}", "frame_rejected", reason=r.reason)
            return None
        return envelope, ts_ms

    def _accept(self, envelope: Envelope, ts_ms: int) -> None:
        """Into the pending buffer, stamped, with what the daemon derives from it."""
        if len(self.pending) >= MAX_PENDING:
            self.counters["dropped.buffer_full"] += 1
            self._log_once("buffer_full", "buffer_full", limit=MAX_PENDING)
            return
        key = envelope.event_id.int & _LOW64
        if key in self._spooled:  # its spooled copy came first
            self.counters["socket.duplicates"] += 1
            self._dirty = True
            return
        self.counters["accepted"] += 1
        self._stamp(envelope, ts_ms, self.pending)
        self._recent.add(key)
        if envelope.payload.family == "error":  # type: ignore[attr-defined]
            self._flush_soon = True  # spec §4.2: errors are written at once

    def _log_once(self, key: str, event: str, **fields: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(event, **fields, note="further occurrences are only counted")

    # -- writing ------------------------------------------------------------------------

    def flush(self, force: bool = False) -> bool:
        """Write the pending buffer and counters; on failure keep them and back off."""
        self._flush_soon = False
        if not self.pending and not self._dirty:
            return True
        if not force and self._write_failures and time.monotonic() < self._retry_at:
            return False
        return self._write(self.pending, None)

    def _write(self, records: list[Record], ledger: tuple[str, int] | None) -> bool:
        t = now_ms()
        try:
            n = self.storage.write(
                records, self.counters, t, ledger, self._touched, self.features.changed
            )
        except apsw.Error as e:
            self._write_failures += 1
            # Retry soon, then every few seconds: a full disk or a held lock costs one
            # cheap attempt per interval, and recovery is noticed within RETRY_MAX_SECS.
            self._retry_at = time.monotonic() + min(RETRY_MAX_SECS, 0.25 * 2**self._write_failures)
            self.counters["write_errors"] += 1
            if self._write_failures == 1:
                log.error("write_failed", error=str(e)[:200], pending=len(self.pending))
            return False
        if self._write_failures:
            log.info("write_recovered", after_failures=self._write_failures)
            self._write_failures = 0
        if records is self.pending:
            records.clear()
        self._touched.clear()
        self.features.changed.clear()
        if self.features.untracked:
            self.counters["features.untracked"] += self.features.untracked
            self.features.untracked = 0
            self._dirty = True
        self.events_stored += n
        self.last_flush_ms = t
        self._dirty = False
        return True

    def maintain_step(self) -> None:
        """The hourly job, one bounded step at a time: while there is more to prune, the
        next step runs on the next loop turn, after the sockets were served."""
        if not self.flush():
            return
        try:
            removed = self.storage.prune_step(
                self.settings.retention_days, self.settings.max_db_size_mb
            )
            # Then, one month per step, aggregates over a year old become monthly.
            more = removed > 0 or rollup_step(self.storage.db, now_ms() // DAY_MS)
        except apsw.Error as e:
            self._log_once("prune_failed", "prune_failed", error=str(e)[:200])
            return
        if removed:
            self._pruned(removed)
        if more:
            self.timers[2].due = time.monotonic()  # more may be left: come back soon

    def _pruned(self, removed: int) -> None:
        self.events_stored = max(0, self.events_stored - removed)  # no COUNT(*) per step
        self.counters["pruned"] += removed
        self._dirty = True
        log.info("pruned", events=removed)

    def maintain(self) -> int | None:
        """Retention and size cap (the hourly job, and `rkd prune`): events removed, or
        None when the database could not be pruned now."""
        if not self.flush(force=True):
            return None
        try:
            removed = self.storage.prune(self.settings.retention_days, self.settings.max_db_size_mb)
            rollup_all(self.storage.db, now_ms() // DAY_MS)
        except apsw.Error as e:
            self._log_once("prune_failed", "prune_failed", error=str(e)[:200])
            return None
        if removed:
            self._pruned(removed)
        return removed

    def reload(self) -> str | None:
        """SIGHUP or `rkd enable/disable`: re-read config and consent; None or the error.

        A bad new configuration keeps the old one. When telemetry was turned off, what
        is already held is written first (existing data is retained), and nothing new
        is accepted after that.
        """
        try:
            new = load_settings()
        except ConfigError as e:
            log.error("reload_failed", error=str(e))
            return str(e)
        if self.settings.enabled and not new.enabled:
            self.drain(flush=False)
            self.flush(force=True)
        self.settings = msgspec.structs.replace(
            new, db_path=self.settings.db_path, runtime_dir=self.settings.runtime_dir
        )
        self.timers[0].interval = new.flush_interval_secs
        self.stamper.markers = self._markers_on()
        self.firewall = Firewall(new.privacy, self.firewall.salt, self.counters)
        log.info("reloaded", enabled=new.enabled, categories=sorted(new.categories))
        return None
