"""The client's fast paths put on the wire exactly what msgspec would encode from the schema."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rkd.client import Telemetry, schema
from rkd.client.ids import uuid4_batch

from tests.samples import ALL_TYPES, sample_payload

DECODE = msgspec.msgpack.Decoder(schema.Event).decode


class Capture:
    """Stands in for the transport: keeps the frames, counts drops."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.drops: dict[str, int] = {}

    def send(self, frame: bytes, urgent: bool = False) -> None:
        self.frames.append(frame)

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def capturing_telemetry(tmp_path: Path) -> tuple[Telemetry, Capture]:
    """An enabled Telemetry in ``tmp_path`` whose frames are captured, not sent."""
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "RK_TELEMETRY_ENABLED": "true",
    }
    tel = Telemetry(product="reasonkit-core", version="1.0.0", env=env)
    assert tel.enabled, tel.disabled_reason
    capture = Capture()
    tel._transport = capture
    return tel, capture


def test_batched_ids_are_distinct_canonical_uuid4() -> None:
    """Every id of a batch is the canonical text of a version-4, RFC 4122 uuid, none repeated."""
    ids = uuid4_batch(4096)
    parsed = [uuid.UUID(i) for i in ids]
    assert 4096 == len(set(ids))
    assert {(4, uuid.RFC_4122)} == {(u.version, u.variant) for u in parsed}
    assert ids == [str(u) for u in parsed]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.event_type)
def test_emitted_frame_is_msgspecs_encoding_of_the_envelope(tmp_path: Path, cls: Any) -> None:
    """A frame from emit() decodes to an envelope whose msgspec encoding is the frame itself."""
    tel, capture = capturing_telemetry(tmp_path)
    payload = sample_payload(cls)
    tel.emit(payload)
    (frame,) = capture.frames
    env = DECODE(frame)
    assert (payload, uuid.UUID, 4) == (env.payload, type(env.event_id), env.event_id.version)
    assert frame == msgspec.msgpack.encode(env)


def test_command_block_frame_is_msgspecs_encoding(tmp_path: Path) -> None:
    """A command block's frame carries its tokens and re-encodes to the same bytes."""
    tel, capture = capturing_telemetry(tmp_path)
    with tel.command("think", profile="balanced") as cmd:
        cmd.tokens(input=1500, output=800, model="claude-3-5-sonnet-20241022")
        cmd.tokens(input=1, cached=7)
    (frame,) = capture.frames
    env = DECODE(frame)
    expected = schema.Tokens(input=1501, output=800, cached=7, model="claude-3-5-sonnet-20241022")
    assert expected == env.payload.tokens
    assert frame == msgspec.msgpack.encode(env)
