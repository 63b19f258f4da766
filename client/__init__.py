"""rkd's client: the event schema and `Telemetry` for applications.

Importing this package does no I/O, starts no thread and does not import zmq: names
are loaded on first use. It does not even import ``typing`` or ``importlib`` (together
~10 ms), so an application under a kill switch pays almost nothing for rkd.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; checkers read it too
if TYPE_CHECKING:
    from typing import Any

    from rkd.client.command import CommandRecorder
    from rkd.client.config import ConfigError, Settings, load_settings
    from rkd.client.sdk import (
        CommandEvent,
        ErrorEvent,
        TelemetryCollector,
        TelemetryConfig,
        ThinkToolEvent,
    )
    from rkd.client.telemetry import Telemetry

_LAZY = {
    "Telemetry": "rkd.client.telemetry",
    "CommandRecorder": "rkd.client.command",
    "Settings": "rkd.client.config",
    "ConfigError": "rkd.client.config",
    "load_settings": "rkd.client.config",
    "TelemetryConfig": "rkd.client.sdk",
    "TelemetryCollector": "rkd.client.sdk",
    "CommandEvent": "rkd.client.sdk",
    "ThinkToolEvent": "rkd.client.sdk",
    "ErrorEvent": "rkd.client.sdk",
}

__all__ = [
    "CommandEvent",
    "CommandRecorder",
    "ConfigError",
    "ErrorEvent",
    "Settings",
    "Telemetry",
    "TelemetryCollector",
    "TelemetryConfig",
    "ThinkToolEvent",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rkd.client' has no attribute {name!r}")
    # __import__ with a fromlist returns the submodule itself (importlib is not loaded yet)
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value
