"""The `rkd` command line, and the `telemetry` group a host CLI mounts in one line:

from rkd.cli import telemetry
my_cli.add_command(telemetry)      # my-cli telemetry status, enable, ...
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("cli", "telemetry"):
        from rkd.cli import main

        return getattr(main, name)
    raise AttributeError(f"module 'rkd.cli' has no attribute {name!r}")
