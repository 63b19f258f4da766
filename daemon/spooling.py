"""Ingesting the spool: what applications wrote to disk while no daemon took frames.

A mixin of :class:`~rkd.daemon.service.Daemon` (state declared in
:class:`~rkd.daemon.state.DaemonState`). Each complete spool file is stored exactly
once: its events and its ledger row go in one transaction, and copies of events already
received over the socket are dropped by id first.
"""

from __future__ import annotations

import os
import time
from typing import Final

from rkd.client.clock import utc_now
from rkd.client.schema import Envelope
from rkd.client.spool import read_spool, spool_files
from rkd.daemon.derived import SESSION_TYPES
from rkd.daemon.state import DaemonState
from rkd.daemon.storage import Record

STALE_TMP_SECS: Final = 3600.0
_LOW64: Final = (1 << 64) - 1


class SpoolMixin(DaemonState):
    """Stores spool files once each and removes them."""

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
            items, duplicates = self._fresh(
                [i for f in frames if (i := self.ingest(f, now)) is not None]
            )
            del frames  # a file holds up to ~24,000 frames: not kept while they are written
            if not self.flush():
                return total  # the file stays; retried on the next scan
            before = self.features.snapshot()
            records: list[Record] = []
            for envelope, ts_ms in items:
                self._stamp(envelope, ts_ms, records)
            if not self._write(records, (path.name, len(items))):
                # The file stays and is read again: its uses are counted again then, and
                # the session boundaries stamped into this batch wait in the buffer.
                self.features.restore(before)
                self.pending += [r for r in records if _event_type(r) in SESSION_TYPES]
                return total
            self._remember(items)
            self.counters["spool.events"] += len(items)
            self.counters["spool.duplicates"] += duplicates
            self._dirty = True
            total += len(items)
            path.unlink(missing_ok=True)
        return total

    def _fresh(self, items: list[tuple[Envelope, int]]) -> tuple[list[tuple[Envelope, int]], int]:
        """Spooled copies of events already received over the socket are dropped here:
        a client spools what the daemon did not confirm in time, which it may have got.
        (An original that arrives after its copy is dropped in ``_accept``.) Returns the
        fresh items and how many were dropped; nothing is remembered until the file is
        written (:meth:`_remember`): a file that failed to write must not look like a
        copy of itself when it is read again."""
        fresh = []
        seen = self._recent.among({item[0].event_id.int & _LOW64 for item in items})
        for item in items:
            key = item[0].event_id.int & _LOW64
            if key not in seen:
                seen.add(key)  # (and a second copy within the file is a duplicate too)
                fresh.append(item)
        return fresh, len(items) - len(fresh)

    def _remember(self, items: list[tuple[Envelope, int]]) -> None:
        """Ids of events just stored from the spool: later copies and late originals go."""
        for envelope, _ in items:
            key = envelope.event_id.int & _LOW64
            self._recent.add(key)
            self._spooled.add(key)  # in case the original is still on its way

    def _remove_stale_tmp(self) -> None:
        try:
            entries = list(os.scandir(self.settings.spool_dir))
        except FileNotFoundError:
            return
        limit = time.time() - STALE_TMP_SECS
        for e in entries:
            if e.name.endswith(".tmp") and e.stat().st_mtime < limit:
                os.unlink(e.path)


def _event_type(record: Record) -> str:
    return record.envelope.payload.event_type  # type: ignore[attr-defined, no-any-return]
