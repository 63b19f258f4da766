"""Ingesting the spool: what applications wrote to disk while no daemon took frames.

Every frame of a spool file takes the same path as a frame from the socket (the
daemon's intake: decode, gates, firewall, dedup, stamp, pending) and is written by the
same write. A file is read a slice at a time between socket turns (:meth:`SpoolIngest.step`
has a deadline), its ledger row goes in the write that stores its last events, and the
file is removed once that write succeeded. Copies of events the daemon holds already
are dropped by the dedup stage, so a file read again after a crash stores nothing twice.

A file that cannot be ingested (not ours, not a regular file, damaged, too big, or
anything unexpected while reading it) is quarantined: renamed ``*.quarantined``,
counted, shown in `rkd status`, never retried and never in the way of the files behind
it. Quarantined files hold raw frames, so they are erased by `rkd delete` and removed
after :data:`QUARANTINE_DAYS`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

import apsw
import structlog
from rkd.client.clock import utc_now
from rkd.client.spool import (
    MAGIC,
    SUFFIX,
    SpoolDamaged,
    SpoolFileRefused,
    frame_at,
    read_spool,
    read_spool_file,
    spool_files,
)
from rkd.daemon.pipeline import Rejected, decode
from rkd.daemon.storage import Storage, StorageError, erase_folder_files, read_only_event_ids
from rkd.daemon.writer import Writer

log = structlog.get_logger("rkd.daemon")

STALE_TMP_SECS: Final = 3600.0
QUARANTINE_SUFFIX: Final = ".quarantined"
QUARANTINE_DAYS: Final = 7
CHECK_EVERY: Final = 64  # frames between looks at the clock

Intake = Callable[..., int]


class _File:
    """A spool file being ingested: where the next frame starts."""

    def __init__(self, path: Path, data: bytes, written: dt.datetime | None = None) -> None:
        self.path, self.data = path, data
        self.written = written  # when it was written, by the kernel's clock (the consent gate)
        self.pos = len(MAGIC)
        self.accepted = 0
        self.damaged = not data.startswith(MAGIC)


class SpoolIngest:
    """Feeds spool files through the daemon's intake, a deadline at a time."""

    def __init__(self, spool_dir: Path, storage: Storage, writer: Writer,
                 counters: Counter[str], intake: Intake) -> None:  # fmt: skip
        self.spool_dir = spool_dir
        self.storage, self.writer, self.counters, self.intake = storage, writer, counters, intake
        self.batch_size = 100  # the daemon sets its own
        self._file: _File | None = None
        self._queue: list[Path] = []
        self._inflight: set[str] = set()  # read whole, waiting for their write
        self._logged: set[str] = set()

    @property
    def busy(self) -> bool:
        """A file is half read, or more are queued."""
        return self._file is not None or bool(self._queue)

    def step(self, deadline: float) -> bool:
        """Ingest until ``deadline`` (monotonic); True while more is left to do."""
        if not self._queue and self._file is None:
            self._queue = [p for p in spool_files(self.spool_dir) if p.name not in self._inflight]
        while time.monotonic() < deadline:
            if self.writer.failing:
                return True  # the database cannot be written now: read on when it can
            if self._file is None:
                if not self._queue:
                    return False
                self._file = self._open(self._queue.pop(0))
                continue
            f = self._file
            try:
                if self._feed(f, deadline):
                    self._finish(f)
                    self._file = None
            except Exception:  # a file must never stop the ones behind it, nor the daemon
                log.exception("spool_file_failed")
                self.counters["internal_error.spool"] += 1
                self._quarantine(f.path, "internal_error")
                self._file = None
        return True

    def _open(self, path: Path) -> _File | None:
        if self.storage.ledger_has(path.name):
            path.unlink(missing_ok=True)  # stored before a crash; only the unlink was lost
            return None
        try:
            data = read_spool_file(path)
            mtime = os.stat(path, follow_symlinks=False).st_mtime
            return _File(path, data, dt.datetime.fromtimestamp(mtime, dt.UTC))
        except FileNotFoundError:
            return None  # gone meanwhile (`rkd delete`)
        except SpoolFileRefused as e:
            self._quarantine(path, e.reason)
        except OSError as e:
            self._quarantine(path, f"unreadable ({e.strerror})")
        return None

    def _feed(self, f: _File, deadline: float) -> bool:
        """Frames through the intake until the file ends (True) or the deadline passes."""
        data, intake, written = f.data, self.intake, f.written
        now = utc_now()
        n = 0
        while not f.damaged:
            try:
                at = frame_at(data, f.pos)
            except SpoolDamaged:
                f.damaged = True
                break
            if at is None:
                break
            start, f.pos = at
            try:
                if intake(data[start : f.pos], "spool", now, written):
                    f.accepted += 1
            except Exception:  # one bad frame costs itself, not the frames behind it
                self.counters["internal_error.spool_frame"] += 1
                if "spool_frame" not in self._logged:
                    self._logged.add("spool_frame")
                    log.exception("internal_error", where="spool_frame")
            n += 1
            if n % CHECK_EVERY == 0:
                if len(self.writer.pending) >= self.batch_size and not self.writer.flush():
                    return False
                if time.monotonic() >= deadline:
                    return False
        return True

    def _finish(self, f: _File) -> None:
        name = f.path.name
        self.counters["spool.events"] += f.accepted
        if f.damaged:
            self.counters["spool.damaged_files"] += 1
        self._inflight.add(name)

        def stored() -> None:
            self._inflight.discard(name)
            if f.damaged:  # what could be read is stored; the file is kept for inspection
                self._quarantine(f.path, "damaged")
            else:
                f.path.unlink(missing_ok=True)

        self.writer.ledger.append((name, f.accepted, stored))
        self.writer.flush_soon = True  # write it now: the file goes once its events are stored

    def _quarantine(self, path: Path, reason: str) -> None:
        self.counters["spool.quarantined"] += 1
        log.warning("spool_file_quarantined", file=path.name, reason=reason)
        with contextlib.suppress(OSError):
            os.rename(path, path.with_name(path.name + QUARANTINE_SUFFIX))

    def sweep(self) -> None:
        """Remove temporary files a crashed writer left (over an hour old) and quarantined
        files past :data:`QUARANTINE_DAYS`. Only regular files of ours, never a link."""
        try:
            entries = list(os.scandir(self.spool_dir))
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for e in entries:
            if e.name.endswith(".tmp"):
                limit = now - STALE_TMP_SECS
            elif e.name.endswith(QUARANTINE_SUFFIX):
                limit = now - QUARANTINE_DAYS * 86_400
            else:
                continue
            try:
                st = e.stat(follow_symlinks=False)  # renamed or removed meanwhile: skip it
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mtime < limit:
                    os.unlink(e.path)
            except FileNotFoundError:
                continue

    def quarantined(self) -> int:
        """How many quarantined files are kept."""
        try:
            return sum(1 for n in os.listdir(self.spool_dir) if n.endswith(QUARANTINE_SUFFIX))
        except OSError:
            return 0

    def erase(self) -> int:
        """Remove every file in the spool folder: complete, temporary and quarantined
        (`rkd delete`). Returns how many went."""
        n = erase_folder_files(self.spool_dir)
        self.forget()
        return n

    def forget(self) -> None:
        """After `rkd delete` (which removed the files): nothing half read, nothing queued."""
        self._file = None
        self._queue.clear()
        self._inflight.clear()


