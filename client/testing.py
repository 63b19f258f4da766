"""Testing an application's instrumentation: :func:`capture_events`.

    from rkd.client.testing import capture_events

    def test_think_is_recorded():
        with capture_events() as events:
            run_think_command()  # uses the application's Telemetry, wherever it was built
        assert ["command_executed"] == [e["event_type"] for e in events]
        assert "think" == events[0]["command"]

In the spirit of structlog's ``capture_logs``: while the block runs, every event any
:class:`~rkd.client.telemetry.Telemetry` of the process emits is appended to the list
instead of going to the daemon, whether telemetry is on, off or undecided. Nothing is
sent, spooled or written; no socket is opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import rkd.client.telemetry as _telemetry
from rkd.client import schema
from rkd.client.checks import SCHEMA_RULE, schema_violation
from rkd.client.wire import MAX_FRAME_BYTES

if TYPE_CHECKING:
    from rkd.client.telemetry import Telemetry


@contextlib.contextmanager
def capture_events() -> Iterator[list[dict[str, Any]]]:
    """Collect the events every ``Telemetry`` in the process emits, while the block runs.

    Yields a list that receives one dict per event, as sent: ``event_type``, then the
    payload's fields as plain values (tuples as lists, absent optional fields as None),
    e.g. ``{"event_type": "command_executed", "command": "think", "profile": None, ...}``.
    The envelope's id, timestamp and source are left out: they are not the application's
    to assert on.

    What the daemon would refuse is not captured, and is counted in that instance's
    ``tel.drops`` as it would be sent: an event the client drops itself (an invalid
    identifier), one that does not encode, and one the schema rejects (``invalid_field``,
    logged in debug mode), which outside a capture only the daemon would notice. Events
    are captured regardless of consent categories. Captures nest; the innermost gets the
    events. Thread-safe (appends only).
    """
    events: list[dict[str, Any]] = []
    previous = _telemetry._sink
    _telemetry.Telemetry._s = schema  # lets an instance built disabled build its payloads

    def sink(tel: Telemetry, payload: Any) -> None:
        try:
            event = _accepted(tel, payload)
        except Exception:  # a bug here must not reach the application under test either
            tel._drop("internal_error")
            return
        if event is not None:
            events.append(event)

    _telemetry._sink = sink
    try:
        yield events
    finally:
        _telemetry._sink = previous


def _accepted(tel: Telemetry, payload: Any) -> dict[str, Any] | None:
    """The event as the daemon would store it, or None (counted) when it would refuse it."""
    cls = type(payload)
    if cls not in schema.ENVELOPES:
        tel._drop("encode_error")
        return None
    try:
        data = msgspec.msgpack.encode(payload)
    except Exception:
        tel._drop("encode_error")
        return None
    if len(data) > MAX_FRAME_BYTES:  # the envelope adds ~200 bytes more: close enough
        tel._drop("oversized")
        return None
    field = schema_violation(payload)
    if field is not None:
        tel._invalid(cls.event_type, field, SCHEMA_RULE, "invalid_field")
        return None
    fields: dict[str, Any] = msgspec.msgpack.decode(data)
    return {"event_type": cls.event_type, **fields}
