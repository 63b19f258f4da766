"""The export stream: each format's framing, its chunks rendered in order, and the writer.

A chunk (CHUNK_ROWS events, a few MB of text) is rendered while the one before it is
being written by a background thread (:class:`Writer`), so the disk works while the CPU
renders; at most QUEUE_CHUNKS rendered chunks wait, so memory stays flat. Each format
frames its events with a :class:`Shape`: a head (an object, or the CSV header row), the
events joined by a separator, and an end that depends on whether there was any event.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TextIO

import apsw
from rkd.cli.export_csv import csv_header, payload_cells, pooled_csv
from rkd.cli.export_read import chunks, load_sources
from rkd.cli.export_render import Envelopes, csv_quote

QUEUE_CHUNKS: Final = 2  # rendered chunks waiting for the writer thread, at most


@dataclass(frozen=True)
class Shape:
    """How a format frames its events."""

    lead: str  # before the first event
    sep: str  # between events
    end: str  # after the last event
    empty_end: str  # after the head when there is no event


SHAPES: Final = {
    "json": Shape(lead="\n", sep=",\n", end="\n]}\n", empty_end="]}\n"),
    "ndjson": Shape(lead="", sep="\n", end="\n", empty_end=""),
    "csv": Shape(lead="", sep="\r\n", end="\r\n", empty_end=""),  # RFC 4180 line ends
}


def head_text(fmt: str, head: dict[str, Any]) -> str:
    """What comes before the events: the head object, or the CSV header row."""
    if fmt == "json":
        return json.dumps(head)[:-1] + ', "events": ['
    if fmt == "ndjson":
        return json.dumps(head) + "\n"
    return ",".join(map(csv_quote, csv_header())) + "\r\n"


def rendered_chunks(
    fmt: str, db: apsw.Connection | None, pool: Any = None
) -> Iterator[tuple[int, Iterable[str]]]:
    """(event count, lines) for each chunk of the database, in ``fmt``.

    With a ``pool``, CSV payload cells (the costly part: decode and flatten) are
    rendered by worker processes, a few chunks ahead, in order, with bounded memory.
    """
    envelopes = Envelopes(load_sources(db))
    if fmt != "csv":
        for c in chunks(db):
            yield len(c.payload), envelopes.json_lines(c)
        return
    if pool is None:
        for c in chunks(db):
            yield len(c.payload), envelopes.csv_lines(c, payload_cells(c.event_type, c.payload))
        return
    yield from pooled_csv(pool, chunks(db))


class Writer:
    """Writes text from a background thread, so the disk works while the next chunk renders.

    At most QUEUE_CHUNKS chunks wait (flat memory). A write error is re-raised in the
    caller at its next ``write`` or at ``close``.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.queue: queue.Queue[str | None] = queue.Queue(QUEUE_CHUNKS)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rkd-export-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (text := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.out.write(text)
                except BaseException as e:  # handed to the caller
                    self.error = e

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, text: str) -> None:
        self._check()
        self.queue.put(text)

    def close(self) -> None:
        """Wait for everything queued to be written, then flush."""
        self.queue.put(None)
        self.thread.join()
        self._check()
        self.out.flush()

    def abandon(self) -> None:
        """Stop the thread without waiting (after an error)."""
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)


def write_export(
    out: TextIO,
    fmt: str,
    head: dict[str, Any],
    db: Any,
    tick: Callable[[int], Any],
    pool: Any = None,
) -> None:
    """The whole export in ``fmt`` to ``out``, a chunk at a time."""
    shape, writer, n = SHAPES[fmt], Writer(out), 0
    try:
        writer.write(head_text(fmt, head))
        for count, lines in rendered_chunks(fmt, db, pool):
            writer.write((shape.sep if n else shape.lead) + shape.sep.join(lines))
            n += count
            tick(count)
        writer.write(shape.end if n else shape.empty_end)
        writer.close()
    except BaseException:
        writer.abandon()
        raise
