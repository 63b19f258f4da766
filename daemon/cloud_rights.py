"""The user's rights in the cloud (spec §8; issue 14): erasure and access by session id.

The server keeps no install id, so the only handle on what this install uploaded is
the list of its session ids (random, per session). The outbox records them with every
batch (``sync_sessions``). ``rkd delete`` moves them to ``cloud_erasure`` (which a
local delete does not wipe), and the daemon asks the server to erase them (a signed
request) until it confirms; ``rkd export --cloud`` asks the server for what it holds
under them (:func:`fetch`).
"""

from __future__ import annotations

import gzip
import uuid
from typing import Any, Final

import apsw
import msgspec
from rkd.client import cloud
from rkd.client.config import Settings
from rkd.daemon.synckey import read_sync_key
from rkd.daemon.uplink import Uplink, tls_context

MIGRATION: Final = """
CREATE TABLE sync_sessions(uuid TEXT PRIMARY KEY, first_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE cloud_erasure(uuid TEXT PRIMARY KEY, asked_ms INTEGER NOT NULL) WITHOUT ROWID;
"""


class CloudError(Exception):
    """A cloud request that could not be made or was refused; one line, no secret."""


def remember_sessions(db: apsw.Connection, session_ids: set[str], now_ms: int) -> None:
    """The sessions of a batch about to be sent (the caller's transaction)."""
    db.executemany(
        "INSERT OR IGNORE INTO sync_sessions(uuid, first_ms) VALUES (?, ?)",
        [(s, now_ms) for s in sorted(session_ids)],
    )


def ask_erasure(db: apsw.Connection, now_ms: int) -> int:
    """At `rkd delete`: every uploaded session becomes one to erase on the server (the
    caller's transaction, before the tables are wiped); how many."""
    db.execute(
        "INSERT OR IGNORE INTO cloud_erasure(uuid, asked_ms) SELECT uuid, ? FROM sync_sessions",
        (now_ms,),
    )
    return erasure_count(db)


def erasure_count(db: apsw.Connection) -> int:
    n = db.execute("SELECT count(*) FROM cloud_erasure").get
    return n if isinstance(n, int) else 0


def erasure_due(db: apsw.Connection) -> list[str]:
    return [str(u) for (u,) in db.execute(
        "SELECT uuid FROM cloud_erasure ORDER BY asked_ms, uuid LIMIT ?", (cloud.MAX_SESSIONS,))]  # fmt: skip


def erased(db: apsw.Connection, session_ids: list[str]) -> None:
    db.executemany("DELETE FROM cloud_erasure WHERE uuid = ?", [(s,) for s in session_ids])


def request_body(session_ids: list[str]) -> tuple[str, bytes]:
    """(request id, gzip body) of an erasure or access request."""
    request_id = uuid.uuid4().hex
    body = msgspec.msgpack.encode(cloud.SessionsRequest(
        request_id=request_id, session_ids=[uuid.UUID(s) for s in session_ids]))  # fmt: skip
    return request_id, gzip.compress(body, mtime=0)


def uploaded_sessions(db: apsw.Connection) -> list[str]:
    try:
        return [str(u) for (u,) in db.execute("SELECT uuid FROM sync_sessions ORDER BY uuid")]
    except apsw.SQLError:  # an older database: nothing was ever uploaded
        return []


def fetch(settings: Settings, session_ids: list[str]) -> list[dict[str, Any]]:
    """`rkd export --cloud`: what the server holds for these sessions (Art. 15/20)."""
    key = read_sync_key(settings.data_dir)
    if key is None:
        raise CloudError("no Pro key enrolled: nothing of this install is in the cloud")
    uplink = Uplink(settings.sync_endpoint, tls_context(settings.sync.ca_file),
                    settings.sync.pins, key)  # fmt: skip
    events: list[dict[str, Any]] = []
    for i in range(0, len(session_ids), cloud.MAX_SESSIONS):
        request_id, body = request_body(session_ids[i : i + cloud.MAX_SESSIONS])
        try:
            status, _, raw = uplink.post(cloud.ACCESS_PATH, body, request_id,
                                         max_answer=cloud.MAX_RAW_BYTES)  # fmt: skip
        except OSError as e:  # ssl.SSLError included
            raise CloudError(f"{settings.sync_endpoint}: {type(e).__name__}: {e}") from None
        if status != 200:
            raise CloudError(f"{settings.sync_endpoint} answered {status}")
        try:
            events += msgspec.json.decode(raw)["events"]
        except (msgspec.DecodeError, KeyError, TypeError):
            raise CloudError(f"{settings.sync_endpoint}: not an access answer") from None
    return events
