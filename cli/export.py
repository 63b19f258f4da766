"""`rkd export`: everything stored about the user, plus the consent record (GDPR Art. 15, 20).

Three formats, all streamed a chunk at a time, so memory stays flat for any number of
events:

- ``json``: one object ``{"exported_at", "database", "event_count", "consent", "events"}``
  whose ``events`` hold one envelope (spec §3.1) per line.
- ``ndjson``: that object without ``events`` on the first line, then one envelope per
  line (envelopes are the lines with an ``event_type``).
- ``csv``: a header derived from the schema, never from the data (two exports always
  share it), then one event per row with nested payload fields as dotted columns. The
  consent record does not fit in rows: beside ``FILE`` it goes to ``FILE.consent.json``.

The database is read read-only inside one read transaction: the count and the rows are
one snapshot while the daemon keeps writing, and no database means an empty export
(nothing is created). Files are created 0600.

Speed (bench/export.py: a million events in about 6 s as JSON or NDJSON on 2 cores)
comes from rendering the envelope a whole column of a chunk at a time with C-level
``map``/``zip``/``join`` instead of Python code per field, from splicing the payload,
stored as JSON text, into JSON output unchanged, from formatting what repeats (seconds,
sources, sessions, names) once (:class:`Memo`), and from a thread that writes while the
next chunk renders. CSV must decode every payload and render its cells one by one: it
takes about twice as long.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import queue
import re
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import add, floordiv, mod
from pathlib import Path
from typing import Any, Final, NamedTuple, TextIO

import apsw
import click
import msgspec
import msgspec.inspect as mi
from rkd.client.consent import ConsentError, consent_dict, consent_path, now_iso
from rkd.client.schema import PAYLOAD_TYPES
from rkd.client.spool import spool_files
from rkd.daemon.storage import SCHEMA_VERSION, StorageError, iso_ms, open_read_only

FORMATS: Final = ("json", "ndjson", "csv")
CHUNK_ROWS: Final = 5_000  # rows rendered and written at a time (a few MB of text)
QUEUE_CHUNKS: Final = 2  # rendered chunks waiting for the writer thread, at most
POOL_MIN_EVENTS: Final = 50_000  # a CSV export this large renders payloads in worker processes
POOL_AHEAD: Final = 4  # chunks handed to the workers ahead of the one being written
PROGRESS_MIN_EVENTS: Final = 10_000
SOURCE_FIELDS: Final = ("product", "version", "tier", "os", "arch", "python_version")
ENVELOPE_COLUMNS: Final = (
    "event_id", "event_type", "schema_version", "timestamp",
    *(f"source.{f}" for f in SOURCE_FIELDS),
    "session.id", "session.sequence", "session.started_at",
)  # fmt: skip

# Oldest first. Sources are few and read once; the session comes with each row (a LEFT
# JOIN, so that no event can ever be left out of an export).
ROWS_SQL: Final = """
    SELECT e.event_id, e.event_type, e.schema_version, e.ts_ms, e.source_id,
           ss.uuid, e.sequence, ss.started_ms, e.payload
    FROM events e LEFT JOIN sessions ss ON ss.id = e.session_id
    ORDER BY e.id
