"""A batch, from its gunzipped bytes to the warehouse's rows: decode with the shared
schema, filter, encode as an Arrow record batch. Pure, so it can run in worker processes.

This is most of the server's CPU per event (decode, privacy filter, row encoding: about
20 µs), and one Python process has one core for it. The app hands batches to a process
pool (``--workers``); the event loop keeps TLS, HTTP and the group commit, and the
embedded engine stays in the main process (chdb allows one per data folder).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec
from rkd.client import cloud
from rkd.client.vocabulary import Vocabulary, parse_vocabulary, reasonkit_vocabulary
from rkd.server.privacy import Forged, PrivacyFilter
from rkd.server.rows import event_block, event_values

_PATH: Final = re.compile(r" - at `(\$[A-Za-z0-9_.\[\]]{0,200})`")
_json: Final = msgspec.json.Encoder()


class Prepared(NamedTuple):
    """What became of a batch: refused (``status``, ``reason``) or rows to write."""

    status: int = 0  # 0: accepted for writing; else the HTTP status of the refusal
    reason: str = ""
    rows: bytes = b""  # the events table's rows: an Arrow IPC stream (b"" if none)
    n_rows: int = 0
    counts: tuple[tuple[str, int], ...] = ()  # the filter's (undeclared, pii.*, dropped.*)


def load_vocabularies(files: tuple[Path, ...]) -> dict[str, Vocabulary]:
    """Product -> its declared vocabulary (ReasonKit's always, plus the files given)."""
    out = {v.product: v for v in [reasonkit_vocabulary()]}
    for path in files:
        v = parse_vocabulary(path.read_bytes())
        out[v.product] = v
    return out


_filter: PrivacyFilter | None = None  # one per process: its caches are per process


def init(vocabulary_files: tuple[Path, ...]) -> None:
    """Build this process's filter (a pool's initializer, or once in the app)."""
    global _filter
    _filter = PrivacyFilter(load_vocabularies(vocabulary_files))


def prepare(raw: bytes, signed_batch_id: str) -> Prepared:
    """Decode, check the batch id against the signed one, filter, encode."""
    assert _filter is not None, "prepare.init() first"
    try:
        batch = cloud.decode_batch(raw)
    except msgspec.ValidationError as e:
        return Prepared(400, reason_of(str(e)))
    except msgspec.DecodeError:
        return Prepared(400, "malformed")
    if batch.batch_id != signed_batch_id:
        return Prepared(400, "batch_id_mismatch")
    now = dt.datetime.now(dt.UTC)
    counts: Counter[str] = Counter()
    values = []
    for env in batch.events:
        try:
            kept = _filter(env, now, counts)
        except Forged:
            return Prepared(400, "daemon_owned")
        if kept is not None:
            values.append(event_values(kept))
    rows = event_block(values, batch.batch_id, now) if values else b""
    return Prepared(0, "", rows, len(values), tuple(counts.items()))


def reason_of(message: str) -> str:
    """A 400's reason from msgspec's message: a kind and a path, never a value (msgspec
    may quote one: an unknown tag, an enum value, a field name)."""
    m = _PATH.search(message)
    path = m[1] if m else "$"
    if path.endswith(".schema_version"):
        return f"unknown_schema_version at {path}"
    if path.endswith(".event_type") or "`event_type`" in message:
        return f"unknown_event_type at {path}"
    if message.startswith("Object missing required field"):
        return f"missing_field at {path}"
    if message.startswith("Object contains unknown field"):
        return f"unknown_field at {path}"
    return f"invalid at {path}"


def encode_rows(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(_json.encode(r) for r in rows)
