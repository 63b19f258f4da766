"""The spec's Python SDK surface (§4.3), built on :class:`rkd.client.Telemetry`.

Code written against the spec runs unchanged::

    collector = TelemetryCollector(TelemetryConfig.from_env())
    collector.record_command(CommandEvent(command="think", profile="balanced", duration_ms=2500))
    collector.flush()

Unlike the spec's sketch, nothing here opens the database: events go to the daemon like
any other client's, and the database, its batching and its privacy settings are the
user's (config.toml), the same for every application. ``export``, ``delete_all`` and
the stored count without a daemon are management calls: they ask the daemon, or run the
`rkd` command line's offline readers in a child process (client/ never imports the
daemon's or the CLI's code; DESIGN.md).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import msgspec
from rkd.client.config import Settings, load_settings
from rkd.client.telemetry import Telemetry

# The daemon's settings the spec lets TelemetryConfig carry: the spec's default, and
# where the user sets them.
_DAEMON_FIELDS: Final = {
    "db_path": (None, "RK_TELEMETRY_PATH or telemetry.db_path"),
    "batch_size": (100, "telemetry.batch_size"),
    "flush_interval_secs": (60, "telemetry.flush_interval_secs"),
    "strip_pii": (True, "telemetry.privacy.strip_pii"),
}
MANAGEMENT_TIMEOUT_SECS: Final = 300.0  # an export of a million events takes ~10 s
# A delete vacuums the database (several seconds for ~140 MB on a slow disk); as
# `rkd delete` waits. A shorter wait would give up while the daemon goes on deleting.
DELETE_TIMEOUT_MS: Final = 120_000


@dataclass
class TelemetryConfig:
    """Telemetry configuration, as in the spec. ``from_env`` applies every rkd rule.

    ``db_path``, ``batch_size``, ``flush_interval_secs`` and ``strip_pii`` describe the
    user's daemon, which serves every application alike: ``from_env`` fills them in
    from the user's settings. An application cannot change them: any other value than
    the spec's default (or, for ``db_path``, :meth:`default_db_path`) raises ValueError.
    """

    enabled: bool = False
    db_path: Path | None = None
    batch_size: int = 100
    flush_interval_secs: float = 60
    strip_pii: bool = True
    settings: Settings | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError for a daemon setting the user's settings do not have."""
        for name, (default, where) in _DAEMON_FIELDS.items():
            value = getattr(self, name)
            ok = {default, getattr(self.settings, name, default)}
            if name == "db_path":
                ok.add(self.default_db_path())
            elif name == "strip_pii":
                ok.add(getattr(getattr(self.settings, "privacy", None), name, default))
            if value not in ok:
                raise ValueError(
                    f"TelemetryConfig.{name}: the rkd daemon applies the user's setting "
                    f"({where} in config.toml) to every application; leave it unset or "
                    "use TelemetryConfig.from_env()"
                )

    @classmethod
    def from_env(cls) -> TelemetryConfig:
        """Resolve from kill switches, env vars, config.toml and defaults (never raises).
        Under a kill switch nothing is read: not even config.toml is opened."""
        from rkd.client.switches import kill_switch

        if kill_switch(os.environ) is not None:
            return cls(enabled=False)
        try:
            s = load_settings()
        except Exception:  # a ConfigError, or no home folder at all: telemetry stays off
            return cls(enabled=False)
        return cls(
            enabled=s.enabled,
            db_path=s.db_path,
            batch_size=s.batch_size,
            flush_interval_secs=s.flush_interval_secs,
            strip_pii=s.privacy.strip_pii,
            settings=s,
        )

    @staticmethod
    def default_db_path() -> Path:
        """The default database path (creates nothing)."""
        from rkd.client.config import DB_FILENAME, data_dir

        return Path(data_dir(os.environ), DB_FILENAME)


@dataclass
class CommandEvent:
    """Command execution event (spec §4.3)."""

    command: str
    profile: str | None = None
    thinktool_count: int = 0
    duration_ms: int = 0
    success: bool = True
    error_category: str | None = None
    tokens_input: int = 0
    tokens_output: int = 0
    model: str = ""


