"""Group commit: accepted batches are written together, and each request learns only
after the write succeeded.

Requests put their rows on a queue and wait. One writer task takes whatever is queued
and what arrives within ``window_secs`` of the first (past the window, for at most one
more, the requests still being read and decoded: :meth:`GroupCommit.arriving`), up to
``max_rows``; then in one worker thread
drops the batches the warehouse already holds (and a second copy inside the group),
then inserts the rest in one statement. Every waiter then gets its answer: how many
events were new and how many duplicates, or the write's exception (the app answers
503 and the sender retries the same batch id, which makes the retry safe).

An insert that fails may have written part of the group (the raw part and some views'
parts, migration 3): it is sent again with its deduplication token, at once and then
before every later group until it succeeds, so the tables that missed the group get it
and the others skip it. Until then no other group is written (its senders hear 503 and
retry), and a sender's retry of one of its batches is a duplicate once it is finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from rkd.server.metrics import Metrics
from rkd.server.warehouse import Warehouse

MAX_QUEUE: Final = 1024  # waiting batches; beyond it the app answers 503
RETRY_PAUSES: Final = (0.05, 0.25)  # before each same-token retry of a failed insert, at once
UNFINISHED_SECS: Final = 120.0  # a failed group is sent again until it is this old, then given up
UNFINISHED_BYTES: Final = 64 << 20  # failed groups kept to be sent again (the oldest go first)

log = structlog.get_logger("rkd.server")


@dataclass
class EventsInsert:
    """A group commit's events insert and its deduplication token: kept, and sent again
    with the token, while it fails (it may have written part of its tables)."""

    token: str
    blocks: list[bytes]
    since: float
    size: int


@dataclass
class Pending:
    table: str  # "events" (deduplicated by batch id) or "reports" (no id, by design)
    batch_id: str
    rows: bytes  # events: an Arrow IPC stream (rows.event_block); reports: JSONEachRow lines
    n_rows: int
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    def __init__(self, warehouse: Warehouse, metrics: Metrics, window_secs: float = 0.02,
                 max_rows: int = 50_000) -> None:  # fmt: skip
        self.warehouse, self.metrics = warehouse, metrics
        self.window_secs, self.max_rows = window_secs, max_rows
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(MAX_QUEUE)
        # One thread: every warehouse call is serialized, so check-then-insert is atomic.
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="warehouse")
        self._task: asyncio.Task[None] | None = None
        self.coming = 0  # requests inside arriving(): their rows are on the way
        self.unfinished: list[EventsInsert] = []  # failed inserts, oldest first (writer thread)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around a request's read and decode: a writer whose window ran out waits for it
        (one more window at most). An insert costs the embedded engine ~30-45 ms of CPU
        whatever its size (a part per table and per view), so one group of what is in
        flight costs less than two; a request refused meanwhile costs only the wait.

        Leave it before ``submit`` with no ``await`` between: the writer must never see
        the request neither coming nor queued."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, deadline_secs: float = 10.0) -> None:
        """Write what is queued (bounded by ``deadline_secs``), then stop."""
        end = time.monotonic() + deadline_secs
        while not self.queue.empty() and time.monotonic() < end:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.pool.shutdown(wait=True)

    async def submit(self, table: str, batch_id: str, rows: bytes, n_rows: int) -> bool:
        """Wait until the rows are written; False if the batch was there already (a retry)."""
        pending = Pending(table, batch_id, rows, n_rows)
        self.queue.put_nowait(pending)  # QueueFull: the app answers 503
        return await pending.done

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run another warehouse call on the writer's thread (erasure, access)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _run(self) -> None:
        while True:
            group = await self._gather()
            started = time.perf_counter()
            try:
                new = await self.call(self._write, group)
            except Exception as e:  # the write failed: every waiter hears it, none waits
                for p in group:
                    if not p.done.done():
                        p.done.set_exception(e)
                continue
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self.metrics.commit_batches.observe(len(group))
            for p in group:
                if not p.done.done():
                    p.done.set_result(p.batch_id in new and id(p) in new[p.batch_id])

    async def _gather(self) -> list[Pending]:
        """Whatever is queued, and what arrives within the window; past it, the requests
        still arriving (read or decoded) for at most one more window."""
        group = [await self.queue.get()]
        rows = group[0].n_rows
        end, extended = time.monotonic() + self.window_secs, False
        while rows < self.max_rows:
            if self.queue.empty():
                left = end - time.monotonic()
                if left <= 0 and self.coming and not extended:
                    end, extended = end + self.window_secs, True
                    continue
                if left <= 0:
                    break
                try:
                    p = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    continue
            else:
                p = self.queue.get_nowait()
            group.append(p)
            rows += p.n_rows
        return group

    def _write(self, group: list[Pending]) -> dict[str, set[int]]:
        """Insert the group's new batches; batch id -> the id() of the copy written."""
        self._finish()  # raises while an earlier group's insert cannot be finished
        events = [p for p in group if p.table == "events"]
        known = self.warehouse.known_batches(sorted({p.batch_id for p in events}))
        new: dict[str, set[int]] = {}
        blocks: list[bytes] = []
        for p in events:
            if p.batch_id in known or p.batch_id in new:
                continue
            new[p.batch_id] = {id(p)}
            blocks.append(p.rows)
        reports = [p for p in group if p.table == "reports"]
        for p in reports:
            new[p.batch_id] = {id(p)}
        if blocks:
            self._insert(EventsInsert(uuid.uuid4().hex, blocks, time.monotonic(),
                                    sum(map(len, blocks))))  # fmt: skip
        self.warehouse.insert_lines("reports", [p.rows for p in reports])
        return new

    def _insert(self, group: EventsInsert) -> None:
        """Insert ``group``, sending it again with its token after a failure; if it still
        fails, keep it for :meth:`_finish` and raise."""
        for pause in (*RETRY_PAUSES, None):
            try:
                self.warehouse.insert_arrow("events", group.blocks, group.token)
                return
            except Exception:
                if pause is None:
                    self._keep(group)
                    raise
                time.sleep(pause)

    def _keep(self, group: EventsInsert) -> None:
        self.unfinished.append(group)
        self.metrics.write_retries.labels("failed").inc()
        while sum(g.size for g in self.unfinished) > UNFINISHED_BYTES and len(self.unfinished) > 1:
            self._abandon(self.unfinished.pop(0), "too many failed groups kept")

    def _finish(self) -> None:
        """Send the failed groups again, oldest first; raise the first error, unless that
        group is UNFINISHED_SECS old: then give it up (its rollups may lack it)."""
        while self.unfinished:
            group = self.unfinished[0]
            try:
                self.warehouse.insert_arrow("events", group.blocks, group.token)
            except Exception:
                if time.monotonic() - group.since < UNFINISHED_SECS:
                    raise
                self._abandon(self.unfinished.pop(0), "still failing")
                continue
            self.unfinished.pop(0)
            self.metrics.write_retries.labels("written").inc()

    def _abandon(self, group: EventsInsert, why: str) -> None:
        self.metrics.write_retries.labels("abandoned").inc()
        log.error("group_commit_abandoned", why=why, bytes=group.size,
                  note="its raw rows may be stored and some rollups lack them")  # fmt: skip
