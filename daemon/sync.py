"""Everything that leaves the machine, owned by the daemon (issue 12): the loop's side.

Three kinds of round, one at a time: the cloud erasure `rkd delete` asked for (first,
in any mode), Pro batches (mode "pro") and community reports (mode "community",
:mod:`rkd.daemon.sync_reports`). The loop decides the mode at start and on every reload
(recording the consent moment, or its withdrawal), asks the worker
(:mod:`rkd.daemon.sync_worker`) to build the next batch or to send a job, and records
the outcome in the outbox (:mod:`rkd.daemon.outbox`); the worker does the network and
the building, so socket ingestion never waits for either. With sync off and no erasure
due there is no worker, no TLS context and no socket: nothing here runs.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import apsw
import structlog
from rkd.client import cloud
from rkd.client.clock import now_ms
from rkd.client.config import Settings
from rkd.client.vocabulary import Vocabulary
from rkd.daemon import cloud_rights, outbox
from rkd.daemon.storage import Storage
from rkd.daemon.sync_reports import CommunityReports
from rkd.daemon.sync_worker import BuildJob, BuildReportsJob, Job, Worker
from rkd.daemon.synckey import SyncKeyError, read_sync_key
from rkd.daemon.uplink import Outcome, SyncKey, Uplink, tls_context

log = structlog.get_logger("rkd.daemon")

CHECK_SECS: Final = 1.0  # the loop looks at the schedule this often


class Sync:
    """The daemon's sync collaborator."""

    def __init__(self, settings: Settings, storage: Storage, counters: Counter[str],
                 vocabulary_for: Callable[[str], Vocabulary | None],
                 products: Callable[[], list[str]] = lambda: [],
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.storage, self.counters, self.vocabulary_for = storage, counters, vocabulary_for
        self.env = dict(os.environ) if env is None else env
        self.reports = CommunityReports(storage.db, counters, vocabulary_for, products, self.env)
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.stop = threading.Event()
        self.worker: Worker | None = None
        self.in_flight: Job | BuildJob | BuildReportsJob | None = None
        self.next_at = 0.0  # monotonic: no new round before
        self.max_events = cloud.MAX_BATCH_EVENTS
        self.mode = "off"
        self.problem: str | None = None  # why sync is off although asked for
        self.settings = settings
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
        self.reports.configure(settings.enabled and settings.community_contribution and not on,
                               settings.sync_endpoint)  # fmt: skip
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
        mode = "pro" if on else "community" if self.reports.on else "off"
        # `rkd delete` asked the server to erase this install's sessions: the user's
        # right, whatever the mode (with a key; without one nothing was ever uploaded).
        erasing = key is not None and cloud_rights.erasure_count(db) > 0
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
                self.next_at = 0.0
                log.info("sync_on", mode=mode, endpoint=settings.sync_endpoint)
        else:
            self.stop.set()  # a request in flight ends; no next one starts
            if self.mode != "off":
                log.info("sync_off", reason=self.problem or "sync off")
        self.mode = mode

    # -- the loop's side -----------------------------------------------------------------

    def step(self) -> None:
        """Timer job: start the next round when one is due and none is in flight."""
        if self.in_flight is not None or self.worker is None:
            return
        if time.monotonic() < self.next_at:
            return
        self.next_at = 0.0
        job: Job | BuildJob | BuildReportsJob | None = self._next_erasure()
        if job is None and self.mode != "off":
            if self.mode == "community":
                job = self.reports.next_job(self.settings.privacy, self.epoch)
            else:
                job = self._next_job()
        if job is None:
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
            return
        self._start(job)

    def _start(self, job: Job | BuildJob | BuildReportsJob) -> None:
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

    def _next_job(self) -> Job | BuildJob | BuildReportsJob | None:
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
            elif isinstance(job, BuildReportsJob):
                if (
                    job.epoch == self.epoch
                    and self.mode == "community"
                    and isinstance(result, list)
                ):
                    self.reports.built(result)
                    self.next_at = 0.0  # the reports due go now
                else:
                    self.next_at = time.monotonic() + self.settings.sync.interval_secs
            else:
                self._record(job, result)

    def _record(self, job: Job, o: Outcome) -> None:
        if job.kind == "report":
            self.reports.record(job, o, self.settings.sync_endpoint)
            self._schedule(o)
            return
        if job.kind == "erasure":
            self._record_erasure(job, o)
            return
        db = self.storage.db
        t = now_ms()
        self._schedule(o)
        state, result = outbox.PENDING, f"{o.kind}: {o.detail}"
        if o.kind == "ok":
            a = o.body(cloud.Answer) or cloud.Answer()
            state = outbox.SENT
            result = f"ok {o.status}: {a.accepted} accepted, {a.duplicates} duplicates"
            if a.rejected:
                result += ", rejected " + ", ".join(
                    f"{k} {v}" for k, v in sorted(a.rejected.items())
                )
            self.counters["sync.events_sent"] += job.events
        elif o.kind == "quarantine":
            state = outbox.QUARANTINED
            self.counters["sync.quarantined"] += 1
            log.warning("sync_quarantined", batch=job.batch_id, status=o.status, detail=o.detail)
        elif o.kind == "split":
            self.max_events = max(1, job.events // 2)
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

    def _schedule(self, o: Outcome) -> None:
        """When the next round may start after an outcome: at once when more may wait
        (taken, refused for good, or to be split), after Retry-After, else next round."""
        if o.kind in ("ok", "quarantine", "split"):
            self.next_at = 0.0
        elif o.kind == "wait":
            self.next_at = time.monotonic() + o.retry_after
        else:
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
            self.counters[f"sync.{o.kind}"] += 1

    def _record_erasure(self, job: Job, o: Outcome) -> None:
        db = self.storage.db
        t = now_ms()
        self._schedule(o)
        if o.kind in ("quarantine", "split"):  # refused (a key revoked?): asked again next round
            self.next_at = time.monotonic() + self.settings.sync.interval_secs
        if o.kind == "ok":
            erased = o.body(cloud.Erased)
            deleted = erased.deleted if erased is not None else "some"
            result = f"ok {o.status}: the server erased {deleted} events"
        else:
            result = f"{o.kind}: {o.detail}"
        try:
            with db:
                if o.kind == "ok":
                    cloud_rights.erased(db, self._erasing)
                outbox.log(db, t, "erasure", self.settings.sync_endpoint, job.batch_id,
                           job.events, len(job.body), outbox.body_sha(job.body), result)  # fmt: skip
        except apsw.Error as e:
            log.warning("sync_record_failed", error=str(e))

    def expire(self, retention_days: int) -> None:
        """Maintenance: drop batch copies past retention."""
        with self.storage.db:
            outbox.expire(self.storage.db, retention_days, now_ms())
        self.reports.expire(retention_days)

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
            "cloud_erasure_pending": cloud_rights.erasure_count(db),
            "reports_waiting": self.reports.waiting() if self.mode == "community" else 0,
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
                if isinstance(job, Job):
                    self._record(job, outcome)
        self.stop.set()
        if self.worker is not None:
            self.worker.jobs.put(None)
            self.worker.join(timeout=1.0)
        self.wake_r.close()
        self._wake_w.close()
