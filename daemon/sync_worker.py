"""The sync worker thread: the only place the daemon does network work, and where
batches are built (on a read-only connection of its own), so the loop never waits for
either. It never writes the database: the loop records what it built or sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import random
import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import apsw
import structlog
from rkd.client.config import PrivacyConfig
from rkd.client.vocabulary import Vocabulary
from rkd.daemon import outbox, reports
from rkd.daemon.uplink import Outcome, Uplink, deliver

log = structlog.get_logger("rkd.daemon")


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


class BuildReportsJob(NamedTuple):
    """Build the community reports of the days that ended since ``since`` (read-only)."""

    since: dt.date
    today: dt.date
    products: tuple[str, ...]
    privacy: PrivacyConfig
    epoch: int


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
        self.jobs: queue.Queue[Job | BuildJob | BuildReportsJob | None] = queue.Queue()
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.rng = random.Random()
        self._db: apsw.Connection | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            result: Any
            try:
                if isinstance(job, BuildJob):
                    result = self._build(job)
                elif isinstance(job, BuildReportsJob):
                    result = self._build_reports(job)
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

    def _reader(self) -> apsw.Connection:
        if self._db is None:
            self._db = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
            self._db.setbusytimeout(1000)
        return self._db

    def _build(self, job: BuildJob) -> outbox.Batch | None:
        return outbox.build(self._reader(), job.cursor, job.since_ms, self.vocabulary_for,
                            job.max_events)  # fmt: skip

    def _build_reports(self, job: BuildReportsJob) -> list[reports.Built]:
        """A first report walks every stored event once (~1 s at 300k): not on the loop."""
        out = []
        for product in job.products:
            vocabulary = self.vocabulary_for(product)
            if vocabulary is not None:
                out += reports.build_due(self._reader(), vocabulary, job.since, job.today,
                                         job.privacy)  # fmt: skip
        return out
