"""The text of exported values: CSV cells, and each chunk's envelopes as JSON or CSV.

Speed comes from rendering a whole column of a chunk at a time with C-level
``map``/``zip``/``join`` instead of Python code per field, and from formatting what
repeats (seconds, sources, sessions, names) once: :class:`Memo` keeps up to 8,192
rendered texts per kind and starts over when full, so memory stays flat. The payload
is stored as JSON text and goes into JSON output unchanged; CSV payload cells are
rendered in :mod:`rkd.cli.export_csv`.

Timestamps are RFC 3339 UTC with milliseconds, equal to ``storage.iso_ms``; event and
session ids are 16 bytes stored, canonical UUID text exported.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from operator import add, floordiv, mod
from typing import Any, Final

import msgspec
from rkd.cli.export_read import SOURCE_FIELDS, Chunk
from rkd.client.clock import iso_ms

_NEEDS_QUOTES = re.compile(r'[",\r\n]').search
_MILLIS: Final = tuple(f".{i:03d}Z" for i in range(1000))


def csv_quote(text: str) -> str:
    """``text`` as one RFC 4180 field, quoted only when it must be."""
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES(text) else text


def json_cell(value: Any) -> str:
    """A CSV cell holding ``value`` as JSON text (arrays and objects)."""
    return csv_quote(msgspec.json.encode(value).decode())


# A cell's text by the type of its value; anything else (tuples) is JSON text.
RENDER: Final[dict[type, Callable[[Any], str]]] = {
    int: str, float: str, str: csv_quote, bool: {True: "true", False: "false"}.__getitem__,
}  # fmt: skip


def csv_cell(value: Any) -> str:
    """One CSV cell: None empty, booleans true/false, arrays and objects as JSON text."""
    return "" if value is None else RENDER.get(type(value), json_cell)(value)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def uuid_texts(raw: Iterable[bytes]) -> list[str]:
    """16-byte ids as canonical 8-4-4-4-12 UUID text (what ``str(uuid.UUID)`` gives)."""
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in map(bytes.hex, raw)]


class Memo(dict[Any, str]):
    """Rendered text by key, computed on first use; emptied when full (flat memory)."""

    def __init__(self, render: Callable[[Any], str], limit: int = 8192) -> None:
        super().__init__()
        self.render, self.limit = render, limit

    def __missing__(self, key: Any) -> str:
        if len(self) >= self.limit:
            self.clear()
        text = self[key] = self.render(key)
        return text


class Envelopes:
    """The envelope fields of a chunk, as JSON or CSV text, a whole column at a time."""

    def __init__(self, sources: dict[int, tuple[Any, ...]]) -> None:
        def source(sid: int) -> tuple[Any, ...]:
            return sources.get(sid, (None,) * len(SOURCE_FIELDS))

        self.second = Memo(lambda s: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)))
        self.json_text = Memo(_json)
        self.json_source = Memo(
            lambda sid: _json(dict(zip(SOURCE_FIELDS, source(sid), strict=True)))
        )
        self.json_time = Memo(lambda ms: "null" if ms is None else f'"{iso_ms(ms)}"')
        self.csv_text = Memo(csv_cell)
        self.csv_source = Memo(lambda sid: ",".join(map(csv_cell, source(sid))))
        self.csv_time = Memo(lambda ms: "" if ms is None else iso_ms(ms))

    def timestamps(self, ts_ms: Sequence[int]) -> Iterator[str]:
        """RFC 3339 UTC with milliseconds, equal to ``iso_ms``; each second formatted once."""
        seconds = map(self.second.__getitem__, map(floordiv, ts_ms, repeat(1000)))
        return map(add, seconds, map(_MILLIS.__getitem__, map(mod, ts_ms, repeat(1000))))

    def json_lines(self, c: Chunk) -> Iterator[str]:
        """One envelope per row, keys in the order of ``storage.row_to_envelope``."""
        text = self.json_text.__getitem__
        return map("".join, zip(
            repeat('{"schema_version":'), map(text, c.schema_version),
            repeat(',"event_id":"'), uuid_texts(c.event_id),
            repeat('","event_type":'), map(text, c.event_type),
            repeat(',"timestamp":"'), self.timestamps(c.ts_ms),
            repeat('","source":'), map(self.json_source.__getitem__, c.source_id),
            repeat(',"session":{"id":'), map(text, c.session_uuid),
            repeat(',"sequence":'), map(str, c.sequence),
            repeat(',"started_at":'), map(self.json_time.__getitem__, c.started_ms),
            repeat('},"payload":'), c.payload, repeat("}"),
        ))  # fmt: skip

    def csv_lines(self, c: Chunk, payload_cells: Iterable[str]) -> Iterator[str]:
        """One CSV row per event: the envelope columns, then ``payload_cells``."""
        text = self.csv_text.__getitem__
        return map(",".join, zip(
            uuid_texts(c.event_id), map(text, c.event_type), map(text, c.schema_version),
            self.timestamps(c.ts_ms), map(self.csv_source.__getitem__, c.source_id),
            map(text, c.session_uuid), map(str, c.sequence),
            map(self.csv_time.__getitem__, c.started_ms), payload_cells, strict=True,
        ))  # fmt: skip
