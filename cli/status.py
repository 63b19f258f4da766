"""`rkd status`: gather from the daemon, or from the database read-only when it is down."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import apsw
import msgspec
from rkd.client.clock import iso_ms
from rkd.client.config import Settings
from rkd.client.consent import consent_dict
from rkd.client.control import DaemonUnavailable, UnsafeRuntimeDir, daemon_pid, request
from rkd.client.schema import CATEGORIES
from rkd.client.spool import spool_files, spool_size
from rkd.client.wire import DaemonStatus, EffectiveSettings, StatusRequest
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


# Keys the daemon reads again at `rkd reload`, as `rkd status` shows them.
RELOADED: tuple[str, ...] = (
    "flush_interval_secs", "batch_size", "retention_days", "max_db_size_mb"
)  # fmt: skip


def file_differs(
    settings: Settings, used: Settings | EffectiveSettings, keys: tuple[str, ...] = RELOADED
) -> str:
    """A note naming what the config file says and the daemon does not use yet, or ""."""
    diff = [f"{k} = {getattr(settings, k):g} (the daemon uses {getattr(used, k):g})"
            for k in keys if getattr(settings, k) != getattr(used, k)]  # fmt: skip
    if not diff:
        return ""
    return (
        f"\nNote: {settings.config_path} now says {', '.join(diff)}; run 'rkd reload' to apply it."
    )


def _warnings(settings: Settings, st: DaemonStatus | None) -> list[str]:
    """What `rkd status` must not leave unsaid: the settings it shows are not the ones
    in use, or ask for something that does not happen."""
    out = []
    if os.environ.get("RK_CONFIG") and not settings.config_path.exists():
        out.append(f"RK_CONFIG names {settings.config_path}, which does not exist:"
                   " the defaults are used")  # fmt: skip
    if settings.privacy.differential_privacy and not settings.community_contribution:
        out.append("telemetry.privacy.differential_privacy is on but community reports are"
                   " off: it randomizes community reports only, so it changes nothing now")  # fmt: skip
    if settings.enabled and settings.cloud_sync and _sync_mode(settings) != "pro":
        out.append("cloud sync is asked for (sync_enabled or RK_TELEMETRY_CLOUD_SYNC) but no"
                   " key is enrolled: nothing is uploaded until `rkd sync enroll`")  # fmt: skip
    used = st.settings if st is not None else None
    if st is None or used is None:
        return out
    if used.db_path != str(settings.db_path):
        out.append(f"the daemon stores to {used.db_path}, but this shell's settings name"
                   f" {settings.db_path} (RK_TELEMETRY_PATH or db_path differ); the numbers"
                   " above are the daemon's")  # fmt: skip
    if st.enabled != settings.enabled:
        out.append(f"the daemon runs with telemetry {'on' if st.enabled else 'off'}"
                   f" ({used.decided_by}); in this shell it is"
                   f" {'on' if settings.enabled else 'off'} ({settings.decided_by})")  # fmt: skip
    if note := file_differs(settings, used):
        out.append(note.removeprefix("\nNote: "))
    return out


def gather(settings: Settings) -> dict[str, Any]:
    """Everything `rkd status` shows, as a JSON-ready dict (the `--json` output)."""
    info: dict[str, Any] = {
        "enabled": settings.enabled,
        "decided_by": settings.decided_by,
        "database": str(settings.db_path),
        "database_bytes": _db_size(settings.db_path),
        "config": str(settings.config_path),
        "cloud_sync": _sync_mode(settings),  # off | community | pro (the daemon's, if it runs)
        "cloud_sync_requested": settings.cloud_sync,
        "retention_days": settings.retention_days,
        "categories": {c: c in settings.categories for c in CATEGORIES},
        "consent": consent_dict(settings.data_dir),
        "spool": {
            "files": len(spool_files(settings.spool_dir)),
            "bytes": spool_size(settings.spool_dir),
        },
    }
    daemon: dict[str, Any] = {"running": False, "pid": None}
    st = None
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
        if st.sync:
            info["cloud_sync"] = st.sync.get("mode", info["cloud_sync"])
            info["sync"] = dict(st.sync)
        if st.settings is not None:  # what the daemon uses, not what this shell would
            used = st.settings
            daemon["settings"] = msgspec.to_builtins(used)
            info.update(database=used.db_path, database_bytes=st.database_bytes,
                        retention_days=used.retention_days)  # fmt: skip
            if used.db_path != str(settings.db_path):
                info["shell_database"] = str(settings.db_path)
    info["warnings"] = _warnings(settings, st)
    info["daemon"] = daemon
    info["recovered"] = _recovered(info.get("recovered"))
    return info


def _sync_mode(settings: Settings) -> str:
    """What would run without asking the daemon: pro with a key, community, or off."""
    from rkd.daemon.synckey import SyncKeyError, read_sync_key

    if not settings.enabled:
        return "off"
    if settings.cloud_sync:
        try:
            if read_sync_key(settings.data_dir) is not None:
                return "pro"
        except SyncKeyError:
            pass
    return "community" if settings.community_contribution else "off"


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


def _client_drops(counters: dict[str, int]) -> str:
    """Losses applications reported, and numbered events that never arrived (a gap)."""
    text = _counts(counters, "client_drop.")
    gap = counters.get("transport.gap", 0)
    if gap:
        text = ("" if text == "none" else text + "; ") + f"lost in transit {gap:,}"
    return text


def render(info: dict[str, Any]) -> str:
    """The human status, in the spec's §5.1 layout plus daemon details."""
    from rkd.cli.main import plural  # loaded already: it is what runs us

    d = info["daemon"]
    if d["running"]:
        daemon = f"running (pid {d['pid']}, up {d['uptime_secs']:.0f}s)"
    elif d["pid"] is not None:
        daemon = f"not responding (pid {d['pid']}, stopped?)"
    elif d.get("error"):
        daemon = f"not used: {d['error']}"
    else:
        daemon = "not running"
    c = info["counters"]
    pending = "-" if info["pending"] is None else f"{info['pending']:,}"
    sync = {"pro": "on (Pro cloud sync; see `rkd sync status`)",
            "community": "community reports only (anonymous; see `rkd sync status`)",
            }.get(info["cloud_sync"], "off (nothing leaves this machine)")  # fmt: skip
    if info["cloud_sync"] == "off" and info["cloud_sync_requested"]:
        problem = (info.get("sync") or {}).get("problem") or "not enrolled: run `rkd sync enroll`"
        sync = f"off - requested, but {problem}"
    rows = [
        ("Enabled", _enabled_text(info)),
        ("Database", f"{_tilde(info['database'])} ({_size(info['database_bytes'])})"),
        ("Events Stored", f"{info['events_stored']:,}"),
        ("Last Flush", info["last_flush"] or "never"),
        ("Cloud Sync", sync),
        ("Retention", f"{info['retention_days']} days"),
        ("Categories", _categories(info)),
        ("Consent", _consent(info["consent"])),
        ("Daemon", daemon),
        ("Pending", pending),
        ("Spool", f"{plural(info['spool']['files'], 'file')} ({_size(info['spool']['bytes'])})"),
        ("Rejected", _counts(c, "rejected.")),
        ("Client Drops", _client_drops(c)),
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
    lines += [f"Warning: {w}" for w in info["warnings"]]
    return "\n".join(lines)
