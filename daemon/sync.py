"""Pro cloud sync, owned by the daemon (issue 12): the loop's side and the worker thread.

The daemon's loop does everything that touches the database: it decides the mode at
start and on every reload (recording the consent moment, or its withdrawal), builds the
next batch into the outbox (:mod:`rkd.daemon.outbox`), hands it to the worker, and
records the outcome. The worker thread does only the network (:func:`uplink.deliver`),
so socket ingestion never waits for the server. With sync off there is no worker, no
TLS context and no socket: nothing here runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import queue
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import apsw
import msgspec
import structlog
from rkd.client import cloud
from rkd.client.clock import DAY_MS, now_ms
from rkd.client.config import Settings
from rkd.client.vocabulary import Vocabulary
from rkd.daemon import cloud_rights, outbox, reports
from rkd.daemon.storage import Storage
from rkd.daemon.synckey import SyncKeyError, read_sync_key
from rkd.daemon.uplink import Outcome, SyncKey, Uplink, deliver, tls_context

log = structlog.get_logger("rkd.daemon")

CHECK_SECS: Final = 1.0  # the loop looks at the schedule this often
REPORT_CHECK_SECS: Final = 3600.0  # days that ended get their report within the hour
# Tests only: "1" sends a community report as soon as it is built, instead of at a
# random time of the following day (which keeps reports of one install unlinkable).
SEND_NOW_ENV: Final = "RK_TELEMETRY_REPORTS_SEND_NOW"


class Job(NamedTuple):
    kind: str  # "events" (Pro, signed) or "report" (community, anonymous)
    path: str
    batch_id: str  # a report's: "<product> <day>"
    body: bytes
    events: int

    @property
    def signed(self) -> bool:
        return self.kind != "report"


class BuildJob(NamedTuple):
    """Make the next batch after ``cursor`` (read-only, on the worker's own connection:
    filtering and compressing 1,000 events took the loop 50-160 ms)."""

    cursor: int
    since_ms: int
    max_events: int
    epoch: int  # Sync.epoch when asked: a delete or a consent change since voids it


class Worker(threading.Thread):
    """Builds batches and sends jobs, one at a time; results go back through a queue and
    a wake-up byte. It reads the database on a read-only connection of its own and never
    writes it: the loop records what it built or sent."""

    def __init__(self, uplink: Uplink, stop: threading.Event, wake: socket.socket,
                 db_path: Any = None,
                 vocabulary_for: Callable[[str], Vocabulary | None] = lambda p: None) -> None:  # fmt: skip
        super().__init__(name="rkd-sync", daemon=True)
        self.uplink, self.stop, self.wake = uplink, stop, wake
        self.db_path, self.vocabulary_for = db_path, vocabulary_for
        self.jobs: queue.Queue[Job | BuildJob | None] = queue.Queue()
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.rng = random.Random()
        self._db: apsw.Connection | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            result: Any
            try:
                if isinstance(job, BuildJob):
                    result = self._build(job)
                else:
                    result = deliver(self.uplink, job.path, job.body, job.batch_id, self.stop,
                                     self.rng, signed=job.signed)  # fmt: skip
            except Exception as e:  # never let the thread die with a job in flight
                log.warning("sync_worker_error", job=type(job).__name__, error=type(e).__name__,
                            exc_info=True)  # fmt: skip
                result = Outcome("retry", None, f"internal error: {type(e).__name__}", 1)
            self.results.put((job, result))
            with contextlib.suppress(OSError):  # the loop has gone: nobody to wake
                self.wake.send(b"s")
        if self._db is not None:
            self._db.close()

    def _build(self, job: BuildJob) -> outbox.Batch | None:
        if self._db is None:
            self._db = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
            self._db.setbusytimeout(1000)
        return outbox.build(self._db, job.cursor, job.since_ms, self.vocabulary_for,
                            job.max_events)  # fmt: skip


class Sync:
    """The daemon's sync collaborator."""

    def __init__(self, settings: Settings, storage: Storage, counters: Counter[str],
                 vocabulary_for: Callable[[str], Vocabulary | None],
                 products: Callable[[], list[str]] = lambda: [],
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.storage, self.counters, self.vocabulary_for = storage, counters, vocabulary_for
        self.products = products  # the products with a vocabulary: those reports cover
        self.next_reports = 0.0  # monotonic: when to look for days to report next
        self.rng = random.Random()
        self.env = dict(os.environ) if env is None else env
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.stop = threading.Event()
        self.worker: Worker | None = None
        self.in_flight: Job | BuildJob | None = None
        self.next_at = 0.0  # monotonic: no new round before
        self.max_events = cloud.MAX_BATCH_EVENTS
        self.mode = "off"
        self.problem: str | None = None  # why sync is off although asked for
        self.settings = settings
        self.community = False
        self.epoch = 0  # bumped by every consent change and delete (see BuildJob)
        self.key: SyncKey | None = None
        self._erasing: list[str] = []
        self.configure(settings)

    # -- mode ----------------------------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        """At start and on every reload: on when telemetry and sync are on and a key is
        enrolled. Turning on records the consent moment (nothing stored before leaves);
        turning off is recorded, and the worker stops before its next request."""
        self.settings = settings
        self.problem = None
        self.epoch += 1  # a batch being built under the old settings is not recorded
        key_problem: str | None
        try:  # the key also serves erasure requests, which `rkd delete` makes in any mode
            self.key = read_sync_key(settings.data_dir, self.env)
        except SyncKeyError as e:
            self.key, key_problem = None, str(e)
        else:
            key_problem = None if self.key else "not enrolled: run `rkd sync enroll`"
        key = self.key
        wanted = settings.enabled and settings.cloud_sync
        if wanted:
            self.problem = key_problem
        on = wanted and key is not None
        db = self.storage.db
        self._configure_community(settings, community=settings.enabled
                                  and settings.community_contribution and not on)  # fmt: skip
        was_on = outbox.meta(db, "sync_on") == 1
        with db:
            if on and not was_on:
                newest = db.execute("SELECT max(id) FROM events").get
                outbox.set_meta(db, "sync_on", 1)
                outbox.set_meta(db, "sync_since_ms", now_ms())
                outbox.set_meta(db, "sync_cursor", newest if isinstance(newest, int) else 0)
                outbox.log(db, now_ms(), "consent", settings.sync_endpoint, None, 0, 0, None,
                           "sync on: only events recorded from now on leave")  # fmt: skip
            elif was_on and not on:
                outbox.set_meta(db, "sync_on", None)
                outbox.set_meta(db, "sync_cursor", None)
                # Batches not sent yet never go, even if sync is turned on again later.
                db.execute("UPDATE sync_batches SET state = ? WHERE state = ?",
                           (outbox.WITHDRAWN, outbox.PENDING))  # fmt: skip
                why = self.problem or "sync off"
                outbox.log(db, now_ms(), "consent", settings.sync_endpoint, None, 0, 0, None,
                           f"{why}: nothing more leaves")  # fmt: skip
        mode = "pro" if on else "community" if self.community else "off"
        # `rkd delete` asked the server to erase this install's sessions: the user's
        # right, whatever the mode (with a key; without one nothing was ever uploaded).
        erasing = key is not None and bool(cloud_rights.erasure_due(db))
        if mode != "off" or erasing:
            self.stop.clear()
            uplink = Uplink(settings.sync_endpoint, tls_context(settings.sync.ca_file),
                            settings.sync.pins, key)  # fmt: skip
            if self.worker is None:
                self.worker = Worker(uplink, self.stop, self._wake_w, self.storage.path,
                                     self.vocabulary_for)  # fmt: skip
                self.worker.start()
            else:
                self.worker.uplink = uplink
            self.max_events = settings.sync.max_batch_events
            if mode != self.mode:
                self.next_at = self.next_reports = 0.0
                log.info("sync_on", mode=mode, endpoint=settings.sync_endpoint)
        else:
            self.stop.set()  # a request in flight ends; no next one starts
            if self.mode != "off":
                log.info("sync_off", reason=self.problem or "sync off")
        self.mode = mode

    def _configure_community(self, settings: Settings, community: bool) -> None:
        """Community reports cover the days from the one consent was given on."""
        db = self.storage.db
        was = outbox.meta(db, "community_since_day")
        with db:
            if community and not isinstance(was, int):
                today = now_ms() // DAY_MS
                outbox.set_meta(db, "community_since_day", today)
                outbox.log(db, now_ms(), "consent", settings.sync_endpoint, None, 0, 0, None,
                           "community reports on: days from today on are reported")  # fmt: skip
            elif not community and isinstance(was, int):
                outbox.set_meta(db, "community_since_day", None)
                outbox.log(db, now_ms(), "consent", settings.sync_endpoint, None, 0, 0, None,
                           "community reports off: nothing more leaves")  # fmt: skip
        self.community = community

    # -- the loop's side -----------------------------------------------------------------

    def step(self) -> None:
        """Timer job: start the next round when one is due and none is in flight."""
        if self.in_flight is not None or self.worker is None:
            return
        if time.monotonic() < self.next_at:
            return
        self.next_at = 0.0
        job: Job | BuildJob | None = self._next_erasure()
        if job is None and self.mode != "off":
            job = self._next_report() if self.mode == "community" else self._next_job()
        if job is None:
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
            return
        self._start(job)

    def _start(self, job: Job | BuildJob) -> None:
        assert self.worker is not None
        self.in_flight = job
        self.worker.jobs.put(job)

    def due(self) -> bool:
        """Whether the next round may start at once (the loop then runs step soon)."""
        return self.in_flight is None and self.worker is not None and self.next_at == 0.0

    def now(self) -> bool:
        """`rkd sync now`: the next round at once (False when sync is off)."""
        self.next_at = 0.0
        return self.mode != "off"

    def _next_erasure(self) -> Job | None:
        """`rkd delete` asked the server to erase what this install uploaded: first."""
        if self.key is None:
            return None
        ids = cloud_rights.erasure_due(self.storage.db)
        if not ids:
            return None
        request_id, body = cloud_rights.request_body(ids)
        self._erasing = ids
        return Job("erasure", cloud.ERASURE_PATH, request_id, body, len(ids))

    def _next_report(self) -> Job | None:
        """Build the reports of days that ended (hourly), then the oldest one due."""
        db = self.storage.db
        if time.monotonic() >= self.next_reports:
            self.next_reports = time.monotonic() + REPORT_CHECK_SECS
            self._build_reports(db)
        due = reports.pending(db, now_ms())
        if not due:
            return None
        product, day, body = due[0]
        return Job("report", cloud.REPORTS_PATH, f"{product} {day.isoformat()}",
                   gzip.compress(body, mtime=0), 1)  # fmt: skip

    def _build_reports(self, db: apsw.Connection) -> None:
        since = outbox.meta(db, "community_since_day")
        if not isinstance(since, int):
            return
        t = now_ms()
        today = dt.date(1970, 1, 1) + dt.timedelta(days=t // DAY_MS)
        send_now = self.env.get(SEND_NOW_ENV) == "1"
        with db:  # a report missed by more than a day gets a new time, not a burst
            db.execute(
                "UPDATE report_days SET send_at_ms = ? + abs(random()) % ? WHERE sent_ms IS NULL"
                " AND send_at_ms < ?", (t, DAY_MS, t - DAY_MS),
            )  # fmt: skip
        for product in self.products():
            vocabulary = self.vocabulary_for(product)
            if vocabulary is None:
                continue
            start = dt.date(1970, 1, 1) + dt.timedelta(days=since)
            for day in reports.due_days(db, product, start, today):
                state = reports.load_state(db, product)
                built = reports.build_report(db, state, day, vocabulary, self.settings.privacy)
                if built is None:
                    continue
                at = t if send_now else reports.send_time(day, self.rng)
                reports.record_built(db, built, at, t)
                self.counters["sync.reports_built"] += 1

    def _next_job(self) -> Job | BuildJob | None:
        """The oldest pending batch, or the building of the next one (on the worker)."""
        db = self.storage.db
        pending = outbox.next_pending(db)
        if pending is not None:
            batch_id, body, events = pending
            return Job("events", cloud.EVENTS_PATH, batch_id, body, events)
        cursor = outbox.meta(db, "sync_cursor")
        since = outbox.meta(db, "sync_since_ms")
        newest = db.execute("SELECT max(id) FROM events").get
        if not isinstance(cursor, int) or not isinstance(since, int):
            return None
        if not isinstance(newest, int) or newest <= cursor:
            return None  # nothing new: no need to wake the worker
        return BuildJob(cursor, since, self.max_events, self.epoch)

    def _built(self, job: BuildJob, batch: outbox.Batch | None) -> None:
        """The worker built a batch: record it (and the cursor past it), then send it.
        Unless sync went off, or the cursor moved (a delete), meanwhile: then it is
        dropped, unrecorded."""
        db = self.storage.db
        if batch is None:  # the build failed (its error is the worker's): the next round
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
            return
        if self.mode != "pro" or job.epoch != self.epoch:
            return
        with db:
            outbox.record(db, batch, now_ms())
            if batch.events == 0:  # only skipped events: nothing to send, the cursor moved
                outbox.finish(db, batch.batch_id, outbox.SENT, "nothing uploadable", 0, now_ms())
        self.next_at = 0.0
        if batch.events:
            self._start(Job("events", cloud.EVENTS_PATH, batch.batch_id, batch.body, batch.events))

    def poll(self, wake: Any = None) -> None:
        """Each loop turn (and when the worker wakes the loop): record finished rounds."""
        try:
            while self.wake_r.recv(4096):
                pass
        except OSError:
            pass
        if self.worker is None:
            return
        while True:
            try:
                job, result = self.worker.results.get_nowait()
            except queue.Empty:
                return
            self.in_flight = None
            if isinstance(job, BuildJob):
                self._built(job, result if isinstance(result, outbox.Batch) else None)
            else:
                self._record(job, result)

    def _record(self, job: Job, o: Outcome) -> None:
        if job.kind == "report":
            self._record_report(job, o)
            return
        if job.kind == "erasure":
            self._record_erasure(job, o)
            return
        db = self.storage.db
        t = now_ms()
        state, result = outbox.PENDING, f"{o.kind}: {o.detail}"
        if o.kind == "ok":
            a = o.answer or cloud.Answer()
            state = outbox.SENT
            result = f"ok {o.status}: {a.accepted} accepted, {a.duplicates} duplicates"
            if a.rejected:
                result += ", rejected " + ", ".join(
                    f"{k} {v}" for k, v in sorted(a.rejected.items())
                )
            self.counters["sync.events_sent"] += job.events
            self.next_at = 0.0  # more may wait: the next batch at once
        elif o.kind == "quarantine":
            state = outbox.QUARANTINED
            self.counters["sync.quarantined"] += 1
            log.warning("sync_quarantined", batch=job.batch_id, status=o.status, detail=o.detail)
            self.next_at = 0.0
        elif o.kind == "wait":
            self.next_at = time.monotonic() + o.retry_after
        elif o.kind == "split":
            self.max_events = max(1, job.events // 2)
            self.next_at = 0.0
        else:  # retry, stopped
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
            self.counters[f"sync.{o.kind}"] += 1
        try:
            with db:
                if o.kind == "split":
                    outbox.unbatch(db, job.batch_id)
                else:
                    outbox.finish(db, job.batch_id, state, result, o.attempts, t)
                outbox.log(db, t, job.kind, self.settings.sync_endpoint, job.batch_id, job.events,
                           len(job.body), outbox.body_sha(job.body), result)  # fmt: skip
        except apsw.Error as e:  # the batch stays pending: sent again, counted once
            log.warning("sync_record_failed", error=str(e))

    def _record_erasure(self, job: Job, o: Outcome) -> None:
        db = self.storage.db
        t = now_ms()
        if o.kind == "ok":
            deleted = msgspec.json.decode(o.raw, type=cloud.Erased).deleted if o.raw else 0
            result = f"ok {o.status}: the server erased {deleted} events"
            self.next_at = 0.0
        else:
            result = f"{o.kind}: {o.detail}"
            self.next_at = time.monotonic() + (o.retry_after or self.settings.sync.interval_secs)
        try:
            with db:
                if o.kind == "ok":
                    cloud_rights.erased(db, self._erasing)
                outbox.log(db, t, "erasure", self.settings.sync_endpoint, job.batch_id,
                           job.events, len(job.body), outbox.body_sha(job.body), result)  # fmt: skip
        except apsw.Error as e:
            log.warning("sync_record_failed", error=str(e))

    def _record_report(self, job: Job, o: Outcome) -> None:
        """A report is sent once: taken (202) or refused for good (a final 4xx, logged),
        it is marked sent; otherwise it waits for the next round."""
        db = self.storage.db
        t = now_ms()
        product, day = job.batch_id.split(" ")
        result = f"{o.kind}: {o.detail}" if o.kind != "ok" else f"ok {o.status}"
        if o.kind in ("ok", "quarantine"):
            self.counters["sync.reports_sent" if o.kind == "ok" else "sync.reports_refused"] += 1
            self.next_at = 0.0
        elif o.kind == "wait":
            self.next_at = time.monotonic() + o.retry_after
        else:
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
            self.counters[f"sync.{o.kind}"] += 1
        try:
            if o.kind in ("ok", "quarantine"):
                reports.record_sent(db, product, dt.date.fromisoformat(day), t)
            with db:
                outbox.log(db, t, "report", self.settings.sync_endpoint, None, 1, len(job.body),
                           outbox.body_sha(job.body), result)  # fmt: skip
        except apsw.Error as e:
            log.warning("sync_record_failed", error=str(e))

    def expire(self, retention_days: int) -> None:
        """Maintenance: drop batch copies past retention."""
        with self.storage.db:
            outbox.expire(self.storage.db, retention_days, now_ms())
        cutoff = dt.date(1970, 1, 1) + dt.timedelta(days=now_ms() // DAY_MS - retention_days)
        reports.prune_reports(self.storage.db, cutoff)

    def status(self) -> dict[str, Any]:
        db = self.storage.db
        return {
            "mode": self.mode,
            "problem": self.problem,
            "in_flight": getattr(self.in_flight, "batch_id", "(building a batch)")
            if self.in_flight else None,
            "next_attempt_in_secs": max(0.0, round(self.next_at - time.monotonic(), 1))
            if self.mode != "off" else None,
            "queue_depth": outbox.queue_depth(db),
            "cloud_erasure_pending": len(cloud_rights.erasure_due(db)),
            "reports_waiting": len(reports.pending(db, 1 << 62)) if self.mode == "community" else 0,
            "batches": outbox.counts_by_state(db),
        }  # fmt: skip

    def close(self, wait_secs: float = 2.0) -> None:
        """At shutdown: a request on the wire may finish (its outcome is recorded, so a
        report the server took is not sent again), then the worker stops."""
        if self.worker is not None and self.in_flight is not None:
            try:
                job, outcome = self.worker.results.get(timeout=wait_secs)
            except queue.Empty:
                pass
            else:
                self.in_flight = None
                if not isinstance(job, BuildJob):
                    self._record(job, outcome)
        self.stop.set()
        if self.worker is not None:
            self.worker.jobs.put(None)
            self.worker.join(timeout=1.0)
        self.wake_r.close()
        self._wake_w.close()
