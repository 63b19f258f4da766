"""Hostile input at the sockets: rejected and counted by reason, daemon up, nothing lost."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from rkd.client import schema as s
from rkd.daemon.pipeline import Rejected, decode, decode_report

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import SOURCE, envelope, frame

RawPush = Callable[[list[bytes]], None]
VALID = frame(s.HelpViewed(topic="think"))


def as_dict(payload: s.Payload) -> dict[str, Any]:
    return msgspec.to_builtins(envelope(payload))  # type: ignore[no-any-return]


def unknown_type() -> bytes:
    d = as_dict(s.HelpViewed(topic="think"))
    d["event_type"] = "user_profile_uploaded"
    return msgspec.msgpack.encode(d)


def wrong_version() -> bytes:
    return frame(s.HelpViewed(topic="think"), schema_version="2.0.0")


def wrong_types() -> bytes:
    d = as_dict(s.ThinkToolCompleted(tool_name="gigathink"))
    d["payload"]["duration_ms"] = "slow"
    return msgspec.msgpack.encode(d)


def oversized() -> bytes:
    d = as_dict(s.HelpViewed(topic="think"))
    d["padding"] = "x" * (70 * 1024)  # an unknown field, but the frame is over 64 KiB
    return msgspec.msgpack.encode(d)


def bad_timestamp() -> bytes:
    return frame(s.HelpViewed(topic="think"), timestamp=dt.datetime(1999, 1, 1, tzinfo=dt.UTC))


CASES = [
    ("garbage bytes", lambda: b"\x00\xffGARBAGE\x13\x37", "malformed"),
    ("empty frame", lambda: b"", "malformed"),
    ("json instead of msgpack", lambda: json.dumps(as_dict(s.HelpViewed(topic="x")), default=str).encode(), "malformed"),
    ("truncated frame", lambda: VALID[: len(VALID) // 2], "malformed"),
    ("unknown event type", unknown_type, "unknown_event_type"),
    ("missing event type", lambda: msgspec.msgpack.encode({"payload": {}}), "unknown_event_type"),
    ("wrong schema version", wrong_version, "schema_version"),
    ("wrong field types", wrong_types, "invalid_field"),
    ("frame over 64 KiB", oversized, "oversized"),
    ("timestamp from 1999", bad_timestamp, "bad_timestamp"),
    ("malformed client report", lambda: msgspec.msgpack.encode(["client_report", "nope"]), "malformed_report"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_frame_is_rejected_and_counted(sandbox: Sandbox, daemon: Daemon, raw_push: RawPush,
                                           name: str, make: Callable[[], bytes], reason: str) -> None:  # fmt: skip
    """Each kind of bad frame is counted under its reason; valid neighbours are stored."""
    raw_push([VALID, make(), make(), frame(s.HelpViewed(topic="think"))])  # two distinct events
    wait_for(lambda: daemon.counter(f"rejected.{reason}") == 2, what=f"2 x rejected.{reason}")
    daemon.flush()
    assert 2 == sandbox.count()
    proc = sandbox.rkd("status", "--json")
    info = json.loads(proc.stdout)
    assert (True, 2) == (info["daemon"]["running"], info["counters"][f"rejected.{reason}"])


def test_frame_over_the_hard_limit_costs_only_that_connection(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """A frame over 1 MiB is refused by zmq itself; the daemon and other clients carry on."""
    raw_push([b"\x81" + b"x" * (2 * 1024 * 1024)])
    raw_push([VALID])
    wait_for(lambda: daemon.counter("accepted") == 1, what="the valid event")
    assert daemon.proc.poll() is None


FLOODER = """
import sys, zmq, msgspec
frames = msgspec.msgpack.decode(sys.stdin.buffer.read())
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.setsockopt(zmq.SNDHWM, 0)
s.connect(sys.argv[1])
for f in frames:
    s.send(f)