"""
SOURCES_SQL: Final = f"SELECT id, {', '.join(SOURCE_FIELDS)} FROM sources"


class ExportError(click.ClickException):
    """The export cannot be made. The message is one line and shows no stored value."""


class Chunk(NamedTuple):
    """Up to CHUNK_ROWS rows of ``ROWS_SQL``, transposed: one tuple per column."""

    event_id: Sequence[bytes]
    event_type: Sequence[str]
    schema_version: Sequence[str]
    ts_ms: Sequence[int]
    source_id: Sequence[int]
    session_uuid: Sequence[str | None]
    sequence: Sequence[int]
    started_ms: Sequence[int | None]
    payload: Sequence[str]


# -- the CSV columns, derived from the schema -------------------------------------------


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


# -- rendering ------------------------------------------------------------------------------

_NEEDS_QUOTES = re.compile(r'[",\r\n]').search
_MILLIS: Final = tuple(f".{i:03d}Z" for i in range(1000))


def csv_quote(text: str) -> str:
    """``text`` as one RFC 4180 field, quoted only when it must be."""
    return '"' + text.replace('"', '""') + '"' if _NEEDS_QUOTES(text) else text


def _json_cell(value: Any) -> str:
    return csv_quote(msgspec.json.encode(value).decode())


# A cell's text by the type of its value; anything else (tuples) is JSON text.
_RENDER: Final[dict[type, Callable[[Any], str]]] = {
    int: str, float: str, str: csv_quote, bool: {True: "true", False: "false"}.__getitem__,
}  # fmt: skip


def csv_cell(value: Any) -> str:
    """One CSV cell: None empty, booleans true/false, arrays and objects as JSON text."""
    return "" if value is None else _RENDER.get(type(value), _json_cell)(value)


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
        self.render = {**_RENDER, str: Memo(csv_quote).__getitem__}.get

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
                cells[at] = render(type(v), _json_cell)(v)
        for key, subs in nested:
            if type(inner := d.get(key)) is dict:
                for sub, at in subs:
                    if (v := inner.get(sub)) is not None:
                        cells[at] = render(type(v), _json_cell)(v)
        return ",".join(cells)


# -- reading --------------------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(path: Path) -> Iterator[apsw.Connection | None]:
    """The database read-only, inside one read transaction; None when there is none yet.

    One transaction makes the count, the sources and the rows one consistent snapshot
    while the daemon keeps writing (WAL readers neither block nor are blocked).
    """
    try:
        db = open_read_only(path)
    except StorageError as e:
        raise ExportError(str(e)) from None
    if db is None:
        yield None
        return
    try:
        db.set_busy_timeout(5000)
        db.execute("BEGIN")
        version = db.execute("PRAGMA user_version").get
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ExportError(
                f"{path}: database schema {version} is newer than this rkd understands"
                f" ({SCHEMA_VERSION}); upgrade rkd"
            )
        yield db if version else None  # user_version 0: created, not initialised yet
    except apsw.Error as e:
        raise ExportError(f"{path}: cannot read the database: {e}") from None
    finally:
        db.close()


def count_events(db: apsw.Connection | None) -> int:
    n = db.execute("SELECT count(*) FROM events").get if db is not None else 0
    return n if isinstance(n, int) else 0


def chunks(db: apsw.Connection | None) -> Iterator[Chunk]:
    """Every stored event, oldest first, CHUNK_ROWS rows at a time, transposed."""
    if db is None:
        return
    cursor = db.execute(ROWS_SQL)
    while rows := list(islice(cursor, CHUNK_ROWS)):
        yield Chunk._make(zip(*rows, strict=True))


def load_sources(db: apsw.Connection | None) -> dict[int, tuple[Any, ...]]:
    """Every source (product, version, platform) by id: a small table, read once."""
    return {} if db is None else {r[0]: tuple(r[1:]) for r in db.execute(SOURCES_SQL)}


def read_consent(data_dir: Path) -> dict[str, object] | None:
    """The consent record as plain data, or None if the user never decided."""
    try:
        return consent_dict(data_dir)
    except ConsentError as e:
        raise ExportError(str(e)) from None


# -- formats --------------------------------------------------------------------------------


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


def payload_cells(event_types: Sequence[str], payloads: Sequence[str]) -> list[str]:
    """The payload cells of a chunk."""
    return list(map(_csv_payloads().cells, event_types, payloads))


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
    ahead: deque[tuple[int, Any]] = deque()
    for c in chunks(db):
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


# -- output ---------------------------------------------------------------------------------


def open_private(path: Path) -> TextIO:
    """``path`` opened for writing as an owner-only (0600) file, truncated if it exists.

    An existing regular file with a looser mode is tightened to 0600 before anything is
    written; devices and pipes (``/dev/null``, a FIFO) are written as they are.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except IsADirectoryError:
        raise ExportError(f"{path}: is a directory; give a file name") from None
    except FileNotFoundError:
        raise ExportError(f"{path.parent}: no such directory") from None
    except OSError as e:
        raise ExportError(f"{path}: cannot write: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError as e:
        os.close(fd)
        raise ExportError(f"{path}: cannot make it private (0600): {e.strerror}") from None
    return open(fd, "w", encoding="utf-8", newline="", buffering=1 << 20)


class Target:
    """Where the export goes: stdout, or files that are removed again if the export fails."""

    def __init__(self, output: str) -> None:
        self.path = None if output == "-" else Path(output)
        self.files: list[tuple[Path, TextIO]] = []

    @property
    def is_file(self) -> bool:
        """Whether the output is a regular file (not stdout, a device or a pipe)."""
        return self.path is not None and self.path.is_file()

    def open(self, path: Path) -> TextIO:
        f = open_private(path)
        self.files.append((path, f))
        return f

    def close(self) -> list[Path]:
        """Close every file (a full disk shows up here too); return their paths."""
        for _, f in self.files:
            f.close()
        paths = [p for p, _ in self.files]
        self.files.clear()
        return paths

    def discard(self) -> list[Path]:
        """Close and remove what was written (regular files only); return what was removed."""
        removed = []
        for path, f in self.files:
            with contextlib.suppress(OSError, ValueError):
                f.close()
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
        self.files.clear()
        return removed


def refuse_own_files(path: Path, settings: Any) -> None:
    """Refuse to write the export over the database or the consent record."""
    db = settings.db_path
    for own in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), consent_path(settings.data_dir)):
        with contextlib.suppress(OSError):
            if os.path.samefile(path, own):
                raise ExportError(f"{path}: that is rkd's own data; choose another file")


