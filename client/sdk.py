"""The spec's Python SDK surface (§4.3), built on :class:`rkd.client.Telemetry`.

Code written against the spec runs unchanged::

    collector = TelemetryCollector(TelemetryConfig.from_env())
    collector.record_command(CommandEvent(command="think", profile="balanced", duration_ms=2500))
    collector.flush()

Unlike the spec's sketch, nothing here opens the database for writing: events go to
the daemon like any other client's. ``export`` and ``delete_all`` are management calls;
they ask the daemon, or read/erase the database directly when no daemon runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec
from rkd.client.config import ConfigError, Settings, load_settings
from rkd.client.telemetry import Telemetry


@dataclass
class TelemetryConfig:
    """Telemetry configuration, as in the spec. ``from_env`` applies every rkd rule."""

    enabled: bool = False
    db_path: Path | None = None
    batch_size: int = 100
    flush_interval_secs: int = 60
    strip_pii: bool = True
    settings: Settings | None = None

    @classmethod
    def from_env(cls) -> TelemetryConfig:
        """Resolve from kill switches, env vars, config.toml and defaults (never raises)."""
        try:
            s = load_settings()
        except ConfigError:
            return cls(enabled=False)
        return cls(
            enabled=s.enabled,
            db_path=s.db_path,
            batch_size=s.batch_size,
            flush_interval_secs=int(s.flush_interval_secs),
            strip_pii=s.privacy.strip_pii,
            settings=s,
        )

    @staticmethod
    def default_db_path() -> Path:
        """The default database path (creates nothing)."""
        from rkd.client.config import DB_FILENAME, data_dir

        return data_dir(os.environ) / DB_FILENAME


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
        settings = self.config.settings
        if settings is None and self.config.enabled:
            try:
                settings = load_settings()
            except ConfigError:
                settings = None
        if settings is not None and self.config.enabled != settings.enabled:
            settings = msgspec.structs.replace(
                settings, enabled=self.config.enabled, decided_by="sdk"
            )
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
        # Management path, not the hot path: the reader lives with the storage code.
        from rkd.daemon.storage import read_only_count

        assert self._settings is not None
        return read_only_count(self._settings.db_path)

    def export(self) -> str:
        """Every stored event as a JSON array of spec envelopes ("[]" when disabled)."""
        if not self.enabled or self._settings is None:
            return "[]"
        import json

        from rkd.daemon.storage import iter_envelopes

        return json.dumps(list(iter_envelopes(self._settings.db_path)), indent=2)

    def delete_all(self) -> int:
        """Erase all telemetry data; return how many events were deleted (0 when disabled).

        As in the spec, a disabled collector deletes nothing; `rkd delete` always can.
        """
        if not self.enabled or self._settings is None:
            return 0
        from rkd.client.control import DaemonUnavailable, request
        from rkd.client.wire import DeleteRequest

        try:
            return request(self._settings.runtime_dir, DeleteRequest(), timeout_ms=10_000).deleted
        except DaemonUnavailable:
            from rkd.daemon.storage import delete_offline

            return delete_offline(self._settings)
