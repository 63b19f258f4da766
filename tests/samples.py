"""Valid sample events of every type, generated from the schema itself.

Generating instead of hand-writing means a new event type is covered by every
parametrized test the moment it is added to the schema.
"""

from __future__ import annotations

import datetime as dt
import textwrap
import uuid
from typing import Any

import msgspec
import msgspec.inspect as mi
from rkd.client.schema import (
    ENVELOPES,
    PAYLOAD_TYPES,
    Envelope,
    Payload,
    Source,
    ThinkToolCompleted,
)
from rkd.client.wire import array_header, batch_prefix

SOURCE = Source(product="reasonkit-core", version="1.0.0", os="linux", arch="x86_64",
                python_version="3.11.7")  # fmt: skip


def sample_value(t: mi.Type) -> Any:
    """A valid value for msgspec type ``t`` (the first choice wherever there is one)."""
    match t:
        case mi.Metadata(type=inner):
            return sample_value(inner)
        case mi.StrType(pattern=p) if p and "v?[0-9]" in p:
            return "1.0.0"
        case mi.StrType():
            return "think"
        case mi.LiteralType(values=values):
            return values[0]
        case mi.BoolType():
            return True
        case mi.IntType():
            return 1
        case mi.FloatType():
            return 0.5
        case mi.UnionType(types=types):
            return sample_value(next(x for x in types if not isinstance(x, mi.NoneType)))
        case mi.StructType(cls=cls):
            return sample_struct(cls)
        case mi.VarTupleType(item_type=it) | mi.ListType(item_type=it):
            return (sample_value(it),)
    raise TypeError(f"no sample for {t}")


def sample_struct(cls: type[msgspec.Struct]) -> Any:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return cls(**{f.name: sample_value(f.type) for f in info.fields if f.required})


def sample_payload(cls: type[Payload]) -> Payload:
    """The smallest valid payload of ``cls`` (required fields only)."""
    return sample_struct(cls)  # type: ignore[no-any-return]


def envelope(payload: Payload, **over: Any) -> Envelope:
    fields: dict[str, Any] = dict(event_id=uuid.uuid4(), timestamp=dt.datetime.now(dt.UTC),
                                  source=SOURCE, payload=payload)  # fmt: skip
    fields.update(over)
    return ENVELOPES[type(payload)](**fields)


def frame(payload: Payload, **over: Any) -> bytes:
    return msgspec.msgpack.encode(envelope(payload, **over))


ALL_TYPES = PAYLOAD_TYPES


READY_CLIENT = """\
import sys, time
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
tel.thinktool("warmup")
tel.flush()  # connected, and the daemon confirmed the first event
print("ready", flush=True)
sys.stdin.readline()
"""


def ready_client(body: str) -> str:
    """Python for a client process that connects and has a warm-up event confirmed,
    prints "ready", waits for a line on stdin (``tests.conftest.go``), then runs
    ``body`` (``tel`` is its Telemetry; ``sys`` and ``time`` are imported)."""
    return READY_CLIENT + textwrap.dedent(body)


def leaving_client(events: int, tool: str) -> str:
    """:func:`ready_client` that sends ``events`` ThinkTool events named ``tool``, then
    prints how long ``tel.close()`` took, in seconds."""
    return ready_client(f"""
        for i in range({events}):
            tel.thinktool({tool!r}, duration_ms=i)
        t = time.perf_counter(); tel.close(); print(time.perf_counter() - t, flush=True)
    """)


def events(n: int, tool: str = "gigathink") -> list[bytes]:
    """``n`` encoded ThinkTool events (``duration_ms`` 0..n-1), as a client frames them."""
    return [frame(ThinkToolCompleted(tool_name=tool, duration_ms=i)) for i in range(n)]


def batch(client: int, seq: int, frames: list[bytes]) -> bytes:
    """A numbered batch of a client's connection, as the transport sends it."""
    return (
        batch_prefix(client) + msgspec.msgpack.encode(seq) + array_header(len(frames))
        + b"".join(frames)
    )  # fmt: skip
