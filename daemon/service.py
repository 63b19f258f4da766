"""The daemon: one loop that owns the sockets, the pending buffer and every write.

Timers (flush, spool scan, retention) run on the same loop, so nothing needs a lock.
Signals only write a byte to a wake-up socket the loop polls; the loop handles them.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import os
import signal
import socket
import time
import uuid
from array import array
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Final

import apsw
import msgspec
import structlog
import zmq
from rkd.client.config import ConfigError, Settings, load_settings
from rkd.client.schema import (
    ENVELOPES,
    CrashDetected,
    Envelope,
    SessionEnded,
    SessionStarted,
    Source,
)
from rkd.client.spool import read_spool, spool_files
from rkd.client.wire import (
    ControlRequest,
    DaemonStatus,
    DeleteRequest,
    FlushRequest,
    PruneRequest,
    ReloadRequest,
    Reply,
    ShowRequest,
    StatusRequest,
    SyncRequest,
    is_report,
)
from rkd.daemon.derived import FeatureCounter
from rkd.daemon.firewall import Firewall, load_salt
from rkd.daemon.notify import sd_notify
from rkd.daemon.pipeline import Rejected, decode, decode_report, validate
from rkd.daemon.rollup import rollup_all, rollup_step
from rkd.daemon.runtime import remove_sockets, socket_paths
from rkd.daemon.sessions import SessionStamper
from rkd.daemon.storage import Record, SessionRow, Storage, iso_ms, now_ms, utc_now

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
HARD_MAX_MSG: Final = 1024 * 1024  # zmq drops the peer beyond this; 64 KiB..1 MiB is counted
STALE_TMP_SECS: Final = 3600.0
RETRY_MAX_SECS: Final = 5.0  # longest wait between write attempts while writes fail
SESSION_CHECK_SECS: Final = 60.0  # how often an idle session is looked at to end it
# Types only the daemon may write: a client cannot start or end the daemon's sessions.
DAEMON_OWNED: Final = frozenset(("session_started", "session_ended"))
# The collector's generation-0 threshold once the daemon runs (Python's default: 700).
# Ingestion allocates tracked objects (UUIDs, tuples) by the thousand and frees them by
# reference counting; collecting every 700 net allocations cost ~10% of the CPU per event.
GC_THRESHOLDS: Final = (10_000, 20, 20)


@functools.cache
def rkd_source() -> Source:
    """The source of what the daemon reports itself (product "rkd")."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        rkd_version = version("rkd")
    except PackageNotFoundError:
        rkd_version = "0.0.0"
    return Source(
        product="rkd", version=rkd_version, os={"darwin": "macos"}.get(sys.platform, sys.platform),
        arch=platform.machine() or "unknown", python_version=platform.python_version(),
    )  # fmt: skip


def own_event(payload: Any, source: Source | None = None, ts_ms: int | None = None) -> Envelope:
    """An event the daemon writes itself: from ``source`` (default: rkd), at ``ts_ms``."""
    when = utc_now() if ts_ms is None else dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    envelope_type: Any = ENVELOPES[type(payload)]  # generated classes: payload is theirs
    return envelope_type(  # type: ignore[no-any-return]
        event_id=uuid.uuid4(), timestamp=when, source=source or rkd_source(), payload=payload
    )


def settle_collector() -> None:
    """Move what start-up left alive (modules, schema, caches) out of the collector's
    sight, and collect young objects less often; cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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


class Timer:
    """A repeating job on the loop's monotonic clock."""

    def __init__(self, interval: float, job: Callable[[], object], first: float = 0.0) -> None:
        self.interval, self.job = interval, job
        self.due = time.monotonic() + first

    def run_if_due(self, now: float) -> None:
        if now >= self.due:
            self.due = now + self.interval
            self.job()


