"""The pending buffer and the one write that empties it.

Every event, from the socket or a spool file, waits in :attr:`Writer.pending` until
:meth:`Writer.flush` writes it together with the daemon's bookkeeping (counters,
sessions, feature counts, the spool ledger) in one transaction. A write that fails
keeps everything and backs off: soon at first, then every few seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Final

import apsw
import structlog
from rkd.client.clock import now_ms
from rkd.daemon.storage import Record, Storage
from rkd.daemon.synthesis import Synthesis

log = structlog.get_logger("rkd.daemon")

RETRY_MAX_SECS: Final = 5.0  # longest wait between write attempts while writes fail


class Writer:
    """Holds what waits to be written; writes it all or nothing."""

    def __init__(self, storage: Storage, counters: Counter[str], synthesis: Synthesis,
                 on_written: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.storage = storage
        # Told after each write that left nothing pending: every event taken so far is
        # stored or was rejected (the clients' confirmations move on).
        self.on_written = on_written
        self.counters = counters
        self.synthesis = synthesis
        self.pending: list[Record] = []  # stamped events not yet written, oldest first
        # Spool files whose events are all in ``pending``: their ledger rows go in the same
        # write, and each one's callback (removing the file) runs once it is stored.
        self.ledger: list[tuple[str, int, Callable[[], None]]] = []
        self.events_stored = storage.count_events()
        last = storage.meta("last_flush_ms")
        self.last_flush_ms: int | None = last if isinstance(last, int) else None
        self.failures = 0
        self.retry_at = 0.0
        self.flush_soon = False  # an error event is waiting: write it at once (spec §4.2)
        self._written: dict[str, int] = dict(counters)

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def _idle(self) -> bool:
        s = self.synthesis
        return not (self.pending or self.ledger or s.touched or s.features.changed
                    or self.counters != self._written)  # fmt: skip

    def flush(self, force: bool = False) -> bool:
        """Write the pending buffer and the bookkeeping; on failure keep them and back off.
        Without ``force``, a write is not tried again before its back-off has passed."""
        self.flush_soon = False
        if self._idle():
            self.on_written()
            return True
        if not force and self.failures and time.monotonic() < self.retry_at:
            return False
        t = now_ms()
        s = self.synthesis
        try:
            n = self.storage.write(
                self.pending, self.counters, t, [(name, k) for name, k, _ in self.ledger],
                s.touched, s.features.changed,
            )  # fmt: skip
        except apsw.Error as e:
            self.failures += 1
            # Retry soon, then every few seconds: a full disk or a held lock costs one
            # cheap attempt per interval, and recovery is noticed within RETRY_MAX_SECS.
            self.retry_at = time.monotonic() + min(RETRY_MAX_SECS, 0.25 * 2**self.failures)
            self.counters["write_errors"] += 1
            if self.failures == 1:
                log.error("write_failed", error=str(e)[:200], pending=len(self.pending))
            return False
        if self.failures:
            log.info("write_recovered", after_failures=self.failures)
            self.failures = 0
        self.pending.clear()
        self.on_written()
        done, self.ledger = self.ledger, []
        s.written()
        if s.features.untracked:
            self.counters["features.untracked"] += s.features.untracked
            s.features.untracked = 0
        if self.storage.capped_sources:
            self.counters["sources.capped"] += self.storage.capped_sources
            self.storage.capped_sources = 0
        self._written = dict(self.counters)
        self.events_stored += n
        self.last_flush_ms = t
        for name, _, callback in done:
            try:
                callback()  # remove (or quarantine) the spool file just stored
            except OSError as e:  # stored all the same; the ledger drops it on the next scan
                self.counters["spool.remove_errors"] += 1
                log.warning("spool_file_not_removed", file=name, error=e.strerror)
        return True

    def pruned(self, removed: int) -> None:
        self.events_stored = max(0, self.events_stored - removed)  # no COUNT(*) per step
        self.counters["pruned"] += removed
        log.info("pruned", events=removed)

    def forget(self) -> None:
        """After `rkd delete`: nothing held, nothing stored."""
        self.pending.clear()
        self.ledger.clear()
        self.counters.clear()
        self._written = {}
        self.events_stored = 0
        self.last_flush_ms = None
