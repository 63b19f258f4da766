"""The database: schema and migrations, the daemon's writes, and read-only readers.

Only the daemon writes (the readers below open the file read-only). Keys are SQLite's
own increasing rowids: a random uuid4 as the primary key cuts insert throughput about
4x, so the envelope's ``event_id`` is stored as a 16-byte column with no index. Every
write is one ``with db:`` transaction with bound parameters.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import apsw
import msgspec
from rkd.client.clock import DAY_MS, iso_ms, now_ms
from rkd.client.config import DB_FILENAME
from rkd.client.files import UnsafePath, ensure_private_dir, open_private_file
from rkd.client.schema import Envelope, Source
from rkd.daemon import aggregates, cloud_rights, derived, outbox, reports
from rkd.daemon.seen import key_of

# Index i holds the statements that take user_version i to i + 1. Never edit a step
# that has shipped: add one.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE sources(
        id INTEGER PRIMARY KEY,
        product TEXT NOT NULL, version TEXT NOT NULL, tier TEXT NOT NULL,
        os TEXT NOT NULL, arch TEXT NOT NULL, python_version TEXT NOT NULL,
        UNIQUE(product, version, tier, os, arch, python_version));
    CREATE TABLE sessions(
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        started_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        events INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE events(
        id INTEGER PRIMARY KEY,
        event_id BLOB NOT NULL,
        event_type TEXT NOT NULL,
        schema_version TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        sequence INTEGER NOT NULL,
        source_id INTEGER NOT NULL REFERENCES sources(id),
        payload TEXT NOT NULL);
    CREATE INDEX events_ts ON events(ts_ms);
    CREATE TABLE counters(reason TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE meta(key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
    CREATE TABLE spool_ledger(
        name TEXT PRIMARY KEY, events INTEGER NOT NULL, ingested_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    aggregates.MIGRATION,  # daily aggregates, filled from the events already stored
    derived.MIGRATION,  # session ends and feature use counts
    # Step 4: each event's undeclared fields (see daemon/vocabularies.py; NULL: all
    # declared), and the vocabularies learnt from clients.
    """
    ALTER TABLE events ADD COLUMN undeclared TEXT;
    CREATE TABLE vocabularies(
        product TEXT PRIMARY KEY, version INTEGER NOT NULL, body BLOB NOT NULL,
        learnt_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    outbox.MIGRATION,  # step 5: the sync outbox (batches, log, expired-unsynced trigger)
    reports.REPORT_TABLES_SQL,  # step 6: community reports, their state and ε ledger
    cloud_rights.MIGRATION,  # step 7: uploaded session ids, and those to erase in the cloud
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


MAX_COUNT: Final = (1 << 63) - 1  # SQLite's largest integer: a counter saturates there
MAX_SOURCES: Final = 1000  # distinct sources kept; more are stored as version "other"
# The size cap never prunes the newest events: when the database stays over the cap
# with only these left, what fills it is not events (logged; `rkd delete` empties it).
MIN_KEEP_EVENTS: Final = 100
SQLITE_HEADER: Final = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database
# The WAL's share of the size cap: it is checkpointed (and, after a checkpoint, cut back
# to this) at a tenth of the cap, at most SQLite's default of 1000 pages (4 MiB).
WAL_SHARE: Final = 0.1
WAL_MAX_PAGES: Final = 1000
PRUNE_BATCH: Final = 1000  # events per prune step: one short transaction; ingestion goes on between


class StorageError(Exception):
    """The database cannot be used. The message is one line."""


class SchemaTooNew(StorageError):
    """The database was written by a newer rkd: only an upgrade helps."""


class CorruptDatabase(StorageError):
    """The file is not a usable SQLite database. It is moved aside, never deleted."""


class NotOurDatabase(StorageError):
    """A configured database path holds some other file: refused, never touched.

    Permanent, like SchemaTooNew: restarting cannot help, the configuration must change.
    """


class UnsafeDatabasePath(NotOurDatabase):
    """The database path (or its WAL or SHM) is a symlink, not a regular file, or
    another user's file: refused, never followed."""


class SessionRow(msgspec.Struct, kw_only=True, gc=False):
    """A session as the daemon tracks it (scalars only: it cannot be part of a cycle)."""

    rowid: int | None  # None until written
    uuid: str
    started_ms: int
    last_ms: int
    events: int
    ended_ms: int | None = None  # set once its session_ended is due


class Record(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One validated, stamped event waiting to be written.

    ``gc=False``: it holds an envelope and a SessionRow, neither of which can refer back
    to it, so the collector need not track the thousands a busy daemon holds.
    """

    envelope: Envelope
    session: SessionRow
    sequence: int
    ts_ms: int


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its WAL and SHM) out of the way; return the new name.

    Nothing is deleted: the user (or a recovery tool) may still get data out of it, and
    a name already taken (two recoveries in one second) is never replaced.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(os.path.lexists(f"{target}{suffix}") for suffix in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


def remove_corrupt_copies(path: Path) -> int:
    """Remove the damaged databases moved aside beside ``path`` (``<name>.corrupt-*`` and
    their WAL/SHM); return how many files went. For `rkd delete`: they hold data too."""
    n = 0
    for p in path.parent.glob(f"{glob.escape(path.name)}.corrupt-*"):
        with contextlib.suppress(FileNotFoundError):
            if p.is_symlink() or p.is_file():
                p.unlink()
                n += 1
    return n


def create_private_file(path: Path) -> None:
    """Make sure ``path`` is a database file rkd may use: 0600, ours, SQLite's or empty.

    A missing folder is created 0700 (an existing one is the user's choice when the path
    came from ``RK_TELEMETRY_PATH``, so it is left as it is). The file and any WAL or
    SHM beside it must be regular files of ours, never symlinks (UnsafePath otherwise);
    a loose mode is tightened (WAL and SHM files inherit the database's). A non-empty
    file without SQLite's header, at a name other than rkd's own, raises NotOurDatabase:
    it is someone's data, not a damaged database to move aside.
    """
    if not os.path.lexists(path.parent):
        ensure_private_dir(path.parent)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if os.path.lexists(side):
            os.close(open_private_file(side))
    fd = open_private_file(path, os.O_RDWR | os.O_CREAT)
    try:
        head = os.pread(fd, len(SQLITE_HEADER), 0)
    finally:
        os.close(fd)
    if head and head != SQLITE_HEADER[: len(head)] and path.name != DB_FILENAME:
        raise NotOurDatabase(
            f"{path}: exists and is not an SQLite database; refusing to replace it"
            " (point RK_TELEMETRY_PATH or telemetry.db_path elsewhere)"
        )


class Storage:
    """The daemon's read-write handle on the database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            create_private_file(path)
            self.db = apsw.Connection(str(path))
            # Another writer (an offline `rkd` command, a test) may hold the lock briefly:
            # wait a little rather than fail at once; longer waits fail and are retried.
            self.db.setbusytimeout(1000)
            # secure_delete: deleted rows are overwritten, not left readable in free pages
            # (after `rkd delete` and retention, the data must be gone from the file).
            # One statement per execute(): apsw runs a multi-statement string only as far
            # as its cursor is read, and journal_mode returns a row (the rest never ran).
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "secure_delete=ON"):
                self.db.execute(f"PRAGMA {pragma}").fetchall()
            self._migrate()
        except (apsw.NotADBError, apsw.CorruptError) as e:
            with contextlib.suppress(Exception):
                self.db.close()
            raise CorruptDatabase(f"{path}: the database is damaged: {e}") from None
        except apsw.Error as e:
            raise StorageError(f"{path}: cannot use the database: {e}") from None
        except UnsafePath as e:
            raise UnsafeDatabasePath(f"unsafe database path: {e}") from None
        except OSError as e:
            raise StorageError(f"{path}: {e.strerror}") from None
        self._sources: dict[Source, int] = {}
        self._n_sources: int | None = None
        self.erased_fully = True  # the last delete_all's final checkpoint completed
        self.capped_sources = 0  # new sources stored as version "other" (the cap was reached)
        self.cloud_erasure = 0  # uploaded sessions the last delete_all asked the server to erase
        # Envelope -> its undeclared fields (the events.undeclared tag); set by the daemon.
        self.tagger: Callable[[Envelope], str | None] = lambda e: None

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").get
        assert isinstance(version, int)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path}: database schema {version} is newer than this rkd "
                f"understands ({SCHEMA_VERSION}); upgrade rkd"
            )
        with self.db:
            for step in range(version, SCHEMA_VERSION):
                self.db.execute(MIGRATIONS[step])
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    # -- reads the daemon needs ---------------------------------------------------------

    def count_events(self) -> int:
        n = self.db.execute("SELECT count(*) FROM events").get
        return int(n) if isinstance(n, int) else 0

    def counters(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.db.execute("SELECT reason, n FROM counters")}

    def meta(self, key: str) -> Any:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).get

    def set_meta(self, key: str, value: Any) -> None:
        """Set (or, with None, remove) one bookkeeping value."""
        with self.db:
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value)
                )

    def learnt_vocabularies(self) -> list[bytes]:
        return [bytes(b) for (b,) in self.db.execute("SELECT body FROM vocabularies")]

    def save_vocabulary(self, product: str, version: int, body: bytes, at_ms: int) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO vocabularies(product, version, body, learnt_ms)"
                " VALUES (?, ?, ?, ?)",
                (product, version, body, at_ms),
            )

    def last_session(self) -> SessionRow | None:
        row = self.db.execute(
            "SELECT id, uuid, started_ms, last_ms, events, ended_ms FROM sessions"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return SessionRow(
            rowid=row[0], uuid=row[1], started_ms=row[2], last_ms=row[3], events=row[4],
            ended_ms=row[5],
        )  # fmt: skip

    def feature_uses(self) -> dict[derived.FeatureKey, int]:
        return derived.load_uses(self.db)

    def event_ids(self) -> Iterator[bytes]:
        """Every stored event's id (16 bytes), streamed in storage order."""
        for (b,) in self.db.execute("SELECT event_id FROM events"):
            yield b

    def event_keys_after(self, rowid: int, limit: int) -> tuple[int | None, list[int]]:
        """Dedup keys of up to ``limit`` events stored after ``rowid``, and the rowid to
        go on from (None: there are no more)."""
        rows: list[tuple[int, bytes]] = self.db.execute(  # type: ignore[assignment]
            "SELECT id, event_id FROM events WHERE id > ? ORDER BY id LIMIT ?", (rowid, limit)
        ).fetchall()
        keys = [key_of(b) for _, b in rows]
        return (rows[-1][0] if len(rows) == limit else None), keys

    def checkpoint(self, wait_secs: float = 0.0) -> bool:
        """Copy the WAL into the database and truncate it: what was deleted is gone from
        both files (with ``secure_delete`` the freed pages were overwritten). A reader
        holding an older snapshot blocks it; it is tried again for ``wait_secs``. False
        when it could not complete (SQLite reports that, it does not raise)."""
        deadline = time.monotonic() + wait_secs
        while True:
            row = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not row or not row[0]:  # (busy, wal pages, checkpointed pages)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def disk_bytes(self) -> int:
        """Bytes the database takes on disk: the file and its WAL (what the cap bounds).
        Two stat calls: cheap enough to check every few seconds."""
        total = 0
        for p in (str(self.path), f"{self.path}-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(p).st_size
        return total

    def limit_wal(self, max_db_size_mb: float) -> None:
        """Keep the WAL to WAL_SHARE of the cap: checkpoint that often, and truncate the
        file back to that size after each checkpoint (it otherwise keeps its peak size)."""
        page = self.db.execute("PRAGMA page_size").get
        assert isinstance(page, int)
        limit = int(max_db_size_mb * 1024 * 1024 * WAL_SHARE)
        pages = max(16, min(WAL_MAX_PAGES, limit // page))
        self.db.execute(f"PRAGMA wal_autocheckpoint={pages}")
        self.db.execute(f"PRAGMA journal_size_limit={pages * page}")

    def ledger_has(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM spool_ledger WHERE name = ?", (name,)).get is not None

    # -- writes --------------------------------------------------------------------------

    def _source_id(self, src: Source) -> int:
        sid = self._sources.get(src)
        if sid is not None:
            return sid
        if self._n_sources is None:
            n = self.db.execute("SELECT count(*) FROM sources").get
            self._n_sources = n if isinstance(n, int) else 0
        if len(self._sources) >= MAX_SOURCES * 2:
            self._sources.clear()
        values = (src.product, src.version, src.tier, src.os, src.arch, src.python_version)
        find = ("SELECT id FROM sources WHERE product=? AND version=? AND tier=? AND os=?"
                " AND arch=? AND python_version=?")  # fmt: skip
        sid = self.db.execute(find, values).get
        if sid is None and self._n_sources >= MAX_SOURCES:
            # Every distinct (product, version, platform) is a row: a process inventing
            # versions would grow the table without end. Past the cap, new ones are
            # stored under the version "other" (counted as sources.capped).
            self.capped_sources += 1
            values = (src.product, "other", *values[2:])
            sid = self.db.execute(find, values).get
        if sid is None:
            self.db.execute(
                "INSERT INTO sources(product, version, tier, os, arch, python_version)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
            sid = self.db.last_insert_rowid()
            self._n_sources += 1
        assert isinstance(sid, int)
        self._sources[src] = sid
        return sid

    def write(
        self,
        records: Iterable[Record],
        counters: Mapping[str, int],
        flushed_ms: int,
        ledger: Iterable[tuple[str, int]] = (),
        touched: Iterable[SessionRow] = (),
        features: Mapping[derived.FeatureKey, tuple[int, int]] | None = None,
    ) -> int:
        """Write ``records`` and the daemon's bookkeeping in one transaction; return count.

        ``touched`` are sessions that changed without a record in this batch (one that
        ended quietly); ``features`` the feature use counts that moved; ``ledger`` the
        spool files (name, events) whose events are stored with this batch.
        """
        encode = msgspec.json.encode
        tag = self.tagger
        n = 0
        sessions: dict[int | None, SessionRow] = {}
        records = list(records)
        fresh = {id(r.session): r.session for r in records if r.session.rowid is None}
        try:
            with self.db:
                for s in fresh.values():
                    self.db.execute(
                        "INSERT INTO sessions(uuid, started_ms, last_ms) VALUES (?, ?, ?)",
                        (s.uuid, s.started_ms, s.last_ms),
                    )
                    s.rowid = self.db.last_insert_rowid()
                rows = []
                source, sid = None, 0
                for r in records:
                    e = r.envelope
                    if e.source is not source:  # the same Source object, batch after batch
                        source, sid = e.source, self._source_id(e.source)
                    rows.append((
                        e.event_id.bytes, e.payload.event_type, e.schema_version,  # type: ignore[attr-defined]
                        r.ts_ms, r.session.rowid, r.sequence, sid,
                        encode(e.payload).decode(), tag(e),  # type: ignore[attr-defined]
                    ))  # fmt: skip
                    sessions[r.session.rowid] = r.session
                n = len(rows)
                self.db.executemany(
                    "INSERT INTO events(event_id, event_type, schema_version, ts_ms,"
                    " session_id, sequence, source_id, payload, undeclared)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                aggregates.add_records(self.db, records)
                for s in touched:
                    sessions.setdefault(s.rowid, s)
                sessions.pop(None, None)  # a session none of whose events was kept
                for s in sessions.values():
                    self.db.execute(
                        "UPDATE sessions SET last_ms = ?, events = ?, ended_ms = ? WHERE id = ?",
                        (s.last_ms, s.events, s.ended_ms, s.rowid),
                    )
                if features:
                    derived.write_uses(self.db, features.items())
                self.db.executemany(
                    "INSERT INTO counters(reason, n) VALUES (?, ?)"
                    " ON CONFLICT(reason) DO UPDATE SET n = excluded.n",
                    [(k, min(v, MAX_COUNT)) for k, v in counters.items()],
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_flush_ms', ?)",
                    (flushed_ms,),
                )
                self.db.executemany(
                    "INSERT OR REPLACE INTO spool_ledger(name, events, ingested_ms)"
                    " VALUES (?, ?, ?)",
                    [(name, k, flushed_ms) for name, k in ledger],
                )
        except apsw.Error:
            # Ids handed out inside the rolled-back transaction are gone with it.
            self._sources.clear()
            self._n_sources = None
            for s in fresh.values():
                s.rowid = None
            raise
        return n

    def prune_step(
        self, retention_days: int, max_db_size_mb: float, limit: int = PRUNE_BATCH
    ) -> int:
        """One bounded step of pruning: at most ``limit`` events, in one short transaction.

        Events past retention go first (oldest first), then the oldest events while the
        data is over the size cap. Returns how many went; 0 means nothing is left to do.
        Daily aggregates stay: they outlive the raw events (spec §6.3).
        """
        cutoff = now_ms() - retention_days * DAY_MS
        with self.db:
            self.db.execute(
                "DELETE FROM events WHERE id IN"
                " (SELECT id FROM events WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
                (cutoff, limit),
            )
            removed = self.db.changes()
            size = self.size_bytes()
            over = size - int(max_db_size_mb * 1024 * 1024)
            # Two queries: SQLite reads min() or max() alone from the end of the b-tree,
            # but "SELECT min(id), max(id)" scans the table (28-40 ms at 200k rows).
            lo = self.db.execute("SELECT min(id) FROM events").get
            hi = self.db.execute("SELECT max(id) FROM events").get
            if removed < limit and over > 0 and isinstance(lo, int) and isinstance(hi, int):
                # About as many of the oldest rows as the excess is of the whole (ids are
                # dense enough to count rows without a COUNT(*) over millions), never the
                # newest MIN_KEEP_EVENTS.
                share = -(-(hi - lo + 1) * over // size)
                # The newest MIN_KEEP_EVENTS rows, counted (ids have gaps where retention
                # took late-stored old events).
                floor = self.db.execute(
                    "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?",
                    (MIN_KEEP_EVENTS - 1,),
                ).get
                self.db.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ?"
                    " ORDER BY id LIMIT ?)",
                    (floor if isinstance(floor, int) else lo, max(1, min(limit - removed, share))),
                )
                removed += self.db.changes()
            self.db.execute(
                "DELETE FROM spool_ledger WHERE ingested_ms < ?", (now_ms() - 30 * DAY_MS,)
            )
        return removed

    def prune(self, retention_days: int, max_db_size_mb: float, vacuum: bool = True) -> int:
        """Prune to completion (step after step), then give the space back with VACUUM
        (also when nothing went but the file and WAL are over the cap), and truncate the
        WAL: VACUUM writes the whole database through it."""
        removed = 0
        while n := self.prune_step(retention_days, max_db_size_mb):
            removed += n
        self.checkpoint()
        over = self.disk_bytes() > max_db_size_mb * 1024 * 1024
        if vacuum and (removed or over):
            self.vacuum()
        return removed

    def vacuum(self) -> None:
        """Rewrite the file without its free pages, then empty the WAL VACUUM filled."""
        self.db.execute("VACUUM")
        self.checkpoint()

    def size_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").get
        free = self.db.execute("PRAGMA freelist_count").get
        size = self.db.execute("PRAGMA page_size").get
        assert isinstance(pages, int) and isinstance(free, int) and isinstance(size, int)
        return (pages - free) * size

    def delete_all(self) -> int:
        """Erase every event, session, counter, ledger and aggregate row, vacuum; return
        count. The moment is kept (meta ``erased_ms``)."""
        n = self.count_events()
        stats = [name for (name,) in self.db.execute(
            "SELECT name FROM sqlite_schema WHERE name LIKE 'sqlite_stat%'")]  # fmt: skip
        with self.db:
            # What this install uploaded is to be erased in the cloud too: the session ids
            # move to cloud_erasure (kept until the server confirms), then go with the rest.
            self.cloud_erasure = cloud_rights.ask_erasure(self.db, now_ms())
            # meta first: with no sync cursor, the outbox's trigger counts nothing as
            # expired. The sync log stays (it holds no event data: counts and hashes).
            for table in ("meta", "events", "sessions", "sources", "counters", "spool_ledger",
                          "sync_batches", "sync_sessions", *reports.REPORT_TABLES,
                          *aggregates.TABLES,
                          *derived.TABLES, *stats):  # fmt: skip
                self.db.execute(f"DELETE FROM {table}")  # ANALYZE's samples hold values too
            # Nothing recorded before this moment is stored after it (the intake's
            # consent gate): a client's late copies of what was just erased stay erased.
            self.db.execute("INSERT INTO meta VALUES ('erased_ms', ?)", (now_ms(),))
        self._sources.clear()
        self._n_sources = None
        self.checkpoint()
        self.db.execute("VACUUM")
        # VACUUM wrote the new file through the WAL; a reader (an export, rkd metrics) can
        # hold the old pages in place for a while: wait for it, and say when it did not end.
        self.erased_fully = self.checkpoint(wait_secs=5.0)
        return n


# -- read-only access for the CLI and the SDK --------------------------------------------


def open_read_only(path: Path) -> apsw.Connection | None:
    """Open the database read-only, or return None when it does not exist yet."""
    if not path.exists():
        return None
    try:
        return apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as e:
        raise StorageError(f"{path}: cannot open the database: {e}") from None


@contextlib.contextmanager
def reading(path: Path) -> Iterator[apsw.Connection | None]:
    """:func:`open_read_only` for a ``with`` block: None when there is no database yet;
    the connection is closed at the end."""
    db = open_read_only(path)
    try:
        yield db
    finally:
        if db is not None:
            db.close()


def read_only_count(path: Path) -> int:
    db = open_read_only(path)
    if db is None:
        return 0
    try:
        n = db.execute("SELECT count(*) FROM events").get
        return int(n) if isinstance(n, int) else 0
    except apsw.SQLError:
        return 0  # a database the daemon has not initialised yet
    finally:
        db.close()


def read_only_event_ids(path: Path) -> Iterator[bytes]:
    """Every stored event's id (16 bytes), read-only and streaming; none without a database."""
    db = open_read_only(path)
    if db is None:
        return
    try:
        for (b,) in db.execute("SELECT event_id FROM events"):
            yield b
    except apsw.SQLError:
        return  # a database the daemon has not initialised yet
    finally:
        db.close()


SOURCE_COLUMNS: Final = ("product", "version", "tier", "os", "arch", "python_version")

EXPORT_SQL: Final = """
    SELECT e.event_id, e.event_type, e.schema_version, e.ts_ms,
           s.product, s.version, s.tier, s.os, s.arch, s.python_version,
           ss.uuid, e.sequence, ss.started_ms, e.payload
    FROM events e LEFT JOIN sources s ON s.id = e.source_id
                  LEFT JOIN sessions ss ON ss.id = e.session_id
    ORDER BY e.id
"""  # LEFT JOINs: an event is never left out of an export, whatever else is missing


def row_to_envelope(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row as the spec's envelope (§3.1), ready for JSON."""
    return {
        "schema_version": row[2],
        "event_id": str(uuid.UUID(bytes=row[0])),
        "event_type": row[1],
        "timestamp": iso_ms(row[3]),
        "source": dict(zip(SOURCE_COLUMNS, row[4:10], strict=True)),
        "session": {
            "id": row[10],
            "sequence": row[11],
            "started_at": iso_ms(row[12]) if row[12] is not None else None,
        },
        "payload": msgspec.json.decode(row[13]),
    }


def iter_envelopes(path: Path) -> Iterator[dict[str, Any]]:
    """Every stored event, oldest first, read-only and streaming."""
    db = open_read_only(path)
    if db is None:
        return
    try:
        for row in db.execute(EXPORT_SQL):
            yield row_to_envelope(row)
    finally:
        db.close()


def delete_offline(settings: Any) -> tuple[int, int]:
    """Erase everything while no daemon runs, holding the daemon's lock meanwhile; return
    how many events went (those stored, and those in spool files not also stored) and
    how many uploaded sessions the next daemon is to have erased in the cloud."""
    from rkd.daemon.firewall import SALT_FILE
    from rkd.daemon.runtime import DaemonLock
    from rkd.daemon.spooling import spooled_event_ids

    with DaemonLock(settings.runtime_dir):
        spooled = spooled_event_ids(settings.spool_dir)
        # Opened (made, when there is none yet) even with nothing stored: delete_all
        # keeps the moment, so that what a running application still holds and spools
        # later, from before this deletion, is refused by the next daemon.
        storage = Storage(settings.db_path)
        try:
            if spooled:
                spooled.difference_update(storage.event_ids())
            n = storage.delete_all()
            cloud = storage.cloud_erasure
        finally:
            storage.close()
        erase_folder_files(settings.spool_dir)  # complete, temporary and quarantined files
        remove_corrupt_copies(settings.db_path)
        (settings.data_dir / SALT_FILE).unlink(missing_ok=True)  # the next daemon makes a new one
        return n + len(spooled), cloud


def erase_folder_files(folder: Path) -> int:
    """Remove every file (not folders) directly in ``folder``; return how many went."""
    n = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for e in entries:
        with contextlib.suppress(FileNotFoundError):
            if not e.is_dir(follow_symlinks=False):
                os.unlink(e.path)
                n += 1
    return n
