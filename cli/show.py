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
        undeclared = set(e.get("undeclared", ()))
        if "*" in undeclared:
            lines.append(f"  ({e['source']['product']} declared no vocabulary:"
                         " none of this event can be uploaded)")  # fmt: skip
        for k, v in leaves(e["payload"]):
            mark = "   <- undeclared: uploaded as __other__" if k in undeclared else ""
            lines.append(f"  {k}: {_text(v)}{mark}")
        for k in sorted(u for u in undeclared if u.startswith("source.")):
            lines.append(
                f"  {k}: {_text(e['source'][k[7:]])}   <- undeclared: uploaded as __other__"
            )
    shown = "" if len(events) == pending else f" ({len(events):,} shown)"
    lines += ["", f"Total: {pending:,} event{'s' if pending != 1 else ''} pending{shown}"]
    return "\n".join(lines)
