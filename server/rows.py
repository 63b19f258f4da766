"""Rows for the warehouse: a filtered event, a community report, as column -> value.

Only what ``schema.sql`` names goes in: no address, no key id. The event's payload is
kept whole as JSON beside the few columns the rollups group by.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import msgspec
from rkd.client.report import CommunityReport
from rkd.client.schema import Envelope

# The payload field that names what an event is about, per event type (first present).
SUBJECT_FIELDS: Final = ("command", "tool_name", "feature_id", "profile", "topic", "prompt_id",
                         "error_category", "to_tier", "tier", "method")  # fmt: skip
_json: Final = msgspec.json.Encoder()


def subject_of(payload: Any) -> str:
    for name in SUBJECT_FIELDS:
        value = getattr(payload, name, None)
        if isinstance(value, str):
            return value
    return ""


def _duration(payload: Any) -> int | None:
    execution = getattr(payload, "execution", None)
    if execution is not None:
        return int(execution.duration_ms)
    value = getattr(payload, "duration_ms", None)
    return value if isinstance(value, int) else None


def _success(payload: Any) -> int | None:
    execution = getattr(payload, "execution", None)
    if execution is not None:
        return int(execution.success)
    for name in ("completed", "converted"):
        value = getattr(payload, name, None)
        if isinstance(value, bool):
            return int(value)
    return None


def event_row(env: Envelope, batch_id: str, received: str) -> dict[str, Any]:
    """The ``events`` row of a filtered envelope (``received``: ISO seconds, UTC).

    Values stay objects for msgspec to encode (UUIDs and datetimes as strings); the
    payload is written as a JSON object, which the insert reads into its String column
    as text (``input_format_json_read_objects_as_strings``): encoded once, not twice."""
    payload: Any = env.payload  # type: ignore[attr-defined]
    source, session = env.source, env.session
    return {
        "batch_id": batch_id, "event_id": env.event_id, "event_type": payload.event_type,
        "category": payload.category, "schema_version": env.schema_version,
        "ts": env.timestamp, "received": received, "product": source.product,
        "version": source.version, "tier": source.tier, "os": source.os,
        "arch": source.arch, "python_version": source.python_version,
        "session_id": None if session is None else session.id,
        "session_seq": None if session is None else session.sequence,
        "subject": subject_of(payload), "duration_ms": _duration(payload),
        "success": _success(payload), "payload": payload,
    }  # fmt: skip


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
