"""Rows for the warehouse: a filtered event, a community report, as column -> value.

Only what ``schema.sql`` names goes in: no address, no key id. The event's payload is
kept whole as JSON beside the few columns the rollups group by. Events travel to the
warehouse as Arrow record batches, reports (one at a time) as JSON lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import msgspec
import pyarrow as pa
from rkd.client.report import CommunityReport
from rkd.client.schema import Envelope

# The payload field that names what an event is about, per event type (first present).
SUBJECT_FIELDS: Final = ("command", "tool_name", "feature_id", "profile", "topic", "prompt_id",
                         "error_category", "to_tier", "tier", "method")  # fmt: skip
_json: Final = msgspec.json.Encoder()


class _Reads(NamedTuple):
    """The fields of one payload type that the derived columns read (those it has)."""

    subject: tuple[str, ...]  # SUBJECT_FIELDS it has, in order
    execution: bool
    duration_ms: bool
    outcome: tuple[str, ...]  # "completed", "converted"


_READS: Final[dict[type, _Reads]] = {}  # a cache: one entry per payload type


def _reads(cls: type) -> _Reads:
    """Looked up once per type: ~0.4 µs an event of getattr on absent names otherwise."""
    reads = _READS.get(cls)
    if reads is None:
        names = set(getattr(cls, "__struct_fields__", ()))
        reads = _READS[cls] = _Reads(
            tuple(n for n in SUBJECT_FIELDS if n in names), "execution" in names,
            "duration_ms" in names, tuple(n for n in ("completed", "converted") if n in names),
        )  # fmt: skip
    return reads


def subject_of(payload: Any) -> str:
    """The first of ``SUBJECT_FIELDS`` that holds a string, or ""."""
    for name in _reads(type(payload)).subject:
        value = getattr(payload, name)
        if isinstance(value, str):
            return value
    return ""


def _duration(payload: Any, reads: _Reads) -> int | None:
    execution = payload.execution if reads.execution else None
    if execution is not None:
        return int(execution.duration_ms)
    value = payload.duration_ms if reads.duration_ms else None
    return value if isinstance(value, int) else None


def _success(payload: Any, reads: _Reads) -> int | None:
    execution = payload.execution if reads.execution else None
    if execution is not None:
        return int(execution.success)
    for name in reads.outcome:
        value = getattr(payload, name)
        if isinstance(value, bool):
            return int(value)
    return None


# The ``events`` table's columns as the Arrow types the engine reads into them: strings
# into (LowCardinality) String and FixedString, 16 bytes into UUID, microseconds into
# DateTime64(3) (truncated, as its text parser did). Arrow, not JSON lines: the engine
# reads these columns for ~1 µs a row against ~4 µs for JSONEachRow, on the writer's one
# thread that every insert goes through. The batch's two constants come first.
EVENT_SCHEMA: Final = pa.schema([
    ("batch_id", pa.string()), ("received", pa.timestamp("s", tz="UTC")),
    ("event_id", pa.binary(16)), ("event_type", pa.string()), ("category", pa.string()),
    ("schema_version", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
    ("product", pa.string()), ("version", pa.string()), ("tier", pa.string()),
    ("os", pa.string()), ("arch", pa.string()), ("python_version", pa.string()),
    ("session_id", pa.binary(16)), ("session_seq", pa.uint32()), ("subject", pa.string()),
    ("duration_ms", pa.uint64()), ("success", pa.uint8()), ("payload", pa.binary()),
])  # fmt: skip


def event_values(env: Envelope) -> tuple[Any, ...]:
    """A filtered envelope's values for its ``events`` row, in ``EVENT_SCHEMA`` order
    after the batch's two. The payload is kept whole as its JSON text."""
    payload: Any = env.payload  # type: ignore[attr-defined]
    source, session, reads = env.source, env.session, _reads(type(payload))
    return (
        env.event_id.bytes, payload.event_type, payload.category, env.schema_version,
        env.timestamp, source.product, source.version, source.tier, source.os, source.arch,
        source.python_version, None if session is None else session.id.bytes,
        None if session is None else session.sequence, subject_of(payload),
        _duration(payload, reads), _success(payload, reads), _json.encode(payload),
    )  # fmt: skip


def event_block(values: Sequence[tuple[Any, ...]], batch_id: str, received: dt.datetime) -> bytes:
    """One batch's ``events`` rows (``event_values`` of each event) as an Arrow IPC
    stream; ``received``: when the server took the batch (whole seconds are stored)."""
    n = len(values)
    columns = list(zip(*values, strict=True)) if n else [()] * (len(EVENT_SCHEMA) - 2)
    seconds = pa.array([int(received.timestamp())] * n, pa.int64())
    arrays = [pa.array([batch_id] * n, pa.string()), seconds.view(EVENT_SCHEMA[1].type)]
    arrays += [pa.array(c, f.type) for c, f in zip(columns, list(EVENT_SCHEMA)[2:], strict=True)]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EVENT_SCHEMA) as writer:
        writer.write_batch(pa.record_batch(arrays, schema=EVENT_SCHEMA))
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


# Scalar report fields stored in their own column; everything is also in ``body``.
REPORT_COLUMNS: Final = ("report_version", "product", "version", "tier", "os", "arch",
                         "cohort_week", "install_age_days", "new_install", "first_of_week",
                         "first_of_month", "sessions", "commands", "errors")  # fmt: skip


def report_row(report: CommunityReport, received: dt.datetime) -> dict[str, Any]:
    """The ``reports`` row of a validated report."""
    row: dict[str, Any] = {name: getattr(report, name) for name in REPORT_COLUMNS}
    for flag in ("new_install", "first_of_week", "first_of_month"):
        row[flag] = int(row[flag])
    dims, keys, ns = [], [], []
    for dimension, values in sorted(report.counts.items()):
        for key, n in sorted(values.items()):
            dims.append(dimension)
            keys.append(key)
            ns.append(n)
    row.update(
        day=report.day.isoformat(), received=received.strftime("%Y-%m-%d %H:%M:%S"),
        dp_epsilon=0.0 if report.privacy is None else report.privacy.epsilon,
        count_dimension=dims, count_key=keys, count_n=ns, latency_ms=list(report.latency_ms),
        body=_json.encode(report).decode(),
    )  # fmt: skip
    return row
