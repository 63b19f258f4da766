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

This module is the command and where its output goes: new 0600 files renamed over the
target only when complete (:class:`~rkd.cli.export_write.OutputFile`), removed if the
export fails, a progress bar on a terminal. The stages live beside it, each named
for its concern: :mod:`~rkd.cli.export_read` (one read-only snapshot of the database, in
chunks; no database means an empty export, nothing is created),
:mod:`~rkd.cli.export_render` (envelopes as JSON or CSV text, a column at a time),
:mod:`~rkd.cli.export_csv` (the CSV columns and payload cells, and the CSV worker pool)
and :mod:`~rkd.cli.export_write` (each format's framing, written from a thread).

Speed (bench/export.py: a million events in about 6 s as JSON or NDJSON on 2 cores)
comes from rendering the envelope a whole column of a chunk at a time with C-level
``map``/``zip``/``join`` instead of Python code per field, from splicing the payload,
stored as JSON text, into JSON output unchanged, from formatting what repeats (seconds,
sources, sessions, names) once, and from a thread that writes while the next chunk
renders. CSV must decode every payload and render its cells one by one: it takes about
twice as long. The cyclic garbage collector is paused meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

import apsw
import click
from rkd.cli.export_csv import csv_pool
from rkd.cli.export_read import ExportError, count_events, read_consent, snapshot
from rkd.cli.export_write import OutputFile, write_export
from rkd.client.consent import consent_path, now_iso
from rkd.client.control import DaemonUnavailable, request
from rkd.client.spool import spool_files
from rkd.client.wire import FlushRequest, StatusRequest
from rkd.daemon.spooling import spooled_not_stored

FORMATS: Final = ("json", "ndjson", "csv")
PROGRESS_MIN_EVENTS: Final = 10_000
FLUSH_TIMEOUT_MS: Final = 10_000  # one flush request (a batch write and 0.5 s of spool)
FLUSH_DEADLINE_SECS: Final = 10.0  # asking again while spool files are left


# -- output ---------------------------------------------------------------------------------


class Target:
    """Where the export goes: stdout, or files put in place only once complete."""

    def __init__(self, output: str) -> None:
        self.path = None if output == "-" else Path(output)
        self.files: list[OutputFile] = []

    @property
    def is_file(self) -> bool:
        """Whether the output is a regular file (not stdout, a device or a pipe)."""
        return bool(self.files) and self.files[0].regular

    def open(self, path: Path) -> TextIO:
        f = OutputFile(path)
        self.files.append(f)
        return f.file

    def close(self) -> list[Path]:
        """Complete every file (a full disk shows up here too); return their paths."""
        for f in self.files:
            f.commit()
        paths = [f.path for f in self.files]
        self.files.clear()
        return paths

    def discard(self) -> list[Path]:
        """Remove what was written (regular files only); return the paths it was for."""
        removed = [f.path for f in self.files if f.discard()]
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


def flush_first(settings: Any) -> int | None:
    """Have a running daemon write what it holds and ingest the spool, so the export
    includes them; return how many events it still holds (None: no daemon answered).

    One flush reads the spool for half a second: it is asked again while spool files
    are left, until FLUSH_DEADLINE_SECS.
    """
    deadline = time.monotonic() + FLUSH_DEADLINE_SECS
    try:
        while True:
            reply = request(settings.runtime_dir, FlushRequest(), timeout_ms=FLUSH_TIMEOUT_MS)
            if not reply.ok or not spool_files(settings.spool_dir):
                break
            if time.monotonic() > deadline:
                break
        status = request(settings.runtime_dir, StatusRequest(), timeout_ms=FLUSH_TIMEOUT_MS).status
    except DaemonUnavailable:
        return None
    return status.pending if status is not None else None


def report(count: int, files: list[Path], fmt: str, settings: Any, pending: int | None) -> None:
    """What was written where, and what is not in the export, on stderr."""
    say = functools.partial(click.echo, err=True)
    if files:
        say(f"Exported {count:,} event{'' if count == 1 else 's'} to {files[0]} ({fmt}).")
    if len(files) > 1:
        say(f"The consent record is in {files[1]}.")
    elif fmt == "csv":
        say("The consent record is not part of CSV: get it with --format json.")
    if pending:
        say(f"Not included: {pending:,} event(s) the daemon holds but could not write yet.")
    spooled = spooled_not_stored(settings.spool_dir, settings.db_path)
    if spooled:
        say(f"Not included: {spooled:,} event(s) in spool files the daemon has not stored yet"
            " (it stores them when it runs).")  # fmt: skip


@click.command()
@click.option("--output", "-o", default="-", metavar="FILE", show_default=True,
              help="Write to FILE (created 0600, replaced if it exists); '-' is stdout.")  # fmt: skip
@click.option(
    "--format", "-f", "fmt", type=click.Choice(FORMATS), default=None,
    help="Output format  [default: from FILE's extension (.csv, .ndjson, .jsonl), else json]",
)  # fmt: skip
@click.option("--cloud", is_flag=True,
              help="Export what the sync server holds for this install's sessions instead.")  # fmt: skip
def export(output: str, fmt: str | None, cloud: bool) -> None:
    """Export everything stored about you, with your consent record (GDPR Art. 15, 20).

    \b
    json    one object: {"exported_at", "database", "event_count", "consent",
            "events": [one event per line]}
    ndjson  that object without "events" on the first line, then one event per line
    csv     one event per row under a fixed header (nested fields as dotted columns);
            the consent record goes to FILE.consent.json beside FILE

    With --cloud: what the sync server holds for the sessions this install uploaded
    (Pro; a signed request), in the same formats, instead of the local data.

    Reads the database read-only, whether or not the daemon runs, and never creates it.
    A running daemon is first asked to write what it holds and to store the spool, so
    they are included; whatever could not be included is counted on stderr.

    \b
    Example:
      rkd export --output my-data.json
      rkd export --output my-data.csv
      rkd export --format ndjson | grep command_executed
    """
    from rkd.cli.main import settings as load_settings

    settings = load_settings(lenient=True)
    fmt = fmt or guess_format(output)
    if cloud:
        from rkd.cli.export_cloud import export_cloud

        export_cloud(settings, output, fmt)
        return
    pending = flush_first(settings)
    count, files = export_to(settings, output, fmt)
    report(count, files, fmt, settings, pending)
