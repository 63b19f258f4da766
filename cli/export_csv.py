"""CSV export: the columns derived from the schema, the payload cells, the worker pool.

The header comes from the schema, never from the data, so two exports always share it:
the envelope's columns, then ``payload.`` and the dotted key path of every payload leaf
of every event type (the schema nests Structs one level deep). Each row puts an event's
payload fields in their columns and leaves the others empty.

CSV must decode every payload and render its cells one by one, so it takes about twice
as long as JSON. A large export (POOL_MIN_EVENTS events or more, on two cores or more)
renders whole chunks in up to 4 forked worker processes, POOL_AHEAD chunks ahead of the
one being written, in order: memory stays bounded. Workers only turn the rows they are
given into text; they never touch the database or the output. What they run
(:func:`csv_text`, :func:`_init_worker`) stays at module level, so it pickles by name.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import apsw
import msgspec
import msgspec.inspect as mi
from rkd.cli.export_read import SOURCE_FIELDS, Chunk, ExportError, load_sources
from rkd.cli.export_render import RENDER, Envelopes, Memo, csv_quote, json_cell
from rkd.client.schema import PAYLOAD_TYPES

POOL_MIN_EVENTS: Final = 50_000  # a CSV export this large renders payloads in worker processes
POOL_AHEAD: Final = 4  # chunks handed to the workers ahead of the one being written
ENVELOPE_COLUMNS: Final = (
    "event_id", "event_type", "schema_version", "timestamp",
    *(f"source.{f}" for f in SOURCE_FIELDS),
    "session.id", "session.sequence", "session.started_at",
)  # fmt: skip


# -- the columns, derived from the schema -------------------------------------------------


def _unwrap(t: mi.Type) -> mi.Type:
    """``t`` without its constraints, and without ``| None`` when one type is left."""
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
        elif isinstance(t, mi.UnionType) and len(kept := [
            x for x in t.types if not isinstance(x, mi.NoneType)
        ]) == 1:  # fmt: skip
            t = kept[0]
        else:
            return t


def payload_leaves(payload_type: type[msgspec.Struct]) -> list[tuple[str, ...]]:
    """The JSON key path of every leaf of a payload type; nested Structs are walked."""
    info = mi.type_info(payload_type)
    assert isinstance(info, mi.StructType)
    leaves: list[tuple[str, ...]] = []
    for f in info.fields:
        t = _unwrap(f.type)
        if isinstance(t, mi.StructType):
            leaves += [(f.encode_name, *path) for path in payload_leaves(t.cls)]
        else:
            leaves.append((f.encode_name,))
    return leaves


def csv_header() -> tuple[str, ...]:
    """The CSV columns: the envelope's, then every payload leaf of every event type.

    Payload columns are ``payload.`` and the dotted key path, in first-seen order walking
    the schema's event types, so the header depends on the schema only.
    """
    seen: dict[str, None] = {}
    for p in PAYLOAD_TYPES:
        seen.update(dict.fromkeys("payload." + ".".join(path) for path in payload_leaves(p)))
    return (*ENVELOPE_COLUMNS, *seen)


# -- the payload cells ----------------------------------------------------------------------

Layout = tuple[
    tuple[tuple[str, int], ...],  # (key, column) of each scalar field
    tuple[tuple[str, tuple[tuple[str, int], ...]], ...],  # (key, ((subkey, column), ...))
]


def layout(payload_type: type[msgspec.Struct], column: dict[str, int]) -> Layout:
    """Where each field of one event type goes among the payload columns."""
    top: list[tuple[str, int]] = []
    nested: dict[str, list[tuple[str, int]]] = {}
    for path in payload_leaves(payload_type):
        at = column["payload." + ".".join(path)]
        assert len(path) <= 2, "the schema nests Structs one level deep; deeper needs a loop here"
        if len(path) == 1:
            top.append((path[0], at))
        else:
            nested.setdefault(path[0], []).append((path[1], at))
    return tuple(top), tuple((k, tuple(v)) for k, v in nested.items())


class CsvPayloads:
    """The payload columns of CSV rows: each event type's fields in their columns."""

    def __init__(self, columns: Sequence[str]) -> None:
        column = {name: i for i, name in enumerate(columns)}
        self.layouts = {p.event_type: layout(p, column) for p in PAYLOAD_TYPES}
        self.empty = [""] * len(columns)
        self.decode = msgspec.json.Decoder().decode
        # Strings repeat (tool, command, model names): quote each once.
        self.render = {**RENDER, str: Memo(csv_quote).__getitem__}.get

    def cells(self, event_type: str, payload: str) -> str:
        """One event's payload cells. The CSV hot path: kept flat on purpose."""
        fields = self.layouts.get(event_type)
        if fields is None:
            raise ExportError(
                f"the database holds events of type {event_type!r}, unknown to this rkd;"
                " upgrade rkd, or export with --format json"
            )
        try:
            d = self.decode(payload)
        except msgspec.DecodeError:
            d = None
        if type(d) is not dict:
            raise ExportError("the database holds an event whose payload is not a JSON object")
        top, nested = fields
        cells, render = self.empty.copy(), self.render
        for key, at in top:
            if (v := d.get(key)) is not None:
                cells[at] = render(type(v), json_cell)(v)
        for key, subs in nested:
            if type(inner := d.get(key)) is dict:
                for sub, at in subs:
                    if (v := inner.get(sub)) is not None:
                        cells[at] = render(type(v), json_cell)(v)
        return ",".join(cells)


def payload_cells(event_types: Sequence[str], payloads: Sequence[str]) -> list[str]:
    """The payload cells of a chunk."""
    return list(map(_csv_payloads().cells, event_types, payloads))


# -- the worker pool ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # in a worker process: its Envelopes and CsvPayloads


def _csv_payloads() -> CsvPayloads:
    if "payloads" not in _WORKER:
        _WORKER["payloads"] = CsvPayloads(csv_header()[len(ENVELOPE_COLUMNS) :])
    return _WORKER["payloads"]  # type: ignore[no-any-return]


def _init_worker(sources: dict[int, tuple[Any, ...]]) -> None:
    _WORKER["envelopes"] = Envelopes(sources)


def csv_text(c: Chunk) -> str:
    """A whole chunk as CSV rows (run in a worker process for large CSV exports)."""
    lines = _WORKER["envelopes"].csv_lines(c, payload_cells(c.event_type, c.payload))
    return "\r\n".join(lines)


def pooled_csv(pool: Any, chunks: Iterable[Chunk]) -> Iterator[tuple[int, Iterable[str]]]:
    """(event count, text) for each chunk, rendered by ``pool`` a few chunks ahead, in order."""
    ahead: deque[tuple[int, Any]] = deque()
    for c in chunks:
        ahead.append((len(c.payload), pool.apply_async(csv_text, (c,))))
        if len(ahead) > POOL_AHEAD:
            n, result = ahead.popleft()
            yield n, (result.get(),)
    while ahead:
        n, result = ahead.popleft()
        yield n, (result.get(),)


@contextlib.contextmanager
def csv_pool(fmt: str, count: int, db: apsw.Connection | None) -> Iterator[Any]:
    """Worker processes for a large CSV export on a multi-core machine, else None.

    Forked before any other thread of ours starts. Workers only render text from the
    rows they are given; they never touch the database or the output.
    """
    cores = os.cpu_count() or 1
    if fmt != "csv" or count < POOL_MIN_EVENTS or cores < 2:
        yield None
        return
    import multiprocessing

    pool = multiprocessing.get_context("fork").Pool(
        processes=min(cores, 4), initializer=_init_worker, initargs=(load_sources(db),)
    )
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()
