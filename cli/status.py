"""`rkd status`: gather from the daemon, or from the database read-only when it is down."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import apsw
from rkd.client.clock import iso_ms
from rkd.client.config import Settings
from rkd.client.consent import consent_dict
from rkd.client.control import DaemonUnavailable, UnsafeRuntimeDir, daemon_pid, request
from rkd.client.schema import CATEGORIES
from rkd.client.spool import spool_files, spool_size
from rkd.client.wire import StatusRequest
from rkd.daemon.storage import StorageError, open_read_only


def _db_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _offline(db_path: Path) -> dict[str, Any]:
    """What the database says when no daemon runs (read-only; never creates the file)."""
    out: dict[str, Any] = {"events_stored": 0, "counters": {}, "last_flush": None,
                           "pending": None, "session_id": None, "recovered": None}  # fmt: skip
    db = open_read_only(db_path)
    if db is None:
        return out
    try:
        out["events_stored"] = db.execute("SELECT count(*) FROM events").get
        out["counters"] = {k: v for k, v in db.execute("SELECT reason, n FROM counters")}
        last = db.execute("SELECT value FROM meta WHERE key = 'last_flush_ms'").get
        out["last_flush"] = iso_ms(last) if isinstance(last, int) else None
        out["recovered"] = db.execute("SELECT value FROM meta WHERE key = 'recovered'").get
    except apsw.SQLError:
        pass  # created but not yet initialised by a daemon
    except apsw.Error as e:
        raise StorageError(f"{db_path}: cannot read the database: {e}") from None
    finally:
        db.close()
    return out


def gather(settings: Settings) -> dict[str, Any]:
    """Everything `rkd status` shows, as a JSON-ready dict (the `--json` output)."""
    info: dict[str, Any] = {
        "enabled": settings.enabled,
        "decided_by": settings.decided_by,
        "database": str(settings.db_path),
        "database_bytes": _db_size(settings.db_path),
        "config": str(settings.config_path),
        "cloud_sync": "enabled" if settings.cloud_sync else "disabled",
        "retention_days": settings.retention_days,
        "categories": {c: c in settings.categories for c in CATEGORIES},
        "consent": consent_dict(settings.data_dir),
        "spool": {
            "files": len(spool_files(settings.spool_dir)),
            "bytes": spool_size(settings.spool_dir),
        },
    }
    daemon: dict[str, Any] = {"running": False, "pid": None}
    try:
        reply = request(settings.runtime_dir, StatusRequest(), timeout_ms=2000)
    except UnsafeRuntimeDir as e:
        daemon.update(error=str(e))  # refused: say why, never talk to it
        info.update(_offline(settings.db_path))
    except DaemonUnavailable as e:
        pid = daemon_pid(settings.runtime_dir)
        if pid is not None:  # alive but not answering
            daemon.update(pid=pid, error=str(e))
        info.update(_offline(settings.db_path))
    else:
        st = reply.status
        assert st is not None
        daemon.update(running=True, pid=st.pid, started_at=st.started_at,
                      uptime_secs=st.uptime_secs)  # fmt: skip
        info.update(
            events_stored=st.events_stored, pending=st.pending, last_flush=st.last_flush,
            counters=st.counters, session_id=st.session_id, recovered=st.recovered,
        )  # fmt: skip
    info["daemon"] = daemon
    info["recovered"] = _recovered(info.get("recovered"))
    return info


def _recovered(text: Any) -> dict[str, str] | None:
    """The database's note about a damaged file moved aside, if it is a well-formed one."""
    try:
        rec = json.loads(text) if isinstance(text, str) and len(text) < 65_536 else None
    except (ValueError, RecursionError):
        return None
    ok = isinstance(rec, dict) and all(isinstance(rec.get(k), str) for k in ("at", "kept_as"))
    return rec if ok else None


def _tilde(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if home != "/" and path.startswith(home + "/") else path


def _enabled_text(info: dict[str, Any]) -> str:
    decided = info["decided_by"]
    if info["enabled"]:
        return f"true ({decided.replace('env:', 'env ')})"
    if decided == "default":
        return "false (opt-in required)"
    if decided.startswith("env:"):
        return f"false (kill switch: {decided[4:]})"
    return f"false ({decided})"


def _categories(info: dict[str, Any]) -> str:
    if not info["enabled"]:
        return "none (telemetry is off)"
    on = [c for c, v in info["categories"].items() if v]
    off = [c for c, v in info["categories"].items() if not v]
    return ", ".join(on) + (f" (off: {', '.join(off)})" if off else "")


def _consent(consent: dict[str, Any] | None) -> str:
    if not consent or consent.get("current") is None:
        return "never given"
    cur = consent["current"]
    return f"{cur['choice']} at {cur['at']} (consent text v{cur['consent_text_version']})"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _counts(counters: dict[str, int], prefix: str) -> str:
    items = sorted((k[len(prefix) :], v) for k, v in counters.items() if k.startswith(prefix))
    return ", ".join(f"{k} {v:,}" for k, v in items) or "none"


def render(info: dict[str, Any]) -> str:
    """The human status, in the spec's §5.1 layout plus daemon details."""
    d = info["daemon"]
    if d["running"]:
        daemon = f"running (pid {d['pid']}, up {d['uptime_secs']:.0f}s)"
    elif d["pid"] is not None:
        daemon = f"not answering (pid {d['pid']})"
    elif d.get("error"):
        daemon = f"not used: {d['error']}"
    else:
        daemon = "not running"
    c = info["counters"]
    pending = "-" if info["pending"] is None else f"{info['pending']:,}"
    rows = [
        ("Enabled", _enabled_text(info)),
        ("Database", f"{_tilde(info['database'])} ({_size(info['database_bytes'])})"),
        ("Events Stored", f"{info['events_stored']:,}"),
        ("Last Flush", info["last_flush"] or "never"),
        ("Cloud Sync", "enabled" if info["cloud_sync"] == "enabled" else "disabled (Pro feature)"),
        ("Retention", f"{info['retention_days']} days"),
        ("Categories", _categories(info)),
        ("Consent", _consent(info["consent"])),
        ("Daemon", daemon),
        ("Pending", pending),
        ("Spool", f"{info['spool']['files']} files ({_size(info['spool']['bytes'])})"),
        ("Rejected", _counts(c, "rejected.")),
        ("Client Drops", _counts(c, "client_drop.")),
        ("Firewall", _counts(c, "firewall.")),
    ]
    if c.get("dropped.buffer_full") or c.get("write_errors"):
        rows.append(
            (
                "Daemon Drops",
                _counts(c, "dropped.") + f"; write errors {c.get('write_errors', 0):,}",
            )
        )
    if info.get("recovered"):
        r = info["recovered"]
        rows.append(
            ("Recovered", f"damaged database moved aside at {r['at']}, kept as {r['kept_as']}")
        )
    lines = ["Telemetry Status", "================"]
    lines += [f"{k + ':':<15} {v}" for k, v in rows]
    return "\n".join(lines)