def guess_format(output: str) -> str:
    """The format a file name implies: .csv, .ndjson or .jsonl, else json."""
    suffix = Path(output).suffix.lower() if output != "-" else ""
    return {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}.get(suffix, "json")


@contextlib.contextmanager
def progress(count: int, to_stdout: bool) -> Iterator[Callable[[int], Any]]:
    """``tick(n)`` for a stderr progress bar: big exports, stderr a terminal, and the
    data itself not going to that terminal. Otherwise ``tick`` does nothing."""
    if (
        count < PROGRESS_MIN_EVENTS
        or not sys.stderr.isatty()
        or (to_stdout and sys.stdout.isatty())
    ):
        yield lambda n: None
        return
    with click.progressbar(length=count, label="Exporting", file=sys.stderr) as bar:
        yield bar.update


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector meanwhile: rendering makes millions of
    short-lived, acyclic objects that it would only rescan, for nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def export_to(settings: Any, output: str, fmt: str) -> tuple[int, list[Path]]:
    """Export ``settings``' data to ``output``; return (events, files written)."""
    consent = read_consent(settings.data_dir)
    target = Target(output)
    if target.path is not None:
        refuse_own_files(target.path, settings)
    with snapshot(settings.db_path) as db:
        count = count_events(db)
        head = {"exported_at": now_iso(), "database": str(settings.db_path),
                "event_count": count, "consent": consent}  # fmt: skip
        try:
            out = sys.stdout if target.path is None else target.open(target.path)
            if fmt == "csv" and target.is_file:
                sidecar = target.open(Path(f"{target.path}.consent.json"))
                sidecar.write(json.dumps(head, indent=2) + "\n")
            with (
                csv_pool(fmt, count, db) as pool,
                progress(count, target.path is None) as tick,
                gc_paused(),
            ):
                write_export(out, fmt, head, db, tick, pool)
            return count, target.close()
        except BaseException as e:
            raise failed(e, target, settings.db_path) from None


def failed(e: BaseException, target: Target, db_path: Path) -> BaseException:
    """What to raise when the export broke off, after removing the partial files."""
    removed = target.discard()
    note = f"; removed the incomplete {', '.join(map(str, removed))}" if removed else ""
    if isinstance(e, ExportError):
        return ExportError(e.message + note)
    if isinstance(e, apsw.Error):
        return ExportError(f"{db_path}: cannot read the database: {e}{note}")
    if isinstance(e, BrokenPipeError):
        return e  # `rkd export | head`: click exits quietly
    if isinstance(e, OSError):
        return ExportError(f"{target.path or 'stdout'}: cannot write: {e.strerror}{note}")
    if removed:  # Ctrl-C (click then says "Aborted!"), or a bug
        what = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        click.echo(f"rkd export: {what}{note}", err=True)
    return e


def report(count: int, files: list[Path], fmt: str, settings: Any) -> None:
    """What was written where, and what is not in the export, on stderr."""
    say = functools.partial(click.echo, err=True)
    if files:
        say(f"Exported {count:,} event{'' if count == 1 else 's'} to {files[0]} ({fmt}).")
    if len(files) > 1:
        say(f"The consent record is in {files[1]}.")
    elif fmt == "csv":
        say("The consent record is not part of CSV: get it with --format json.")
    spooled = len(spool_files(settings.spool_dir))
    if spooled:
        say(f"Not included: {spooled} spool file(s) of events the daemon has not stored yet"
            " (it stores them when it runs).")  # fmt: skip


@click.command()
@click.option("--output", "-o", default="-", metavar="FILE", show_default=True,
              help="Write to FILE (created 0600, replaced if it exists); '-' is stdout.")  # fmt: skip
@click.option(
    "--format", "-f", "fmt", type=click.Choice(FORMATS), default=None,
    help="Output format  [default: from FILE's extension (.csv, .ndjson, .jsonl), else json]",
)  # fmt: skip
def export(output: str, fmt: str | None) -> None:
    """Export everything stored about you, with your consent record (GDPR Art. 15, 20).

    \b
    json    one object: {"exported_at", "database", "event_count", "consent",
            "events": [one event per line]}
    ndjson  that object without "events" on the first line, then one event per line
    csv     one event per row under a fixed header (nested fields as dotted columns);
            the consent record goes to FILE.consent.json beside FILE

    Reads the database read-only, whether or not the daemon runs, and never creates it.
    Events the daemon holds but has not written yet are not included: run `rkd flush`
    first to include them.

    \b
    Example:
      rkd export --output my-data.json
      rkd export --output my-data.csv
      rkd export --format ndjson | grep command_executed
    """
    from rkd.cli.main import settings as load_settings

    settings = load_settings()
    fmt = fmt or guess_format(output)
    count, files = export_to(settings, output, fmt)
    report(count, files, fmt, settings)
