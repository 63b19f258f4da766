"""`rkd audit`: scan everything stored for anything that looks private.

A trust check on the user's own data (the spec's "PII leak detection"): every string of
every stored event and source is run through the full scanner, whatever the privacy
settings say. Only counts by category are reported, never a value.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import apsw
import msgspec
from rkd.client.config import Settings
from rkd.client.schema import BY_EVENT_TYPE
from rkd.client.spool import SUFFIX, SpoolFileRefused, read_spool, read_spool_file
from rkd.client.upload import undeclared_in_builtins
from rkd.client.vocabulary import Vocabulary, reasonkit_vocabulary
from rkd.daemon.detectors import DEFAULT_ALLOWED_DOMAINS
from rkd.daemon.redact import Scanner
from rkd.daemon.storage import SOURCE_COLUMNS, StorageError, open_read_only, read_only_count

# A bar on a terminal from this many events (400k took 12 s with no sign of life).
PROGRESS_MIN_EVENTS: Final = 10_000
TICK_EVERY: Final = 1000


@contextlib.contextmanager
def progress(db_path: Path) -> Iterator[Callable[[int], object]]:
    """``tick(n)`` for a stderr progress bar over the stored events: many of them, and
    stderr a terminal. Otherwise ``tick`` does nothing."""
    try:
        n = read_only_count(db_path) if sys.stderr.isatty() else 0
    except apsw.Error:
        n = 0  # the audit itself says what is wrong with the database
    if n < PROGRESS_MIN_EVENTS:
        yield lambda n: None
        return
    import click

    with click.progressbar(length=n, label="Auditing", file=sys.stderr) as bar:
        yield bar.update


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def audit(settings: Settings, tick: Callable[[int], object] = lambda n: None) -> dict[str, Any]:
    """Scan the database read-only; return events scanned, flagged, and counts by category.
    ``tick(n)`` is told every TICK_EVERY events scanned."""
    scanner = Scanner(allowed_domains=(*DEFAULT_ALLOWED_DOMAINS, *settings.privacy.allowed_domains))
    report: dict[str, Any] = {"database": str(settings.db_path), "events_scanned": 0,
                              "events_flagged": 0, "findings": {},
                              "spool": audit_spool(settings, scanner)}  # fmt: skip
    db = open_read_only(settings.db_path)
    if db is None:
        return report
    found: Counter[str] = Counter()
    seen: dict[str, Counter[str]] = {}  # identical strings are scanned once
    undeclared = Undeclared(reasonkit_vocabulary())
    try:
        for event_type, payload_json, *source in db.execute(
            "SELECT e.event_type, e.payload, s.product, s.version, s.tier, s.os, s.arch,"
            " s.python_version FROM events e JOIN sources s ON s.id = e.source_id"
        ):
            payload = msgspec.json.decode(payload_json)
            report["events_scanned"] += 1
            if report["events_scanned"] % TICK_EVERY == 0:
                tick(TICK_EVERY)
            hits: Counter[str] = Counter()
            for text in (*_strings(payload), *source):
                result = seen.get(text)
                if result is None:
                    result = scanner.redact(text)[1]
                    if len(seen) < 100_000:
                        seen[text] = result
                hits.update(result)
            if hits:
                report["events_flagged"] += 1
                found.update(hits)
            undeclared.add(event_type, payload, source)
        tick(report["events_scanned"] % TICK_EVERY)
    except apsw.SQLError:
        pass  # a database the daemon has not initialised yet
    except (apsw.Error, msgspec.DecodeError) as e:
        raise StorageError(f"{settings.db_path}: cannot read the database: {e}") from None
    except RecursionError:  # a damaged payload: msgspec recurses once per nesting level
        raise StorageError(
            f"{settings.db_path}: cannot read the database: nested too deeply"
        ) from None
    finally:
        db.close()
    report["findings"] = dict(sorted(found.items()))
    report["undeclared"] = undeclared.report()
    return report


class Undeclared:
    """Per field, how many stored events hold a value the vocabulary does not declare:
    what the upload filter would send as ``__other__`` (counts, never values)."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocab = vocabulary
        self.counts: Counter[str] = Counter()
        self.other_products = 0

    def add(self, event_type: str, payload: dict[str, Any], source: list[Any]) -> None:
        if source[0] != self.vocab.product:
            self.other_products += 1
            return
        payload_type = BY_EVENT_TYPE.get(event_type)
        if payload_type is None:
            return  # a type this rkd does not know
        src = dict(zip(SOURCE_COLUMNS, source, strict=True))
        self.counts.update(undeclared_in_builtins(payload_type, payload, src, self.vocab))

    def report(self) -> dict[str, Any]:
        return {"product": self.vocab.product, "vocabulary_version": self.vocab.version,
                "events_by_field": dict(sorted(self.counts.items())),
                "other_products": self.other_products}  # fmt: skip


