"""Community reports, the sync's anonymous mode (issue 12): which days get a report,
when each is sent, and what is recorded once it went.

The report itself is built by :mod:`rkd.daemon.reports`; this is its schedule. A day
that ended after consent gets one report, built within the hour (and recorded before
it is sent, so a retry resends the same bytes), sent unsigned at a random time of the
following day; a time missed by more than a day is drawn again, never sent in a burst.
"""

from __future__ import annotations

import datetime as dt
import gzip
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Final

import apsw
import structlog
from rkd.client import cloud
from rkd.client.clock import DAY_MS, now_ms
from rkd.client.config import PrivacyConfig
from rkd.client.vocabulary import Vocabulary
from rkd.daemon import outbox, reports
from rkd.daemon.sync_worker import BuildReportsJob, Job
from rkd.daemon.uplink import Outcome

log = structlog.get_logger("rkd.daemon")

REPORT_CHECK_SECS: Final = 3600.0  # days that ended get their report within the hour
# Tests only: "1" sends a community report as soon as it is built, instead of at a
# random time of the following day (which keeps reports of one install unlinkable).
SEND_NOW_ENV: Final = "RK_TELEMETRY_REPORTS_SEND_NOW"
EPOCH: Final = dt.date(1970, 1, 1)


class CommunityReports:
    """The schedule of community reports, on the daemon's loop (it writes the database)."""

    def __init__(self, db: apsw.Connection, counters: Counter[str],
                 vocabulary_for: Callable[[str], Vocabulary | None],
                 products: Callable[[], list[str]], env: Mapping[str, str]) -> None:  # fmt: skip
        self.db, self.counters = db, counters
        self.vocabulary_for, self.products, self.env = vocabulary_for, products, env
        self.next_check = 0.0  # monotonic: when to look for days to report next
        self.rng = random.Random()
        self.on = False

    def configure(self, on: bool, endpoint: str) -> None:
        """Reports cover the days from the one consent was given on; consent and its
        withdrawal are recorded in the sync log."""
        was = outbox.meta(self.db, "community_since_day")
        with self.db:
            if on and not isinstance(was, int):
                outbox.set_meta(self.db, "community_since_day", now_ms() // DAY_MS)
                outbox.log(self.db, now_ms(), "consent", endpoint, None, 0, 0, None,
                           "community reports on: days from today on are reported")  # fmt: skip
            elif not on and isinstance(was, int):
                outbox.set_meta(self.db, "community_since_day", None)
                outbox.log(self.db, now_ms(), "consent", endpoint, None, 0, 0, None,
                           "community reports off: nothing more leaves")  # fmt: skip
        if on and not self.on:
            self.next_check = 0.0
        self.on = on

    def next_job(self, privacy: PrivacyConfig, epoch: int) -> Job | BuildReportsJob | None:
        """Hourly, the building of the reports of days that ended (on the worker); else
        the oldest report due."""
        if time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + REPORT_CHECK_SECS
            job = self._build_job(privacy, epoch)
            if job is not None:
                return job
        due = reports.pending(self.db, now_ms())
        if not due:
            return None
        product, day, body = due[0]
        return Job("report", cloud.REPORTS_PATH, f"{product} {day.isoformat()}",
                   gzip.compress(body, mtime=0), 1)  # fmt: skip

    def _build_job(self, privacy: PrivacyConfig, epoch: int) -> BuildReportsJob | None:
        since = outbox.meta(self.db, "community_since_day")
        if not isinstance(since, int):
            return None
        t = now_ms()
        with self.db:  # a report missed by more than a day gets a new time, not a burst
            self.db.execute(
                "UPDATE report_days SET send_at_ms = ? + abs(random()) % ? WHERE sent_ms IS NULL"
                " AND send_at_ms < ?", (t, DAY_MS, t - DAY_MS),
            )  # fmt: skip
        products = tuple(p for p in self.products() if self.vocabulary_for(p) is not None)
        return BuildReportsJob(EPOCH + dt.timedelta(days=since),
                               EPOCH + dt.timedelta(days=t // DAY_MS), products, privacy, epoch)  # fmt: skip

    def built(self, built: list[reports.Built]) -> None:
        """Record what the worker built (before anything is sent), each with its time."""
        t = now_ms()
        send_now = self.env.get(SEND_NOW_ENV) == "1"
        for b in built:
            at = t if send_now else reports.send_time(b.report.day, self.rng)
            try:
                reports.record_built(self.db, b, at, t)
            except apsw.ConstraintError:
                continue  # that day was recorded meanwhile: one report per day, ever
            self.counters["sync.reports_built"] += 1

    def record(self, job: Job, o: Outcome, endpoint: str) -> None:
        """A report is sent once: taken (202) or refused for good (a final 4xx or 413,
        logged), it is marked sent; otherwise it waits for the next round."""
        t = now_ms()
        product, day = job.batch_id.split(" ")
        result = f"{o.kind}: {o.detail}" if o.kind != "ok" else f"ok {o.status}"
        final = o.kind in ("ok", "quarantine", "split")  # a report cannot be split: refused
        if final:
            self.counters["sync.reports_sent" if o.kind == "ok" else "sync.reports_refused"] += 1
        try:
            if final:
                reports.record_sent(self.db, product, dt.date.fromisoformat(day), t)
            with self.db:
                outbox.log(self.db, t, "report", endpoint, None, 1, len(job.body),
                           outbox.body_sha(job.body), result)  # fmt: skip
        except apsw.Error as e:
            log.warning("sync_record_failed", error=str(e))

    def expire(self, retention_days: int) -> None:
        """Sent reports past retention go (see :func:`reports.prune_reports`)."""
        reports.prune_reports(
            self.db, EPOCH + dt.timedelta(days=now_ms() // DAY_MS - retention_days)
        )

    def waiting(self) -> int:
        return len(reports.pending(self.db, 1 << 62))
