"""`rkd show`: the daemon's pending events in the spec's §5.1 layout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Non-empty leaf values of a payload, nested fields as dotted names."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{prefix}{k}.")
    elif value is not None and value != [] and value != ():
        yield prefix.rstrip("."), value


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    return str(v)


def render(events: list[dict[str, Any]], pending: int) -> str:
    lines = [
        "Pending Telemetry Events (not yet flushed)",
        "==========================================",
    ]
    for i, e in enumerate(events, 1):
        lines += ["", f"Event {i}: {e['event_type']}"]
        lines += [f"  {k}: {_text(v)}" for k, v in leaves(e["payload"])]
    shown = "" if len(events) == pending else f" ({len(events):,} shown)"
    lines += ["", f"Total: {pending:,} event{'s' if pending != 1 else ''} pending{shown}"]
    return "\n".join(lines)