def audit_spool(settings: Settings, scanner: Scanner) -> dict[str, Any]:
    """What waits in the spool, raw (the firewall runs when the daemon stores it): files
    by kind, frames, and what the scanner finds in them (counts only)."""
    out: dict[str, Any] = {"folder": str(settings.spool_dir), "files": 0, "quarantined": 0,
                           "temporary": 0, "frames": 0, "findings": {}}  # fmt: skip
    found: Counter[str] = Counter()
    try:
        entries = sorted(settings.spool_dir.iterdir())
    except OSError:
        return out
    for path in entries:
        name = path.name
        kind = ("quarantined" if name.endswith(".quarantined") else "temporary"
                if name.endswith(".tmp") else "files" if name.endswith(SUFFIX) else None)  # fmt: skip
        if kind is None:
            continue
        try:  # never through a link, never another user's file, never past the cap
            frames, _ = read_spool(read_spool_file(path))
        except (OSError, SpoolFileRefused):
            continue
        out[kind] += 1
        for frame in frames:
            out["frames"] += 1
            try:
                value = msgspec.msgpack.decode(frame)
            except (msgspec.DecodeError, RecursionError):
                continue
            if not isinstance(value, dict):
                continue  # refused as malformed when ingested: nothing of it is stored
            # What the firewall scans, as for stored events: the payload and the source.
            # Ids and timestamps are not (a random uuid reads as an IBAN or card about 1 in 120).
            for part in ("payload", "source"):
                for text in _strings(value.get(part)):
                    found.update(scanner.redact(text[:4096])[1])
    out["findings"] = dict(sorted(found.items()))
    return out


def render(report: dict[str, Any]) -> str:
    lines = ["Privacy Audit", "============="]
    if "fixed" in report:
        f = report["fixed"]
        lines.append(f"Fixed:           {f['scanned']:,} events re-filtered: {f['rewritten']:,}"
                     f" rewritten, {f['retagged']:,} re-tagged, {f['removed']:,} removed")  # fmt: skip
    lines += [f"Database:        {report['database']}",
             f"Events scanned:  {report['events_scanned']:,}",
             f"Events flagged:  {report['events_flagged']:,}"]  # fmt: skip
    if report["findings"]:
        lines.append("Findings by category (values are never shown):")
        lines += [f"  {k:<18} {v:,}" for k, v in report["findings"].items()]
        lines.append("Result:          FOUND possible private data")
    else:
        lines.append("Result:          clean")
    und = report.get("undeclared")
    if und and (und["events_by_field"] or und["other_products"]):
        lines.append(
            f"Undeclared:      events whose values {und['product']}'s vocabulary (v"
            f"{und['vocabulary_version']}) does not declare; uploads would send __other__:"
        )
        lines += [f"  {k:<18} {v:,}" for k, v in und["events_by_field"].items()]
        if und["other_products"]:
            lines.append(f"  {'other products':<18} {und['other_products']:,} (never uploaded)")
    sp = report.get("spool")
    if sp and (sp["files"] or sp["quarantined"] or sp["temporary"]):
        from rkd.cli.main import plural

        lines.append(
            f"Spool:           {plural(sp['frames'], 'raw frame')} waiting in"
            f" {plural(sp['files'], 'file')}"
            f" ({sp['quarantined']:,} quarantined, {sp['temporary']:,} temporary);"
            " the daemon filters them when it stores them"
        )
        lines += [f"  {k:<18} {v:,}" for k, v in sp["findings"].items()]
    return "\n".join(lines)
