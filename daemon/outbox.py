"""The sync outbox: the database is the queue (issue 12, "durable outbox, zero loss").

- ``meta.sync_cursor`` is the rowid of the last event put in a batch. It exists only
  while sync is on: turning sync on (again) sets it to the newest stored event, so
  nothing stored before the consent ever leaves.
- A batch is built from the events after the cursor (each through the upload filter,
  and only those recorded at or after the consent moment), recorded with its exact body
  and the cursor moved, in one transaction, *before* it is sent. A retry sends the same
  batch id and the same bytes, so the server counts it once; a daemon killed mid-upload
  sends the same batch again after its restart.
- ``sync_log`` records every attempt's outcome (time, endpoint, kind, events, bytes,
  body SHA-256, result): what ``rkd sync log`` prints. Sent bodies are kept for the
  retention period (``rkd sync show``), then dropped.
- Retention wins: an event pruned before it was put in a batch is counted as
  ``sync_expired_unsynced`` (a trigger, so every path that deletes is covered).

Functions here take an apsw connection, so ``rkd sync status|log|show`` read the same
tables read-only while the daemon writes them.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import apsw
import msgspec
from rkd.client import cloud
from rkd.client.clock import DAY_MS, iso_ms
from rkd.client.upload import NotUploadable, upload_filter_stored
from rkd.client.vocabulary import Vocabulary

MIGRATION: Final = """
CREATE TABLE sync_batches(
    batch_id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    events INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    body BLOB NOT NULL,
    body_sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    done_ms INTEGER,
    result TEXT
) WITHOUT ROWID;
CREATE INDEX sync_batches_state ON sync_batches(state, created_ms);
CREATE TABLE sync_log(
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    batch_id TEXT,
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body_sha256 TEXT,
    result TEXT NOT NULL
);
CREATE TRIGGER sync_expired_unsynced AFTER DELETE ON events
WHEN old.id > coalesce((SELECT value FROM meta WHERE key = 'sync_cursor'), 9223372036854775807)
BEGIN
    INSERT INTO meta(key, value) VALUES ('sync_expired_unsynced', 1)
    ON CONFLICT(key) DO UPDATE SET value = value + 1;
END;
"""

PENDING: Final = "pending"
SENT: Final = "sent"
QUARANTINED: Final = "quarantined"
WITHDRAWN: Final = "withdrawn"  # not sent when sync was turned off; never sent
MAX_LOG_ROWS: Final = 100_000  # the oldest log rows go first past this

_SELECT: Final = """
    SELECT e.event_id, e.event_type, e.schema_version, e.ts_ms,
           s.product, s.version, s.tier, s.os, s.arch, s.python_version,
           ss.uuid, e.sequence, ss.started_ms, e.payload, e.id
    FROM events e LEFT JOIN sources s ON s.id = e.source_id
                  LEFT JOIN sessions ss ON ss.id = e.session_id
    WHERE e.id > ? ORDER BY e.id LIMIT ?
