"""Formatting shared by the renderers: numbers with units and error bars, and the words
for a number that is not shown.

A ``"%"`` value is a percentage already (42.0 is 42 %); a funnel's ``conversion`` is a
fraction (0.42). A suppressed value is never formatted: only the word is shown.
"""

from __future__ import annotations

from typing import Final

SUPPRESSED: Final = "suppressed"  # a Value or Step flagged suppressed (fewer than k)
MISSING: Final = "–"  # a None in a series, heat-map or table: suppressed or no data
MISSING_NOTE: Final = "– or hatched: suppressed (fewer than k contributors) or no data yet"


def number(value: float) -> str:
    """1,234 · 12.3 · 0.42: thousands separated, about three significant digits."""
    if value != value:  # NaN: never drawn as a number
        return MISSING
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def with_unit(value: float, unit: str | None) -> str:
    if not unit:
        return number(value)
    return f"{number(value)}{unit}" if unit == "%" else f"{number(value)} {unit}"


def error(err: float | None, unit: str | None = None) -> str:
    """'± 1.2%' (one standard error), or '' when there is none."""
    return "" if err is None else f"± {with_unit(err, unit)}"


def shown(value: float | None, suppressed: bool, unit: str | None = None) -> str:
    """What a Value or Step cell shows: the number, or a word, never a suppressed number."""
    if suppressed:
        return SUPPRESSED
    return "n/a" if value is None else with_unit(value, unit)


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"
