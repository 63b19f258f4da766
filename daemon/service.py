"""The daemon: one loop that owns the sockets, the pending buffer and every write.

The loop polls the event socket, the control socket and a signal wake-up socket, and
runs named timers (flush, spool, maintenance, sessions, dedup rebuild) between them, so
nothing needs a lock. Its parts are collaborators it composes, each in a module of its
own: the intake (:mod:`rkd.daemon.accept`: the one path of every event), the writer
(:mod:`rkd.daemon.writer`), derived events (:mod:`rkd.daemon.synthesis`), the spool
(:mod:`rkd.daemon.spooling`) and control requests (:mod:`rkd.daemon.control`).

Every handler and timer runs under one last-resort guard: an unexpected exception is
logged once with its traceback, counted as ``internal_error.<where>``, and the loop goes
on. The daemon exits only on purpose (a signal).
"""

from __future__ import annotations

import contextlib
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
from rkd.client.clock import DAY_MS, iso_ms, now_ms, utc_now
from rkd.client.config import ConfigError, Settings, load_settings, load_settings_leniently
from rkd.client.dropfile import take_drops
from rkd.client.files import UnsafePath
from rkd.client.wire import DaemonStatus, EffectiveSettings
from rkd.daemon.accept import Intake, build_stages
from rkd.daemon.clients import ClientLedger
from rkd.daemon.control import Control, ControlError
from rkd.daemon.derived import FeatureCounter
from rkd.daemon.firewall import Firewall, load_salt
from rkd.daemon.notify import sd_notify
from rkd.daemon.refilter import refilter
from rkd.daemon.rollup import rollup_all, rollup_step
from rkd.daemon.runtime import remove_sockets, socket_paths
from rkd.daemon.seen import SeenIds, key_of, key_of_int
from rkd.daemon.spooling import SpoolIngest, spooled_event_ids
from rkd.daemon.storage import Storage, remove_corrupt_copies
from rkd.daemon.sync import CHECK_SECS as SYNC_CHECK_SECS
from rkd.daemon.sync import Sync
from rkd.daemon.synthesis import Synthesis
from rkd.daemon.vocabularies import Vocabularies, vocabulary_dir
from rkd.daemon.windows import BoundedSet
from rkd.daemon.writer import Writer

log = structlog.get_logger("rkd.daemon")

DRAIN_LIMIT: Final = 1000  # frames per loop turn: bounds a turn, the pending batch and its memory
# A turn's time budget, for frames and for spool files alike: the control socket (and
# with it a client's 200 ms exit confirmation) is served at least this often.
TURN_SECS: Final = 0.05
CONFIRM_TURN_SECS: Final = 0.01  # the socket read for a leaving client before it is answered
SPOOL_SCAN_SECS: Final = 5.0
MAINTENANCE_SECS: Final = 3600.0
# Between the hourly prunes, the database and its WAL are measured (two stat calls) this
# often; near the cap a prune runs at once, down to PRUNE_TO of it, so that the file's
# freed pages take new events for a while before it would grow past the cap again.
SIZE_CHECK_SECS: Final = 2.0
NEAR_CAP: Final = 0.95
PRUNE_TO: Final = 0.85
SESSION_CHECK_SECS: Final = 60.0  # how often an idle session is looked at to end it
SEEN_CHECK_SECS: Final = 60.0  # how often the dedup table is looked at for a rebuild
SEEN_REBUILD_BATCH: Final = 20_000  # stored ids read per rebuild step
SHUTDOWN_DRAIN_SECS: Final = 5.0
FLUSH_REQUEST_SPOOL_SECS: Final = 0.5  # spool read for `rkd flush` before answering
# Frames queued per client connection: bounds memory and what is in flight. A frame is
# a batch of up to 64 events (at most ~100 KB, ~20 KB typically), so 8 of them hold ~500
# events and at most ~800 KB per client: 8 busy clients queue ~6 MB less than with 32
# (the daemon's peak went from 58-59 to 53-56 MB under `bench/throughput.py`, its rate
# and what clients spooled unchanged: a loop turn takes ~2,500 events). Beyond it
# clients hold events, then spool them (zero loss: the spool is ingested exactly once).
RCVHWM: Final = 8
SYNC_TOKENS_KEPT: Final = 10_000
HARD_MAX_MSG: Final = 1024 * 1024  # zmq drops the peer beyond this; 64 KiB..1 MiB is counted
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
    """A named, repeating job on the loop's monotonic clock. A job that returns True has
    more to do: it runs again on the next turn, after the sockets were served."""

    def __init__(self, name: str, interval: float, job: Callable[[], object],
                 first: float = 0.0) -> None:  # fmt: skip
        self.name, self.interval, self.job = name, interval, job
        self.due = time.monotonic() + first

    def run(self, now: float) -> None:
        self.due = now + self.interval
        if self.job() is True:
            self.due = now


