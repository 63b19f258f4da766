"""The ingestion stages, each a small function testable without sockets.

decode -> validate -> (privacy firewall) -> stamp. A stage rejects a frame by raising
:class:`Rejected`; the daemon catches and counts it in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec
from rkd.client.schema import Envelope, Event
from rkd.client.wire import MAX_FRAME_BYTES, ClientReport

_REASON: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")
EARLIEST: Final = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
MAX_FUTURE: Final = dt.timedelta(days=1)


class Rejected(Exception):
    """A frame that will not be stored; ``reason`` is the counter's name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_decoder: Final = msgspec.msgpack.Decoder(Event)
_report_decoder: Final = msgspec.msgpack.Decoder(ClientReport)


def reason_for(err: msgspec.ValidationError) -> str:
    """Name the kind of schema violation from msgspec's message (its path, not values)."""
    text = str(err)
    if text.startswith("Object missing required field `event_type`"):
        return "unknown_event_type"
    if " - at `$" not in text:
        return "malformed"  # not even a map: garbage that happened to decode
    path = text.rsplit(" - at `", 1)[1].rstrip("`")
    if path == "$.event_type":
        return "unknown_event_type"
    if path == "$.schema_version":
        return "schema_version"
    return "invalid_field"


def decode(frame: bytes) -> Envelope:
    """Bytes to a validated envelope, or Rejected(oversized|malformed|unknown_event_type|...)."""
    if len(frame) > MAX_FRAME_BYTES:
        raise Rejected("oversized")
    try:
        return _decoder.decode(frame)  # type: ignore[no-any-return]
    except msgspec.ValidationError as e:
        raise Rejected(reason_for(e)) from None
    except msgspec.DecodeError:
        raise Rejected("malformed") from None


def decode_report(frame: bytes) -> tuple[dict[str, int], int]:
    """A client's report: drop counts by reason (sanitised) and its sync token (0: none)."""
    if len(frame) > 4096:
        raise Rejected("oversized")
    try:
        report = _report_decoder.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise Rejected("malformed_report") from None
    # Reasons are client-supplied text that ends up in the database: only known shapes.
    drops = {
        (k if _REASON.fullmatch(k) else "other"): max(0, int(v))
        for k, v in list(report.drops.items())[:32]
    }
    return drops, report.sync


def validate(envelope: Envelope, now: dt.datetime) -> int:
    """Checks the schema cannot express; returns the event time in epoch milliseconds."""
    ts = envelope.timestamp
    if ts < EARLIEST or ts > now + MAX_FUTURE:
        raise Rejected("bad_timestamp")
    return int(ts.timestamp() * 1000)