@dataclass
class ThinkToolEvent:
    """ThinkTool execution event (spec §2.3)."""

    tool_name: str
    step_count: int = 0
    duration_ms: int = 0
    coherence_score: float | None = None
    depth_score: float | None = None
    confidence_score: float | None = None
    tokens_used: int = 0
    completed: bool = True


@dataclass
class ErrorEvent:
    """Error event (spec §3.4). There is deliberately no message field."""

    error_category: str
    error_code: str | None = None
    recoverable: bool = False
    retry_count: int = 0
    command: str | None = None
    profile: str | None = None
    step: int | None = None


class TelemetryCollector:
    """The spec's collector: records through the daemon, never raises from ``record_*``."""

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        *,
        product: str = "reasonkit-core",
        version: str = "0.0.0",
    ) -> None:
        self.config = config or TelemetryConfig.from_env()
        self.config.check()  # fields may have been set after construction
        settings = self.config.settings
        if settings is None and self.config.enabled:
            try:
                settings = load_settings()
            except Exception:  # a ConfigError, or no home folder: telemetry stays off
                settings = None
        # An application may only narrow the user's decision: enabled=False turns a
        # consenting user's telemetry off here; enabled=True never turns on what the
        # user (consent record, config file, kill switch) left off.
        if settings is not None and settings.enabled and not self.config.enabled:
            settings = msgspec.structs.replace(settings, enabled=False, decided_by="sdk")
        self._settings = settings
        self._tel = Telemetry(product, version, settings=settings) if settings else None

    @property
    def enabled(self) -> bool:
        return self._tel is not None and self._tel.enabled

    def record_command(self, event: CommandEvent) -> None:
        """Record a command (command_executed, or command_failed when not successful)."""
        if not self.enabled:
            return
        from rkd.client import schema as s

        kind = s.CommandExecuted if event.success else s.CommandFailed
        self._emit(
            lambda: kind(
                command=event.command,
                profile=cast(Any, event.profile),
                thinktool_count=event.thinktool_count,
                execution=s.Execution(duration_ms=event.duration_ms, success=event.success),
                tokens=s.Tokens(
                    input=event.tokens_input,
                    output=event.tokens_output,
                    model=event.model or None,
                ),
                error_category=cast(Any, event.error_category),
            )
        )

    def record_thinktool(self, event: ThinkToolEvent) -> None:
        """Record a finished ThinkTool run (thinktool_completed)."""
        if self.enabled:
            assert self._tel is not None
            self._tel.thinktool(**vars(event))

    def record_error(self, event: ErrorEvent) -> None:
        """Record an error; the daemon writes error events to disk at once."""
        if self.enabled:
            assert self._tel is not None
            e = event
            self._tel.error(
                e.error_category, code=e.error_code, recoverable=e.recoverable,
                retry_count=e.retry_count, command=e.command, profile=e.profile, step=e.step,
            )  # fmt: skip

    def _emit(self, build: Any) -> None:
        assert self._tel is not None
        try:
            payload = build()
        except Exception:
            self._tel._transport.drop("encode_error")
            return
        self._tel.emit(payload)

    def flush(self) -> None:
        """Hand everything this process holds to the daemon and have it written to disk."""
        if not self.enabled or self._settings is None:
            return
        assert self._tel is not None
        self._tel.flush()
        from rkd.client.control import DaemonUnavailable, request
        from rkd.client.wire import FlushRequest

        # Without a daemon the events are in the spool; it stores them when it starts.
        with contextlib.suppress(DaemonUnavailable):
            request(self._settings.runtime_dir, FlushRequest(), timeout_ms=2000)

    def get_status(self) -> dict[str, Any]:
        """``{"enabled": False}``, or enabled, session id prefix, events stored, db path."""
        if not self.enabled or self._settings is None:
            return {"enabled": False}
        from rkd.client.control import DaemonUnavailable, request
        from rkd.client.wire import StatusRequest

        out: dict[str, Any] = {"enabled": True, "db_path": str(self._settings.db_path)}
        try:
            reply = request(self._settings.runtime_dir, StatusRequest(), timeout_ms=2000)
        except DaemonUnavailable:
            out.update(session_id=None, events_stored=self._stored_offline(), daemon=False)
            return out
        st = reply.status
        assert st is not None
        sid = st.session_id
        out.update(
            session_id=f"{sid[:8]}..." if sid else None,
            events_stored=st.events_stored,
            daemon=True,
        )
        return out

    def _stored_offline(self) -> int:
        """Events stored, read by `rkd status` (the daemon is down); 0 if that fails."""
        info = self._rkd("status", "--json")
        n = info.get("events_stored") if isinstance(info, dict) else None
        return n if isinstance(n, int) else 0

    def export(self) -> str:
        """Every stored event as a JSON array of spec envelopes ("[]" when disabled).

        Read by `rkd export` (read-only, daemon or not). When that fails, "[]" and one
        warning on the ``rkd.client`` logger: this never raises into the application.
        """
        if not self.enabled or self._settings is None:
            return "[]"
        import json

        doc = self._rkd("export", "--format", "json", "--output", "-")
        events = doc.get("events") if isinstance(doc, dict) else None
        return json.dumps(events if isinstance(events, list) else [], indent=2)

    def delete_all(self) -> int:
        """Erase all telemetry data; return how many events were deleted (0 when disabled).

        As in the spec, a disabled collector deletes nothing; `rkd delete` always can.
        Asks the daemon, or runs `rkd delete` when none runs; 0 and one warning on the
        ``rkd.client`` logger when that fails.
        """
        if not self.enabled or self._settings is None:
            return 0
        from rkd.client.control import DaemonUnavailable, request
        from rkd.client.wire import DeleteRequest

        try:
            reply = request(
                self._settings.runtime_dir, DeleteRequest(), timeout_ms=DELETE_TIMEOUT_MS
            )
        except DaemonUnavailable:
            pass
        else:
            if not reply.ok:
                _warn(f"rkd delete: {reply.error or 'the daemon could not delete'}")
            return reply.deleted
        import re

        text = self._rkd("delete", "--confirm", parse=False) or ""
        m = re.search(r"^Deleted ([0-9,]+) events?\.$", text, re.M)
        return int(m.group(1).replace(",", "")) if m else 0

    def _rkd(self, *args: str, parse: bool = True) -> Any:
        """Run ``python -m rkd.cli ARGS`` on this collector's files; its JSON (or text).

        A child process keeps client/ free of the daemon's and the CLI's code, which a
        management call needs (DESIGN.md). None, and one warning, when it fails.
        """
        import subprocess
        import sys

        assert self._settings is not None
        if getattr(sys, "frozen", False):  # sys.executable is the application itself
            return _warn(f"rkd {args[0]}: cannot run the rkd command from a frozen application")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "rkd.cli", *args], env=_cli_env(self._settings),
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=MANAGEMENT_TIMEOUT_SECS,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as e:
            return _warn(f"rkd {args[0]}: {type(e).__name__}: {e}")
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            return _warn(f"rkd {args[0]}: {lines[-1][:500]}")
        if not parse:
            return proc.stdout
        import json

        try:
            return json.loads(proc.stdout)
        except (ValueError, RecursionError):
            return _warn(f"rkd {args[0]}: unexpected output")


def _warn(message: str) -> None:
    """Log a failed management call once on the ``rkd.client`` logger (never raises)."""
    import logging

    logging.getLogger("rkd.client").warning("%s", message)


def _cli_env(settings: Settings) -> dict[str, str]:
    """An environment in which `rkd` resolves the same files as ``settings``."""
    env = dict(os.environ)
    env.update(RK_CONFIG=str(settings.config_path), RK_TELEMETRY_PATH=str(settings.db_path))
    if settings.data_dir.name == "reasonkit":
        env["XDG_DATA_HOME"] = str(settings.data_dir.parent)
    if settings.runtime_dir.name == "rkd":
        env["XDG_RUNTIME_DIR"] = str(settings.runtime_dir.parent)
    return env