s.close(linger=30000)
ctx.term()
"""


def test_flood_from_eight_processes_loses_no_valid_event(sandbox: Sandbox, daemon: Daemon) -> None:
    """8 processes interleave 500 valid and 500 hostile frames each: all valid stored, all bad counted."""
    import subprocess
    import sys

    bad = [b"\xc1garbage", unknown_type(), wrong_version(), wrong_types(), oversized()]
    procs = []
    for p in range(8):
        frames = []
        for i in range(500):
            frames.append(frame(s.ThinkToolCompleted(tool_name=f"p{p}", duration_ms=i)))
            frames.append(bad[i % len(bad)])
        proc = subprocess.Popen([sys.executable, "-c", FLOODER, f"ipc://{daemon.runtime / 'events.sock'}"],
                                stdin=subprocess.PIPE, env=sandbox.env)  # fmt: skip
        proc.stdin.write(msgspec.msgpack.encode(frames))  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        procs.append(proc)
    for proc in procs:
        assert 0 == proc.wait(timeout=120)

    def rejected() -> int:
        return sum(v for k, v in daemon.status().counters.items() if k.startswith("rejected."))

    wait_for(lambda: rejected() == 4000, timeout=60, what="4000 rejections")
    daemon.flush()
    assert [(4000, 4000)] == sandbox.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
        " WHERE event_type = 'thinktool_completed'"
    )
    # and what the daemon derives: one session; per tool a first use and 5 milestones
    assert 1 + 8 * 6 == sandbox.count("event_type != 'thinktool_completed'", derived=True)
    c = daemon.status().counters
    assert [800] * 5 == [
        c[f"rejected.{r}"]
        for r in ("malformed", "unknown_event_type", "schema_version", "invalid_field", "oversized")
    ]


def test_control_socket_garbage_gets_an_error_reply(sandbox: Sandbox, daemon: Daemon) -> None:
    """Garbage, unknown ops and multipart requests on the control socket: error reply, counted."""
    ctx = zmq.Context()
    try:
        for msg in ([b"garbage"], [msgspec.msgpack.encode({"op": "drop_tables"})], [b"a", b"b"]):
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.RCVTIMEO, 5000)
            req.connect(f"ipc://{daemon.runtime / 'control.sock'}")
            req.send_multipart(msg)
            reply = msgspec.msgpack.decode(req.recv())
            req.close(linger=0)
            assert {"ok": False, "error": "malformed control request"} == {
                k: reply[k] for k in ("ok", "error")
            }
    finally:
        ctx.term()
    assert 3 == daemon.counter("rejected.control_malformed")


def test_client_report_counts_are_sanitised() -> None:
    """Report reasons come from a closed set (anything else is "other"); negative counts
    become 0 and huge ones are clamped, so no report can overflow a counter."""
    frame_ = msgspec.msgpack.encode(
        ["client_report", {"r" * 100: 5, "neg": -7, "spool_full": 2, "oversized": 2**64 - 1}]
    )
    assert ({"other": 5, "spool_full": 2, "oversized": 2**32}, 0) == decode_report(frame_)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_of_any_bytes_only_ever_rejects(data: bytes) -> None:
    """Whatever bytes arrive, decoding returns an envelope or raises Rejected, nothing else."""
    try:
        decode(data)
    except Rejected as r:
        assert r.reason in {
            "malformed",
            "unknown_event_type",
            "schema_version",
            "invalid_field",
            "oversized",
        }


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(s.PAYLOAD_TYPES), st.dictionaries(st.text(max_size=20), JSONISH, max_size=6))
def test_decode_of_hostile_payloads_only_ever_rejects(
    cls: type[s.Payload], payload: dict[str, Any]
) -> None:
    """Structurally plausible envelopes with hostile payloads are rejected cleanly or valid."""
    data = {"event_type": cls.event_type, "schema_version": "1.0.0", "event_id": str(uuid.uuid4()),
            "timestamp": "2026-01-01T00:00:00Z", "source": msgspec.to_builtins(SOURCE), "payload": payload}  # fmt: skip
    try:
        env = decode(msgspec.msgpack.encode(data))
    except Rejected as r:
        assert r.reason == "invalid_field"
    else:
        assert isinstance(env.payload, cls)  # type: ignore[attr-defined]
