"""From estimates to report blocks, with k-suppression applied in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from rkd.client.dp import Estimate
from rkd.server.analytics.estimate import Cell
from rkd.server.report_doc import Bars, Series, TimeSeries, Value


def value(label: str, cell: Cell | None, k: int, unit: str | None = None,
          scale: float = 1.0) -> Value:  # fmt: skip
    """A Value from a cell: suppressed (no number) below ``k`` contributors."""
    if cell is None:
        return Value(label=label, value=None, unit=unit)
    if cell.contributors < k:
        return Value(label=label, value=None, unit=unit, suppressed=True)
    return of(label, cell.estimate, unit, scale)


def of(label: str, e: Estimate | None, unit: str | None = None, scale: float = 1.0) -> Value:
    """A Value from an estimate already cleared for publication (None: not computable)."""
    if e is None:
        return Value(label=label, value=None, unit=unit)
    err = e.stderr * scale if e.stderr else None
    return Value(label=label, value=round(e.value * scale, 4), error=err, unit=unit)


def bars(title: str, cells: Mapping[str, Cell], k: int, unit: str | None = None,
         scale: float = 1.0) -> Bars:  # fmt: skip
    """Bars, largest first; suppressed keys stay (marked) at the end."""
    items = [value(key, cell, k, unit, scale) for key, cell in cells.items()]
    items.sort(key=lambda v: (v.value is None, -(v.value or 0.0)))
    return Bars(title=title, items=items)


def series(name: str, x: list[dt.date], cells: Mapping[dt.date, Cell], k: int,
           scale: float = 1.0) -> Series:  # fmt: skip
    vals: list[float | None] = []
    errs: list[float | None] = []
    for d in x:
        v = value(name, cells.get(d), k, scale=scale)
        vals.append(v.value)
        errs.append(v.error)
    return Series(name=name, values=vals, errors=errs if any(errs) else None)


def timeseries(title: str, x: list[dt.date], named: Mapping[str, Mapping[dt.date, Cell]], k: int,
               unit: str | None = None, scale: float = 1.0) -> TimeSeries:  # fmt: skip
    return TimeSeries(
        title=title, x=[d.isoformat() for d in x], unit=unit,
        series=[series(name, x, cells, k, scale) for name, cells in named.items()],
    )  # fmt: skip


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
