"""The export stream: each format's framing, its chunks rendered in order, and the writer.

A chunk (CHUNK_ROWS events, a few MB of text) is rendered while the one before it is
being written by a background thread (:class:`Writer`), so the disk works while the CPU
renders; at most QUEUE_CHUNKS rendered chunks wait, so memory stays flat. Each format
frames its events with a :class:`Shape`: a head (an object, or the CSV header row), the
events joined by a separator, and an end that depends on whether there was any event.
:class:`OutputFile` is where a file export goes: a new private file beside the target,
renamed over it only once complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import apsw
from rkd.cli.export_csv import csv_header, payload_cells, pooled_csv
from rkd.cli.export_read import ExportError, chunks, load_sources
from rkd.cli.export_render import Envelopes, csv_quote

QUEUE_CHUNKS: Final = 2  # rendered chunks waiting for the writer thread, at most
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class OutputFile:
    """An export file: written to a new 0600 file beside ``path``, renamed over it by
    :meth:`commit`; :meth:`discard` removes it and leaves ``path`` as it was.

    The new file is created with ``O_EXCL | O_NOFOLLOW``, so it can be neither a file nor
    a symlink someone prepared. An existing ``path`` that is a folder, another user's
    file, or a symlink to a file is refused, never written through or replaced. A pipe
    or device of ours or root's (``/dev/null``, ``/dev/stdout``, the ``/dev/fd/63`` of
    a shell's ``>(...)``) is written in place (``regular`` is then False), checked again
    on the open descriptor so a symlink swapped meanwhile cannot redirect the export.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp: Path | None = None
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            st = self._through_link()
        if st is not None:
            self._check(st)
        self.regular = st is None or stat.S_ISREG(st.st_mode)
        fd = self._create() if self.regular else self._open_stream()
        # Closed by commit or discard, whichever comes.
        self.file: TextIO = open(fd, "w", encoding="utf-8", newline="", buffering=1 << 20)  # noqa: SIM115

    def _through_link(self) -> os.stat_result:
        """What a symlink ``path`` leads to, if it is a pipe or device; else refused."""
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is None or stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            raise ExportError(f"{self.path}: is a symbolic link; refusing to write through it")
        return st

    def _check(self, st: os.stat_result) -> None:
        """Refuse an existing target rkd must not write through or replace."""
        if stat.S_ISDIR(st.st_mode):
            raise ExportError(f"{self.path}: is a directory; give a file name")
        owners = (os.getuid(),) if stat.S_ISREG(st.st_mode) else (os.getuid(), 0)
        if st.st_uid not in owners:
            raise ExportError(
                f"{self.path}: belongs to another user (uid {st.st_uid}); refusing to replace it"
            )

    def _create(self) -> int:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, _NEW_FILE, 0o600)
        except FileNotFoundError:
            raise ExportError(f"{self.path.parent}: no such directory") from None
        except OSError as e:
            raise ExportError(f"{self.path}: cannot write: {e.strerror}") from None
        self.tmp = tmp
        return fd

    def _open_stream(self) -> int:
        """Open a pipe or device for writing (never created, never truncated)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ExportError(f"{self.path}: cannot write: {e.strerror}") from None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):  # swapped since lstat
            os.close(fd)
            raise ExportError(f"{self.path}: changed while being opened; refusing to write")
        try:
            self._check(st)
        except ExportError:
            os.close(fd)
            raise
        return fd

    def commit(self) -> None:
        """Flush, fsync and close; then put the new file in place of ``path``."""
        self.file.flush()
        if self.tmp is not None:
            os.fsync(self.file.fileno())
        self.file.close()
        if self.tmp is not None:
            os.replace(self.tmp, self.path)  # replaces a name, never follows a symlink
            self.tmp = None

    def discard(self) -> bool:
        """Close and remove the new file; whether there was one (``path`` is untouched)."""
        with contextlib.suppress(OSError, ValueError):
            self.file.close()
        if self.tmp is None:
            return False
        self.tmp.unlink(missing_ok=True)
        self.tmp = None
        return True


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