class Daemon:
    """The per-user daemon. Build it, call :meth:`run`; it returns after a clean stop."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.counters: Counter[str] = Counter(storage.counters())
        self.seen = SeenIds(map(key_of, storage.event_ids()), expected=storage.count_events())
        self.synthesis = Synthesis(
            settings, storage.last_session(), FeatureCounter(storage.feature_uses())
        )
        self.ledger = ClientLedger(self.counters)
        self.ledger.load(storage.meta("client_ledger"))  # the last clean stop's...
        self.writer = Writer(storage, self.counters, self.synthesis, self.ledger.written)
        self.firewall = Firewall(settings.privacy, load_salt(settings.data_dir), self.counters)
        self._synced = BoundedSet(SYNC_TOKENS_KEPT)  # tokens of client reports processed
        self.vocabularies = Vocabularies(
            vocabulary_dir(settings), self.counters, storage.learnt_vocabularies()
        )
        storage.tagger = self.vocabularies.undeclared
        self.intake = Intake(self._stages(), self.counters, self._on_report, self._on_vocabulary,
                             self.ledger.took)  # fmt: skip
        self.intake.refused.load(storage.meta("refused_ids"))  # ...and the ids it refused
        self._quiet_since = 0.0  # when the event socket was last read empty
        self.sync = Sync(settings, storage, self.counters, self.vocabularies.get,
                         lambda: sorted(self.vocabularies.all()))  # fmt: skip
        self.spool = SpoolIngest(settings.spool_dir, storage, self.writer, self.counters,
                                 self.intake)  # fmt: skip
        self.spool.batch_size = settings.batch_size
        self.control = Control(self, self.counters)
        self.started_ms = now_ms()
        self.started_mono = time.monotonic()
        self.recovered = storage.meta("recovered")
        # A run that did not end cleanly leaves its marker: the next start reports a crash.
        self._previous_run = storage.meta("daemon_running")
        self._mark_running()
        self._rebuild_after = 0  # rowid the dedup rebuild has read up to
        self._logged: set[str] = set()
        self._signals: list[int] = []
        self._stop = False
        self._over_cap = False  # the size check asked for a prune below the cap
        self._stuck_bytes = 0  # on disk after such a prune that could not get under the cap
        storage.limit_wal(settings.max_db_size_mb)
        self.timers = {
            t.name: t
            for t in (
                # The flush job returns None: the writer's True means "written", which a
                # timer would read as "more to do now" (it then wrote on every turn).
                Timer(
                    "flush",
                    settings.flush_interval_secs,
                    self._flush_timer,
                    settings.flush_interval_secs,
                ),
                Timer("spool", SPOOL_SCAN_SECS, self.spool_step),
                Timer("maintenance", MAINTENANCE_SECS, self.maintain_step, 1.0),
                Timer("size", SIZE_CHECK_SECS, self.size_check, SIZE_CHECK_SECS),
                Timer("sessions", SESSION_CHECK_SECS, self.end_idle_session, SESSION_CHECK_SECS),
                Timer("dedup", SEEN_CHECK_SECS, self.seen_step, SEEN_CHECK_SECS),
                Timer("sync", SYNC_CHECK_SECS, self.sync.step, SYNC_CHECK_SECS),
            )
        }

    def _stages(self) -> tuple[Any, ...]:
        erased_ms = self.storage.meta("erased_ms")  # the last `rkd delete`
        erased = None
        # The database is input too: a moment no deletion can have had (not a time, or
        # more than a day ahead, which would refuse everything until then) is ignored.
        if isinstance(erased_ms, int) and 0 < erased_ms <= now_ms() + DAY_MS:
            erased = dt.datetime.fromtimestamp(erased_ms / 1000, dt.UTC)
        return build_stages(self.settings, self.firewall, self.seen, self.writer.pending,
                            self.synthesis.stamp, self._error_seen, erased)  # fmt: skip

    def _error_seen(self) -> None:
        self.writer.flush_soon = True

    def _on_report(self, drops: dict[str, int], token: int) -> None:
        for reason, n in drops.items():
            self.counters[f"client_drop.{reason}"] += n
        if token:
            self._synced.add(token)

    def _on_vocabulary(self, data: bytes) -> None:
        v = self.vocabularies.learn(data)
        if v is not None:
            try:
                self.storage.save_vocabulary(v.product, v.version, data, now_ms())
            except apsw.Error as e:  # known for this run; learnt again from the next client
                log.warning("vocabulary_not_saved", product=v.product, error=str(e))

    # -- the loop ---------------------------------------------------------------------------

    def guarded(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn``; an unexpected exception is logged once (with its traceback),
        counted as ``internal_error.<where>``, and the loop goes on."""
        try:
            return fn(*args)
        except Exception:
            self.counters[f"internal_error.{where}"] += 1
            if where not in self._logged:
                self._logged.add(where)
                log.exception("internal_error", where=where,
                              note="further occurrences are only counted")  # fmt: skip
            return None

    def _open_sockets(self) -> None:
        batches_path, events_path, control_path = socket_paths(self.settings.runtime_dir)
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.RCVHWM, RCVHWM)
        self.pull.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MSG)
        self.pull.bind(f"ipc://{events_path}")  # clients from before batches
        self.pull.bind(f"ipc://{batches_path}")
        self.rep = self.ctx.socket(zmq.REP)
        self.rep.setsockopt(zmq.LINGER, 0)
        self.rep.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        self.rep.bind(f"ipc://{control_path}")
        for p in (batches_path, events_path, control_path):
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
        poller.register(self.sync.wake_r.fileno(), zmq.POLLIN)  # the sync worker is done
        log.info("daemon_started", pid=os.getpid(), db=str(self.storage.path),
                 events_stored=self.writer.events_stored, enabled=self.settings.enabled)  # fmt: skip
        self.guarded("sessions", self.end_idle_session)  # one that went stale while down
        if self._previous_run is not None:
            self.guarded("crash_report", self._report_crash, self._previous_run)
        settle_collector()
        sd_notify(f"READY=1\nSTATUS=storing to {self.storage.path}\nMAINPID={os.getpid()}")
        try:
            while not self._stop:
                ready = dict(poller.poll(self._next_timeout_ms()))
                if self.pull in ready:
                    self.guarded("socket", self.drain)
                if self.rep in ready:
                    self.guarded("control", self.control.serve, self.rep)
                if wake.fileno() in ready:
                    self.guarded("signals", self._on_signals, wake)
                if self.sync.wake_r.fileno() in ready:
                    self.guarded("sync", self.sync.poll)
                    if self.sync.due():  # the next batch at once, not at the next check
                        self.timers["sync"].due = 0.0
                now = time.monotonic()
                for timer in self.timers.values():
                    if now >= timer.due:
                        self.guarded(timer.name, timer.run, now)
                if self.writer.failing and now >= self.writer.retry_at:
                    self.guarded("flush", self.flush)  # the retry the backoff scheduled
        finally:
            self._shutdown(wake)

    def _next_timeout_ms(self) -> int:
        due = min(t.due for t in self.timers.values())
        if self.writer.failing:
            due = min(due, self.writer.retry_at)
        return max(0, int((due - time.monotonic()) * 1000) + 1)

    def _on_signals(self, wake: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            while wake.recv(512):
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
        while time.monotonic() < deadline and self.guarded("socket", self.drain, False):
            pass
        # The last of dead clients' frames were just read: their claims are settled now,
        # by this daemon that knows what it received (the next one would not).
        self.guarded("client_drops", self._take_client_drops)
        self.ledger.settle(force=True)
        # Sync first: an upload on the wire may finish and be recorded (its counters are
        # then written with the last flush).
        self.guarded("sync", self.sync.close)
        if self.writer.flush(force=True):
            with contextlib.suppress(apsw.Error):
                # What each client had stored, for the next daemon's claims and confirmations.
                self.storage.set_meta("client_ledger", self.ledger.dump())
                # What it refused: a copy that arrives later is a duplicate, not counted again.
                self.storage.set_meta("refused_ids", self.intake.refused.dump())
                self.storage.set_meta("daemon_running", None)  # a clean exit: no crash report
        self.pull.close(linger=0)
        self.rep.close(linger=0)
        self.ctx.term()
        signal.set_wakeup_fd(-1)
        wake.close()
        self._wake_w.close()
        log.info("daemon_stopped", events_stored=self.writer.events_stored,
                 pending=len(self.writer.pending))  # fmt: skip

    # -- ingestion and writing ----------------------------------------------------------------

    def drain(self, flush: bool = True, turn_secs: float = TURN_SECS) -> int:
        """Take queued frames through the intake, up to DRAIN_LIMIT of them or
        ``turn_secs``; return how many were taken."""
        now = utc_now()
        deadline = time.monotonic() + turn_secs
        recv, intake = self.pull.recv, self.intake
        n = 0
        while n < DRAIN_LIMIT:
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                self._quiet_since = time.monotonic()
                break
            n += 1
            intake(frame, "socket", now)
            if time.monotonic() >= deadline:  # a frame is up to 64 events
                break
        w = self.writer
        if flush and (w.flush_soon or len(w.pending) >= self.settings.batch_size):
            self.flush()
        return n

    def flush(self) -> bool:
        return self.writer.flush()

    def _flush_timer(self) -> None:
        self.writer.flush()

    def spool_step(self) -> bool:
        """Ingest spool files for one turn's budget; True while more is left."""
        if self.writer.failing:
            return False  # read on once the database can be written
        self.guarded("client_drops", self._take_client_drops)
        more = self.spool.step(time.monotonic() + TURN_SECS)
        if self.writer.flush_soon:
            self.flush()
        return more

    def _take_client_drops(self) -> None:
        """Losses clients could not report in-band (see client/dropfile.py)."""
        try:
            drops, claims = take_drops(self.settings.spool_dir)
        except UnsafePath as e:
            self._log_once("drops_file_refused", "drops_file_refused", error=str(e))
            drops, claims = {}, []
        for reason, n in drops.items():
            self.counters[f"client_drop.{reason}"] += n
        self.ledger.claim(claims)
        events = self.pull.getsockopt(zmq.EVENTS)
        if isinstance(events, int) and not events & zmq.POLLIN:
            self._quiet_since = time.monotonic()  # nothing queued: a quiet daemon settles too
        if drops or self.ledger.settle(self._quiet_since):
            self.intake.dirty = True
            self.writer.flush_soon = True

    def end_idle_session(self) -> None:
        if self.synthesis.end_idle_session(self.writer.pending):
            self.writer.flush_soon = True

    def _report_crash(self, marker: str) -> None:
        own = self.synthesis.crash_report(marker, self.writer.last_flush_ms)
        if own is not None:
            self.seen.add(key_of_int(own.event_id.int))
            self.synthesis.stamp(own, now_ms(), self.writer.pending)
            self.counters["accepted"] += 1
            self.writer.flush(force=True)

    def _mark_running(self) -> None:
        """The running marker; the saved client ledger and refused ids go with it (loaded
        already: they would be stale after a crash of this daemon)."""
        marker = {"pid": os.getpid(), "started_ms": self.started_ms}
        with self.storage.db:
            self.storage.set_meta("daemon_running", msgspec.json.encode(marker).decode())
            self.storage.set_meta("client_ledger", None)
            self.storage.set_meta("refused_ids", None)

    def seen_step(self) -> bool:
        """Rebuild the dedup table from the database a step at a time once it is half
        full (pruned ids leave it). True while the rebuild goes on."""
        seen = self.seen
        if not seen.rebuilding:
            if not seen.needs_rebuild(self.writer.events_stored):
                return False
            held = [key_of(r.envelope.event_id.bytes) for r in self.writer.pending]
            seen.begin_rebuild(self.writer.events_stored + len(held), held)
            self._rebuild_after = 0
        rowid, keys = self.storage.event_keys_after(self._rebuild_after, SEEN_REBUILD_BATCH)
        seen.rebuild_step(keys)
        if rowid is None:
            seen.end_rebuild()
            return False
        self._rebuild_after = rowid
        return True

    # -- maintenance ------------------------------------------------------------------------------

    def size_check(self) -> None:
        """Between the hourly prunes: when the database and its WAL near the cap, prune
        (below it) on the next turn instead of up to an hour later."""
        cap = self.settings.max_db_size_mb * 1024 * 1024
        # Over the cap with only what is never pruned (the newest events, aggregates):
        # look again only after another (NEAR_CAP - PRUNE_TO) of the cap was written.
        limit = max(NEAR_CAP * cap, self._stuck_bytes + (NEAR_CAP - PRUNE_TO) * cap)
        if not self._over_cap and self.storage.disk_bytes() > limit:
            self._over_cap = True
            self.timers["maintenance"].due = 0.0

    def maintain_step(self) -> bool:
        """The hourly job, one bounded step at a time: True while there is more to prune
        (the next step runs on the next turn, after the sockets were served)."""
        if not self.flush():
            return False
        self.spool.sweep()
        s = self.settings
        cap_mb = s.max_db_size_mb * (PRUNE_TO if self._over_cap else 1.0)
        try:
            removed = self.storage.prune_step(s.retention_days, cap_mb)
            # Then, one month per step, aggregates over a year old become monthly.
            more = removed > 0 or rollup_step(self.storage.db, now_ms() // DAY_MS)
            if removed:
                self.writer.pruned(removed)
            elif not more:
                self.sync.expire(s.retention_days)  # copies of sent batches, past retention
                self.storage.checkpoint()  # pruned pages leave the WAL too
                self._shrink_if_over()
        except apsw.Error as e:
            self._log_once("prune_failed", "prune_failed", error=str(e)[:200])
            return False
        return more

    def _shrink_if_over(self) -> None:
        """After a prune the size check asked for: if the file itself (its freed pages)
        is still over the cap, give the space back once."""
        if self._over_cap:
            self._over_cap = False
            cap = self.settings.max_db_size_mb * 1024 * 1024
            if self.storage.disk_bytes() > cap:
                self.storage.vacuum()
            size = self.storage.disk_bytes()
            self._stuck_bytes = size if size > cap else 0

    def _log_once(self, key: str, event: str, **fields: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(event, **fields, note="further occurrences are only counted")

    # -- what control requests may ask (rkd.daemon.control.Operations) -----------------------

    def synced(self, token: int) -> tuple[bool, int]:
        self.drain(flush=False)  # frames queued before the question count too
        return token in self._synced, os.getpid()

    def confirm(self, client: int, upto: int, flush: bool) -> tuple[int, int]:
        """Up to which number ``client``'s events are stored, and this daemon's pid. With
        ``flush`` (the client flushes or leaves) its queued events are taken and written
        first, as far as one turn goes (it asks again if that was not enough)."""
        ledger = self.ledger
        if flush:
            if ledger.taken(client) < upto:  # a short turn: others may be asking too
                self.drain(flush=False, turn_secs=CONFIRM_TURN_SECS)
            if ledger.unwritten(client):
                self.writer.flush()
        return ledger.stored(client), os.getpid()

    def flush_all(self) -> int | None:
        """`rkd flush`: what is queued, a slice of the spool and the losses clients left
        in the drops file, written now; how many events were written."""
        self.drain(flush=False)
        self.guarded("client_drops", self._take_client_drops)
        self.spool.step(time.monotonic() + FLUSH_REQUEST_SPOOL_SECS)
        n = len(self.writer.pending)
        return n if self.writer.flush(force=True) else None

    def prune_now(self) -> int | None:
        """Retention and size cap to completion (`rkd prune`): events removed, or None
        when the database could not be pruned now."""
        if not self.writer.flush(force=True):
            return None
        s = self.settings
        try:
            removed = self.storage.prune(s.retention_days, s.max_db_size_mb)
            rollup_all(self.storage.db, now_ms() // DAY_MS)
            self.storage.checkpoint()
        except apsw.Error as e:
            self._log_once("prune_failed", "prune_failed", error=str(e)[:200])
            return None
        if removed:
            self.writer.pruned(removed)
        return removed

    def delete_all(self) -> tuple[int, int]:
        """Erase everything: events held and stored, the spool, counters; a new salt.
        Returns how many events went (stored, pending, and spooled ones not also held)
        and how many uploaded sessions the server is now asked to erase."""
        self.drain(flush=False)
        held = len(self.writer.pending)
        spooled = spooled_event_ids(self.settings.spool_dir)
        held += sum(1 for i in spooled if key_of(i) not in self.seen)
        try:
            n = self.storage.delete_all() + held
        except apsw.Error as e:
            raise ControlError(f"delete failed: {str(e)[:200]}") from None
        if not self.storage.erased_fully:
            # Every row is gone; old pages stay in the file until the reader lets go (the
            # next maintenance checkpoint copies over them).
            log.warning("delete_checkpoint_blocked", note="a reader holds the database open")
            self.timers["maintenance"].due = time.monotonic() + 10
        self.intake.stages = self._stages()  # with the moment of this deletion
        self.spool.erase()
        remove_corrupt_copies(self.storage.path)
        self.writer.forget()
        self.ledger.forget()
        self.intake.refused.clear()
        self.seen.clear()
        self.synthesis.forget()
        self.firewall.salt = load_salt(self.settings.data_dir, rotate=True)
        self._mark_running()  # delete_all erased the marker with everything else
        self.guarded("sync", self.sync.configure, self.settings)  # a new consent moment
        log.info("deleted", events=n, cloud_sessions=self.storage.cloud_erasure)
        return n, self.storage.cloud_erasure

    def reload(self) -> str | None:
        """SIGHUP or `rkd enable/disable`: re-read config and consent; None or the error.

        A bad new configuration keeps the old one, except that a withdrawal of consent
        (`rkd disable` works whatever the file says) is applied all the same: it can
        only narrow what is collected. When telemetry was turned off, what is already
        held is written first (existing data is retained), and nothing new is accepted
        after that.
        """
        error = None
        try:
            new = load_settings()
        except ConfigError as e:
            log.error("reload_failed", error=str(e))
            error = f"{e} (a withdrawal of consent was applied; other settings kept)"
            new = self._narrowed(load_settings_leniently()[0])
        if self.settings.enabled and not new.enabled:
            self.drain(flush=False)
            self.writer.flush(force=True)
        kept = msgspec.structs.replace(self.settings.paths, config=new.paths.config)
        self.settings = msgspec.structs.replace(new, paths=kept)
        flush = self.timers["flush"]  # a shorter interval applies now, not after the old one
        flush.interval = new.flush_interval_secs
        flush.due = min(flush.due, time.monotonic() + new.flush_interval_secs)
        self.spool.batch_size = new.batch_size
        self.storage.limit_wal(new.max_db_size_mb)
        self._stuck_bytes = 0  # a new cap is looked at afresh
        self.synthesis.configure(self.settings)
        self.firewall = Firewall(new.privacy, self.firewall.salt, self.counters)
        self.vocabularies.load_fixed()
        self.guarded("sync", self.sync.configure, self.settings)
        self.intake.stages = self._stages()
        log.info("reloaded", enabled=new.enabled, categories=sorted(new.categories))
        return error

    def _narrowed(self, read: Settings) -> Settings:
        """The current settings, with what ``read`` turns off turned off too."""
        s = self.settings
        enabled = s.enabled and read.enabled
        categories = s.categories & read.categories if enabled else s.categories
        decided_by = s.decided_by if enabled else read.decided_by
        return msgspec.structs.replace(
            s, enabled=enabled, categories=categories, decided_by=decided_by
        )

    def refilter(self) -> dict[str, int]:
        """`rkd audit --fix`: what is pending is written first, then every stored event
        goes through today's firewall and vocabularies (see daemon/refilter.py)."""
        self.drain(flush=False)
        if not self.writer.flush(force=True):
            raise ControlError("the database cannot be written now; nothing was changed")
        try:
            done = refilter(self.storage, self.firewall, self.vocabularies)
        except apsw.Error as e:
            raise ControlError(f"re-filtering failed: {str(e)[:200]}") from None
        self.writer.events_stored -= done.removed
        log.info("refiltered", **msgspec.structs.asdict(done))
        return msgspec.structs.asdict(done)

    def sync_now(self) -> str | None:
        """`rkd sync now`: None, or why nothing can be sent."""
        if self.sync.now():
            return None
        return self.sync.problem or "sync is off (set sync_enabled = true, then rkd sync enroll)"

    def show(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Pending events as the spec's envelopes, already filtered, oldest first."""
        out = []
        for r in self.writer.pending[:limit]:
            data = msgspec.to_builtins(r.envelope)
            data["timestamp"] = iso_ms(r.ts_ms)  # what is stored: milliseconds, not micro
            data["session"] = {"id": r.session.uuid, "sequence": r.sequence,
                               "started_at": iso_ms(r.session.started_ms)}  # fmt: skip
            tag = self.vocabularies.undeclared(r.envelope)
            data["undeclared"] = tag.split(",") if tag else []
            out.append(data)
        return len(self.writer.pending), out

    def status(self) -> DaemonStatus:
        s = self.synthesis.stamper.current
        w = self.writer
        return DaemonStatus(
            pid=os.getpid(),
            started_at=iso_ms(self.started_ms),
            uptime_secs=round(time.monotonic() - self.started_mono, 3),
            enabled=self.settings.enabled,
            db_path=str(self.storage.path),
            events_stored=w.events_stored,
            pending=len(w.pending),
            last_flush=iso_ms(w.last_flush_ms) if w.last_flush_ms else None,
            session_id=s.uuid if s is not None else None,
            counters=dict(self.counters),
            recovered=self.recovered,
            spool_quarantined=self.spool.quarantined(),
            settings=self.effective_settings(),
            database_bytes=self.storage.disk_bytes(),
            sync=self.sync.status(),
        )

    def effective_settings(self) -> EffectiveSettings:
        s = self.settings
        return EffectiveSettings(
            config_path=str(s.config_path), db_path=str(self.storage.path),
            decided_by=s.decided_by, batch_size=s.batch_size,
            flush_interval_secs=s.flush_interval_secs, max_db_size_mb=s.max_db_size_mb,
            retention_days=s.retention_days, categories=sorted(s.categories),
        )  # fmt: skip
