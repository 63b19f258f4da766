"""`rkd audit`: scan everything stored for anything that looks private.

A trust check on the user's own data (the spec's "PII leak detection"): every string of
every stored event and source is run through the full scanner, whatever the privacy
settings say. Only counts by category are reported, never a value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import apsw
import msgspec
from rkd.client.config import Settings
from rkd.client.spool import MAX_SPOOL_BYTES, SUFFIX, read_spool
from rkd.daemon.detectors import DEFAULT_ALLOWED_DOMAINS
from rkd.daemon.redact import Scanner
from rkd.daemon.storage import StorageError, open_read_only


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


def audit(settings: Settings) -> dict[str, Any]:
    """Scan the database read-only; return events scanned, flagged, and counts by category."""
    scanner = Scanner(allowed_domains=(*DEFAULT_ALLOWED_DOMAINS, *settings.privacy.allowed_domains))
    report: dict[str, Any] = {"database": str(settings.db_path), "events_scanned": 0,
                              "events_flagged": 0, "findings": {},
                              "spool": audit_spool(settings, scanner)}  # fmt: skip
    db = open_read_only(settings.db_path)
    if db is None:
        return report
    found: Counter[str] = Counter()
    seen: dict[str, Counter[str]] = {}  # identical strings are scanned once
    try:
        for payload, *source in db.execute(
            "SELECT e.payload, s.product, s.version, s.tier, s.os, s.arch, s.python_version"
            " FROM events e JOIN sources s ON s.id = e.source_id"
        ):
            report["events_scanned"] += 1
            hits: Counter[str] = Counter()
            for text in (*_strings(msgspec.json.decode(payload)), *source):
                result = seen.get(text)
                if result is None:
                    result = scanner.redact(text)[1]
                    if len(seen) < 100_000:
                        seen[text] = result
                hits.update(result)
            if hits:
                report["events_flagged"] += 1
                found.update(hits)
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
    return report


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
        if kind is None or path.is_symlink() or not path.is_file():
            continue
        out[kind] += 1
        try:
            frames, _ = read_spool(path.read_bytes()[:MAX_SPOOL_BYTES])
        except OSError:
            continue
        for frame in frames:
            out["frames"] += 1
            try:
                value = msgspec.msgpack.decode(frame)
            except (msgspec.DecodeError, RecursionError):
                continue
            for text in _strings(value):
                found.update(scanner.redact(text[:4096])[1])
    out["findings"] = dict(sorted(found.items()))
    return out


def render(report: dict[str, Any]) -> str:
    lines = ["Privacy Audit", "=============",
             f"Database:        {report['database']}",
             f"Events scanned:  {report['events_scanned']:,}",
             f"Events flagged:  {report['events_flagged']:,}"]  # fmt: skip
    if report["findings"]:
        lines.append("Findings by category (values are never shown):")
        lines += [f"  {k:<18} {v:,}" for k, v in report["findings"].items()]
        lines.append("Result:          FOUND possible private data")
    else:
        lines.append("Result:          clean")
    sp = report.get("spool")
    if sp and (sp["files"] or sp["quarantined"] or sp["temporary"]):
        lines.append(
            f"Spool:           {sp['frames']:,} raw frames waiting in {sp['files']:,} files"
            f" ({sp['quarantined']:,} quarantined, {sp['temporary']:,} temporary);"
            " the daemon filters them when it stores them"
        )
        lines += [f"  {k:<18} {v:,}" for k, v in sp["findings"].items()]
    return "\n".join(lines)
