"""The wire protocol shared by the daemon's sync and the server (client/cloud.py,
client/report.py): what the upload filter produces always decodes on the other side,
and the signature covers every part the protocol names."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
import pytest
from rkd.client import cloud
from rkd.client.report import CommunityReport, decode_report
from rkd.client.upload import OTHER, upload_filter
from rkd.client.vocabulary import parse_vocabulary, reasonkit_vocabulary

from tests.samples import ALL_TYPES, envelope, sample_payload

NOTHING = parse_vocabulary(b'product = "reasonkit-core"\nversion = 1\n')


@pytest.mark.parametrize("vocabulary", [NOTHING, reasonkit_vocabulary()], ids=["empty", "rk"])
def test_every_filtered_event_type_decodes_as_a_batch(vocabulary: object) -> None:
    """Every event type, filtered by a vocabulary that declares nothing (every string
    becomes __other__) or by ReasonKit's, decodes with the server's batch schema."""
    events = [upload_filter(envelope(sample_payload(t)), vocabulary) for t in ALL_TYPES]  # type: ignore[arg-type]
    body = msgspec.msgpack.encode({"batch_id": uuid.uuid4().hex, "events": events})
    batch = cloud.decode_batch(body)
    assert len(ALL_TYPES) == len(batch.events)
    if vocabulary is NOTHING:
        assert all(e.source.version == OTHER for e in batch.events)


def test_a_batch_refuses_extra_fields_and_too_many_events() -> None:
    event = upload_filter(envelope(sample_payload(ALL_TYPES[0])), NOTHING)
    bid = uuid.uuid4().hex
    with pytest.raises(msgspec.ValidationError):
        cloud.decode_batch(msgspec.msgpack.encode({"batch_id": bid, "events": [event], "ip": 1}))
    with pytest.raises(msgspec.ValidationError):
        cloud.decode_batch(msgspec.msgpack.encode({"batch_id": bid, "events": [event] * 1001}))
    with pytest.raises(msgspec.ValidationError):
        cloud.decode_batch(msgspec.msgpack.encode({"batch_id": "x" * 32, "events": []}))


def test_the_signature_covers_each_part() -> None:
    parts = ("POST", cloud.EVENTS_PATH, "1796000000", "ab" * 16, "cd" * 16, b"body")
    sig = cloud.sign(b"secret", *parts)
    assert cloud.signature_ok(b"secret", sig, *parts)
    assert not cloud.signature_ok(b"other", sig, *parts)
    for i in range(len(parts)):
        changed = list(parts)
        changed[i] = changed[i] + (b"x" if isinstance(changed[i], bytes) else "x")  # type: ignore[operator]
        assert not cloud.signature_ok(b"secret", sig, *changed)  # type: ignore[arg-type]
    assert not cloud.signature_ok(b"secret", "é" * 64, *parts)


def test_a_report_round_trips_and_refuses_undeclared_shapes() -> None:
    report = CommunityReport(
        day=dt.date(2026, 12, 7), product="reasonkit-core", version="1.2", os="linux",
        arch="x86_64", cohort_week="2026-W49", install_age_days=0, new_install=True,
        first_of_week=True, first_of_month=True, sessions=1, commands=3, errors=0,
        counts={"command": {"think": 3, OTHER: 1}}, latency_ms=[1, 2],
    )  # fmt: skip
    assert report == decode_report(msgspec.msgpack.encode(report))
    raw = msgspec.to_builtins(report)
    for bad in ({"version": "1.2.3"}, {"install_age_days": 99}, {"session_id": "x"},
                {"counts": {"paths": {"a": 1}}}, {"counts": {"command": {"/home/a": 1}}},
                {"counts": {"command": {f"c{i}": 1 for i in range(65)}}}):  # fmt: skip
        with pytest.raises(msgspec.ValidationError):
            decode_report(msgspec.msgpack.encode({**raw, **bad}))