"""


class Batch(NamedTuple):
    batch_id: str
    first_id: int
    last_id: int
    events: int
    skipped: int  # after the cursor but not uploadable (another product, before consent)
    body: bytes  # gzip(msgpack({batch_id, events}))
    body_sha256: str
    sessions: frozenset[str] = frozenset()  # session ids in the batch (for erasure later)


def meta(db: apsw.Connection, key: str) -> Any:
    return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).get


def set_meta(db: apsw.Connection, key: str, value: Any) -> None:
    if value is None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def build(db: apsw.Connection, cursor: int, since_ms: int,
          vocabulary_for: Callable[[str], Vocabulary | None], max_events: int,
          max_bytes: int = cloud.MAX_BODY_BYTES) -> Batch | None:  # fmt: skip
    """The next batch after ``cursor`` (None: nothing new). Every event goes through the
    upload filter; one that cannot be uploaded (no vocabulary for its product, recorded
    before ``since_ms``, not valid) is skipped, and the cursor still passes it."""
    from rkd.daemon.storage import row_to_envelope

    rows: list[Any] = db.execute(_SELECT, (cursor, max_events)).fetchall()
    if not rows:
        return None
    events, skipped = [], 0
    for row in rows:
        if row[3] < since_ms:
            skipped += 1
            continue
        event = row_to_envelope(row[:14])
        if daemon_owned(event):
            skipped += 1  # the daemon's own bookkeeping: the server refuses it as forged
            continue
        if row[10] is None:
            event["session"] = None  # its session row is gone: the event still goes
        vocabulary = vocabulary_for(event["source"]["product"] or "")
        try:
            if vocabulary is None:
                raise NotUploadable("no vocabulary")
            events.append(upload_filter_stored(event, vocabulary))
        except NotUploadable:
            skipped += 1
    batch_id = uuid.uuid4().hex
    body = encode(batch_id, events)
    if len(body) > max_bytes and len(rows) > 1:  # halve until it fits the byte cap
        return build(db, cursor, since_ms, vocabulary_for, max(1, len(rows) // 2), max_bytes)
    sessions = frozenset(e["session"]["id"] for e in events if e.get("session"))
    return Batch(batch_id, rows[0][14], rows[-1][14], len(events), skipped, body,
                 hashlib.sha256(body).hexdigest(), sessions)  # fmt: skip


def daemon_owned(event: dict[str, Any]) -> bool:
    """Session boundaries and rkd's own events never leave: the server derives sessions
    from every event's session stamp, and refuses these as forged (server/privacy.py)."""
    from rkd.daemon.derived import SESSION_TYPES

    kind = event.get("event_type")
    if kind in SESSION_TYPES or event["source"].get("product") == "rkd":
        return True
    return kind == "crash_detected" and event["payload"].get("component") == "daemon"


def encode(batch_id: str, events: list[dict[str, Any]]) -> bytes:
    raw = msgspec.msgpack.encode({"batch_id": batch_id, "events": events})
    return gzip.compress(raw, compresslevel=6, mtime=0)


def record(db: apsw.Connection, batch: Batch, now_ms: int) -> None:
    """The batch and the cursor past it, in the caller's transaction."""
    db.execute(
        "INSERT INTO sync_batches(batch_id, created_ms, first_id, last_id, events, skipped,"
        " body, body_sha256, state) VALUES (?,?,?,?,?,?,?,?,?)",
        (batch.batch_id, now_ms, batch.first_id, batch.last_id, batch.events, batch.skipped,
         batch.body, batch.body_sha256, PENDING),
    )  # fmt: skip
    set_meta(db, "sync_cursor", batch.last_id)
    from rkd.daemon.cloud_rights import remember_sessions

    remember_sessions(db, set(batch.sessions), now_ms)


def next_pending(db: apsw.Connection) -> tuple[str, bytes, int] | None:
    """(batch id, body, events) of the oldest batch waiting to be sent."""
    row = db.execute(
        "SELECT batch_id, body, events FROM sync_batches WHERE state = ?"
        " ORDER BY created_ms, first_id LIMIT 1",
        (PENDING,),
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]), int(row[2]))


def finish(db: apsw.Connection, batch_id: str, state: str, result: str, attempts: int,
           now_ms: int) -> None:  # fmt: skip
    db.execute(
        "UPDATE sync_batches SET state = ?, result = ?, attempts = attempts + ?, done_ms = ?"
        " WHERE batch_id = ? AND (state != ? OR ? = ?)",  # withdrawn stays, unless it went
        (state, result, attempts, now_ms if state != PENDING else None, batch_id,
         WITHDRAWN, state, SENT),
    )  # fmt: skip