def spooled_event_ids(spool_dir: Path) -> set[bytes]:
    """The ids (16 bytes) of the events in the spool folder: in complete spool files and
    in quarantined ones that can still be read (a file that is not a regular file of
    ours is never read). For `rkd delete`, which counts what it erases: frames that do
    not decode are not events, and an event spooled twice is one event."""
    ids: set[bytes] = set()
    try:
        names = os.listdir(spool_dir)
    except (FileNotFoundError, NotADirectoryError):
        return ids
    for name in names:
        if not name.endswith((SUFFIX, SUFFIX + QUARANTINE_SUFFIX)):
            continue
        try:
            frames, _ = read_spool(read_spool_file(spool_dir / name))
        except (OSError, SpoolFileRefused):
            continue
        for frame in frames:
            with contextlib.suppress(Rejected):
                ids.add(decode(frame).event_id.bytes)
    return ids


def spooled_not_stored(spool_dir: Path, db_path: Path) -> int:
    """How many events wait in spool files that are not (yet) in the database (read
    read-only): what an export cannot include, what a delete will erase besides."""
    spooled = spooled_event_ids(spool_dir)
    if spooled:
        with contextlib.suppress(StorageError, apsw.Error):
            spooled.difference_update(read_only_event_ids(db_path))
    return len(spooled)
