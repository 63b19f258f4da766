"""Environment switches: the kill switches and boolean parsing, with nothing imported.

Kept apart from `rkd.client.config` so an application under a kill switch decides to do
nothing without importing msgspec or reading a file; it imports nothing at all at run time
(not even ``typing``: the annotations are strings, read only by type checkers).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (or collections)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final


class ConfigError(Exception):
    """A config file or environment variable cannot be used. The message is one line."""


KILL_SWITCHES: Final = ("DO_NOT_TRACK", "RK_TELEMETRY_ENABLED", "REASONKIT_TELEMETRY")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def parse_bool(value: str, where: str) -> bool:
    """Parse true/false/1/0/yes/no/on/off (any case); anything else is a ConfigError."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{where}: expected one of true/false, 1/0, yes/no, on/off")


def kill_switch(env: Mapping[str, str]) -> str | None:
    """Name of the environment variable that turns telemetry off, or None.

    Reads nothing but ``env``. A value that cannot be parsed counts as a kill switch:
    when in doubt, collect nothing.
    """
    dnt = env.get("DO_NOT_TRACK", "").strip().lower()
    if dnt and dnt not in _FALSE:
        return "DO_NOT_TRACK"
    for var in KILL_SWITCHES[1:]:
        value = env.get(var)
        if value is not None and value.strip().lower() not in _TRUE:
            return var
    return None


def _env_enabled(env: Mapping[str, str]) -> str | None:
    for var in KILL_SWITCHES[1:]:
        if env.get(var, "").strip().lower() in _TRUE:
            return var
    return None