class Daemon:
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
            if payload.event_type in DAEMON_OWNED:
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
        self.counters["accepted"] += 1
        self._stamp(envelope, ts_ms, self.pending)
        self._recent.add(envelope.event_id.int & _LOW64)
        if envelope.payload.family == "error":  # type: ignore[attr-defined]
            self._flush_soon = True  # spec §4.2: errors are written at once

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

    def ingest_spool(self) -> int:
        """Store every complete spool file exactly once (events and ledger row together)."""
        if not self.settings.enabled:
            return 0
        total = 0
        self._remove_stale_tmp()
        for path in spool_files(self.settings.spool_dir):
            if self.storage.ledger_has(path.name):
                path.unlink(missing_ok=True)  # stored before a crash; only the unlink was lost
                continue
            try:
                frames, damaged = read_spool(path.read_bytes())
            except OSError:
                continue
            if damaged:
                self.counters["spool.damaged_files"] += 1
                self._log_once("spool_damaged", "spool_file_damaged")
            now = utc_now()
            items = self._fresh([i for f in frames if (i := self.ingest(f, now)) is not None])
            del frames  # a file holds up to ~24,000 frames: not kept while they are written
            if not self.flush():
                return total  # the file stays; retried on the next scan
            before = self.features.snapshot()
            records: list[Record] = []
            for envelope, ts_ms in items:
                self._stamp(envelope, ts_ms, records)
            if not self._write(records, (path.name, len(items))):
                self.features.restore(before)  # counted again when the file is retried
                return total
            self.counters["spool.events"] += len(items)
            self._dirty = True
            total += len(items)
            path.unlink(missing_ok=True)
        return total

    def _fresh(self, items: list[tuple[Envelope, int]]) -> list[tuple[Envelope, int]]:
        """Spooled copies of events already received over the socket are dropped here:
        a client spools what the daemon did not confirm in time, which it may have got."""
        fresh = []
        seen = self._recent.among({item[0].event_id.int & _LOW64 for item in items})
        for item in items:
            key = item[0].event_id.int & _LOW64
            if key in seen:
                self.counters["spool.duplicates"] += 1
            else:
                seen.add(key)
                self._recent.add(key)
                fresh.append(item)
        return fresh

    def _remove_stale_tmp(self) -> None:
        try:
            entries = list(os.scandir(self.settings.spool_dir))
        except FileNotFoundError:
            return
        limit = time.time() - STALE_TMP_SECS
        for e in entries:
            if e.name.endswith(".tmp") and e.stat().st_mtime < limit:
                os.unlink(e.path)

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
            more = removed > 0 or rollup_step(self.storage.db, now_ms() // 86_400_000)
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
            rollup_all(self.storage.db, now_ms() // 86_400_000)
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

    # -- control ------------------------------------------------------------------------

    def serve_control(self) -> None:
        try:
            parts = self.rep.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            if len(parts) != 1:
                raise msgspec.DecodeError("multipart")
            req = msgspec.msgpack.decode(parts[0], type=ControlRequest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counters["rejected.control_malformed"] += 1
            self._dirty = True
            reply = Reply(ok=False, error="malformed control request")
        else:
            reply = self.handle(req)
        self.rep.send(msgspec.msgpack.encode(reply))

    def handle(self, req: ControlRequest) -> Reply:
        match req:
            case SyncRequest(token=token):
                self.drain(flush=False)  # frames queued before the question count too
                return Reply(ok=True, synced=token in self._synced)
            case StatusRequest():
                return Reply(ok=True, status=self.status())
            case FlushRequest():
                self.drain(flush=False)
                self.ingest_spool()
                n = len(self.pending)
                if not self.flush(force=True):
                    return Reply(ok=False, error="the database cannot be written; events are kept")
                return Reply(ok=True, flushed=n)
            case DeleteRequest():
                return self._delete()
            case PruneRequest():
                removed = self.maintain()
                if removed is None:
                    return Reply(ok=False, error="the database cannot be pruned now; see the log")
                return Reply(ok=True, deleted=removed)
            case ReloadRequest():
                error = self.reload()
                return Reply(ok=error is None, error=error)
            case ShowRequest(limit=limit):
                return Reply(ok=True, pending=len(self.pending), events=self._show(limit))
        return Reply(ok=False, error="unknown request")  # pragma: no cover

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

    def _show(self, limit: int) -> list[dict[str, Any]]:
        """Pending events as the spec's envelopes, already filtered, oldest first."""
        out = []
        for r in self.pending[: max(0, min(limit, 10_000))]:
            data = msgspec.to_builtins(r.envelope)
            data["session"] = {"id": r.session.uuid, "sequence": r.sequence,
                               "started_at": iso_ms(r.session.started_ms)}  # fmt: skip
            out.append(data)
        return out

    def _delete(self) -> Reply:
        self.drain(flush=False)
        held = len(self.pending)
        self.pending.clear()
        try:
            n = self.storage.delete_all() + held
            self._mark_running()  # delete_all erased the marker with everything else
        except apsw.Error as e:
            return Reply(ok=False, error=f"delete failed: {str(e)[:200]}")
        for f in spool_files(self.settings.spool_dir):
            f.unlink(missing_ok=True)
        self.counters.clear()
        self.firewall.salt = load_salt(self.settings.data_dir, rotate=True)
        self.stamper.rotate()
        self.features.clear()
        self._touched.clear()
        self.events_stored = 0
        self.last_flush_ms = None
        log.info("deleted", events=n)
        return Reply(ok=True, deleted=n)

    def status(self) -> DaemonStatus:
        s = self.stamper.current
        return DaemonStatus(
            pid=os.getpid(),
            started_at=iso_ms(self.started_ms),
            uptime_secs=round(time.monotonic() - self.started_mono, 3),
            enabled=self.settings.enabled,
            db_path=str(self.storage.path),
            events_stored=self.events_stored,
            pending=len(self.pending),
            last_flush=iso_ms(self.last_flush_ms) if self.last_flush_ms else None,
            session_id=s.uuid if s is not None else None,
            counters=dict(self.counters),
            recovered=self.recovered,
        )
