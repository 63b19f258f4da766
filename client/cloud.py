"""The wire protocol between the daemon's sync and the ingestion server (`rkd.server`).

Both sides import this module, so they cannot drift: the paths, the header names, the
batch and answer shapes, the byte caps and the request signature. ``shared/DESIGN.md``
("Wire protocol to the server") is the prose of it; change both in one commit and bump
:data:`PROTOCOL_VERSION`.

A Pro batch is ``gzip(msgpack({batch_id, events: [Envelope, ...]}))`` where every event
is what :func:`rkd.client.upload.upload_filter` produced (undeclared strings are
``"__other__"``, which the schema admits for that reason). The server decodes it with
:class:`EventBatch`, the same msgspec schema the client encodes with.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct
from rkd.client.schema import Event

PROTOCOL_VERSION: Final = 1
EVENTS_PATH: Final = "/v1/telemetry/events"
REPORTS_PATH: Final = "/v1/telemetry/reports"
ERASURE_PATH: Final = "/v1/telemetry/erasure"  # Art. 17: delete the raw events of sessions
ACCESS_PATH: Final = "/v1/telemetry/access"  # Art. 15: the raw events held for sessions
MAX_SESSIONS: Final = 10_000  # session ids named in one erasure or access request
CONTENT_TYPE: Final = "application/msgpack"

MAX_BATCH_EVENTS: Final = 1000  # spec §4.4
MAX_BODY_BYTES: Final = 1 << 20  # compressed, on the wire (413 above)
MAX_RAW_BYTES: Final = 8 << 20  # after gunzip (413 above: a zip bomb stops here)
MAX_SKEW_SECS: Final = 300  # RK-Timestamp within ±5 minutes of the server's clock

H_KEY_ID: Final = "RK-Key-Id"
H_TIMESTAMP: Final = "RK-Timestamp"
H_NONCE: Final = "RK-Nonce"
H_BATCH_ID: Final = "RK-Batch-Id"
H_SIGNATURE: Final = "RK-Signature"

BatchId = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z", description="uuid4, hex.")]
KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{4,64}")
# A key's secret as given to the customer and kept in the server's keys file: 32 random
# bytes as 64 hex digits. The HMAC key is the bytes (``bytes.fromhex``), on both sides.
SECRET_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
NONCE: Final = re.compile(r"[0-9a-f]{32}")


class EventBatch(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A Pro sync batch: up to :data:`MAX_BATCH_EVENTS` upload-filtered envelopes."""

    batch_id: BatchId
    events: Annotated[list[Event], Meta(max_length=MAX_BATCH_EVENTS)]  # type: ignore[valid-type]


class SessionsRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """The body of an erasure or access request (msgpack, signed like a batch, with
    ``request_id`` in RK-Batch-Id): the session ids this install uploaded."""

    request_id: BatchId
    session_ids: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=MAX_SESSIONS)]


class Erased(Struct, frozen=True, kw_only=True, gc=False):
    """The answer to an erasure request: raw events deleted (aggregates hold no session)."""

    deleted: int


class Answer(Struct, frozen=True, kw_only=True, gc=False):
    """The server's 202 body: how many events it took, had already, and refused (by
    reason). A retried batch answers ``accepted=0, duplicates=n``."""

    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = {}


class Problem(Struct, frozen=True, kw_only=True, gc=False):
    """The body of every 4xx/5xx: one short reason, never a value from the request."""

    error: str


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, batch_id: str,
                   body: bytes) -> bytes:  # fmt: skip
    """What RK-Signature covers: method, path, timestamp, nonce, batch id and the body's
    SHA-256 (hex), one per line."""
    return "\n".join((method.upper(), path, timestamp, nonce, batch_id, body_sha256(body))).encode()


def sign(secret: bytes, method: str, path: str, timestamp: str, nonce: str, batch_id: str,
         body: bytes) -> str:  # fmt: skip
    """RK-Signature: hex HMAC-SHA256 of :func:`string_to_sign` under the key's secret."""
    message = string_to_sign(method, path, timestamp, nonce, batch_id, body)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signature_ok(secret: bytes, signature: str, method: str, path: str, timestamp: str,
                 nonce: str, batch_id: str, body: bytes) -> bool:  # fmt: skip
    """Constant-time check of a received RK-Signature."""
    expected = sign(secret, method, path, timestamp, nonce, batch_id, body)
    return hmac.compare_digest(expected.encode(), signature.encode("ascii", "replace"))


_batch_decoder = msgspec.msgpack.Decoder(EventBatch)


def decode_batch(raw: bytes) -> EventBatch:
    """A batch from its gunzipped bytes; msgspec.ValidationError/DecodeError if it does
    not fit the schema (the server answers 400 and stores nothing of it)."""
    return _batch_decoder.decode(raw)