def unbatch(db: apsw.Connection, batch_id: str) -> None:
    """A pending batch the server found too large (413): forgotten, and the cursor put
    back before it, so its events go again in smaller batches."""
    row = db.execute(
        "SELECT first_id FROM sync_batches WHERE batch_id = ? AND state = ?", (batch_id, PENDING)
    ).fetchone()
    if row is None:
        return
    db.execute("DELETE FROM sync_batches WHERE batch_id = ?", (batch_id,))
    cursor = meta(db, "sync_cursor")
    if isinstance(cursor, int):
        set_meta(db, "sync_cursor", min(cursor, int(row[0]) - 1))


def log(db: apsw.Connection, at_ms: int, kind: str, endpoint: str, batch_id: str | None,
        events: int, size: int, body_sha256: str | None, result: str) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO sync_log(at_ms, kind, endpoint, batch_id, events, bytes, body_sha256,"
        " result) VALUES (?,?,?,?,?,?,?,?)",
        (at_ms, kind, endpoint, batch_id, events, size, body_sha256, result),
    )
    db.execute(
        "DELETE FROM sync_log WHERE id <= (SELECT max(id) FROM sync_log) - ?", (MAX_LOG_ROWS,)
    )


def expire(db: apsw.Connection, retention_days: int, now_ms: int) -> int:
    """Sent and quarantined bodies past retention go; so do pending batches (their
    events were pruned meanwhile: counted as expired unsynced). Returns batches dropped."""
    cutoff = now_ms - retention_days * DAY_MS
    stale = db.execute(
        "SELECT coalesce(sum(events), 0) FROM sync_batches WHERE state = ? AND created_ms < ?",
        (PENDING, cutoff),
    ).get
    if stale:
        n = meta(db, "sync_expired_unsynced")
        set_meta(db, "sync_expired_unsynced", (n if isinstance(n, int) else 0) + int(stale))
    db.execute("DELETE FROM sync_batches WHERE created_ms < ?", (cutoff,))
    return db.changes()


# -- what `rkd sync status|log|show` read ---------------------------------------------------


def queue_depth(db: apsw.Connection) -> int:
    """Events waiting to leave: after the cursor, and in pending batches."""
    cursor = meta(db, "sync_cursor")
    after = 0
    if isinstance(cursor, int):
        n = db.execute("SELECT count(*) FROM events WHERE id > ?", (cursor,)).get
        after = n if isinstance(n, int) else 0
    pending = db.execute(
        "SELECT coalesce(sum(events), 0) FROM sync_batches WHERE state = ?", (PENDING,)
    ).get
    return after + (pending if isinstance(pending, int) else 0)


def counts_by_state(db: apsw.Connection) -> dict[str, int]:
    return {str(s): int(n) for s, n in
            db.execute("SELECT state, count(*) FROM sync_batches GROUP BY state")}  # fmt: skip


def last_success_ms(db: apsw.Connection) -> int | None:
    v = db.execute("SELECT max(at_ms) FROM sync_log WHERE result LIKE 'ok%'").get
    return v if isinstance(v, int) else None


def log_rows(db: apsw.Connection, limit: int) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT at_ms, kind, endpoint, batch_id, events, bytes, body_sha256, result"
        " FROM sync_log ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    keys = ("at", "kind", "endpoint", "batch_id", "events", "bytes", "body_sha256", "result")
    out = [dict(zip(keys, r, strict=True)) for r in reversed(rows)]
    for r in out:
        r["at"] = iso_ms(r["at"])
    return out


def batch_row(db: apsw.Connection, batch_id: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT batch_id, created_ms, events, skipped, body, body_sha256, state, attempts,"
        " result FROM sync_batches WHERE batch_id = ?",
        (batch_id,),
    ).fetchone()
    if row is None:
        return None
    keys = ("batch_id", "created", "events", "skipped", "body", "body_sha256", "state",
            "attempts", "result")  # fmt: skip
    out = dict(zip(keys, row, strict=True))
    out["created"] = iso_ms(out["created"])
    out["body"] = bytes(out["body"])
    return out


def decode_body(body: bytes) -> Any:
    """A batch body as it was sent, decoded (for `rkd sync show`)."""
    return msgspec.msgpack.decode(gzip.decompress(body))


def body_sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
