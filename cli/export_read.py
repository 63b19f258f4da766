"""What `rkd export` reads: one read-only snapshot of the database, in chunks of rows.

The database is opened read-only (never created: no database means an empty export) and
read inside one read transaction, so that the count, the sources and the rows are one
consistent snapshot while the daemon keeps writing (WAL readers neither block nor are
blocked). Rows come oldest first, CHUNK_ROWS at a time and transposed into columns
(:class:`Chunk`), which is what the renderers work on: memory stays flat for any number
of events.

Also here, as the first stage of an export: :class:`ExportError`, the one error every
export module raises for a user to read, and the consent record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Final, NamedTuple

import apsw
import click
from rkd.client.consent import ConsentError, consent_dict
from rkd.daemon.storage import SCHEMA_VERSION, StorageError, open_read_only

CHUNK_ROWS: Final = 5_000  # rows rendered and written at a time (a few MB of text)
SOURCE_FIELDS: Final = ("product", "version", "tier", "os", "arch", "python_version")

# Oldest first. Sources are few and read once; the session comes with each row (a LEFT
# JOIN, so that no event can ever be left out of an export).
ROWS_SQL: Final = """
    SELECT e.event_id, e.event_type, e.schema_version, e.ts_ms, e.source_id,
           ss.uuid, e.sequence, ss.started_ms, e.payload
    FROM events e LEFT JOIN sessions ss ON ss.id = e.session_id
    ORDER BY e.id
"""
SOURCES_SQL: Final = f"SELECT id, {', '.join(SOURCE_FIELDS)} FROM sources"


class ExportError(click.ClickException):
    """The export cannot be made. The message is one line and shows no stored value."""


class Chunk(NamedTuple):
    """Up to CHUNK_ROWS rows of ``ROWS_SQL``, transposed: one tuple per column."""

    event_id: Sequence[bytes]
    event_type: Sequence[str]
    schema_version: Sequence[str]
    ts_ms: Sequence[int]
    source_id: Sequence[int]
    session_uuid: Sequence[str | None]
    sequence: Sequence[int]
    started_ms: Sequence[int | None]
    payload: Sequence[str]


@contextlib.contextmanager
def snapshot(path: Path) -> Iterator[apsw.Connection | None]:
    """The database read-only, inside one read transaction; None when there is none yet.

    One transaction makes the count, the sources and the rows one consistent snapshot
    while the daemon keeps writing (WAL readers neither block nor are blocked).
    """
    try:
        db = open_read_only(path)
    except StorageError as e:
        raise ExportError(str(e)) from None
    if db is None:
        yield None
        return
    try:
        db.set_busy_timeout(5000)
        db.execute("BEGIN")
        version = db.execute("PRAGMA user_version").get
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ExportError(
                f"{path}: database schema {version} is newer than this rkd understands"
                f" ({SCHEMA_VERSION}); upgrade rkd"
            )
        yield db if version else None  # user_version 0: created, not initialised yet
    except apsw.Error as e:
        raise ExportError(f"{path}: cannot read the database: {e}") from None
    finally:
        db.close()


def count_events(db: apsw.Connection | None) -> int:
    n = db.execute("SELECT count(*) FROM events").get if db is not None else 0
    return n if isinstance(n, int) else 0


def chunks(db: apsw.Connection | None) -> Iterator[Chunk]:
    """Every stored event, oldest first, CHUNK_ROWS rows at a time, transposed."""
    if db is None:
        return
    cursor = db.execute(ROWS_SQL)
    while rows := list(islice(cursor, CHUNK_ROWS)):
        yield Chunk._make(zip(*rows, strict=True))


def load_sources(db: apsw.Connection | None) -> dict[int, tuple[Any, ...]]:
    """Every source (product, version, platform) by id: a small table, read once."""
    return {} if db is None else {r[0]: tuple(r[1:]) for r in db.execute(SOURCES_SQL)}


def read_consent(data_dir: Path) -> dict[str, object] | None:
    """The consent record as plain data, or None if the user never decided."""
    try:
        return consent_dict(data_dir)
    except ConsentError as e:
        raise ExportError(str(e)) from None
