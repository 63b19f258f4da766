"""The shape of a maintainers' report (issue 14), between the analytics that fill it
(:mod:`rkd.server.analytics`) and the renderers that draw it (HTML, Markdown, JSON).

A report is a titled list of sections, each a list of blocks; a block is one of a few
kinds a renderer knows how to draw. Every number may carry an error bar (one standard
error, from the DP debiasing or the sampling) and may be suppressed: a cell built from
fewer than k contributors is never shown, only marked as suppressed.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ReportKind = Literal["weekly", "monthly", "quarterly", "transparency"]


class Value(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    value: float | None  # None: suppressed or not computable
    error: float | None = None  # one standard error, same unit as value
    unit: str | None = None  # "%", "ms", "events", ...
    suppressed: bool = False  # fewer than k contributors: value is None


class Numbers(msgspec.Struct, frozen=True, kw_only=True, tag="numbers"):
    """Headline figures, side by side."""

    items: list[Value]


class Series(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    values: list[float | None]  # one per x; None: suppressed or no data
    errors: list[float | None] | None = None


class TimeSeries(msgspec.Struct, frozen=True, kw_only=True, tag="timeseries"):
    title: str
    x: list[str]  # ISO dates (days) or ISO weeks ("2026-W49")
    series: list[Series]
    unit: str | None = None


class Bars(msgspec.Struct, frozen=True, kw_only=True, tag="bars"):
    title: str
    items: list[Value]


class Step(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    value: float | None  # contributors who reached the step
    error: float | None = None
    conversion: float | None = None  # from the previous step, 0..1
    suppressed: bool = False


class Funnel(msgspec.Struct, frozen=True, kw_only=True, tag="funnel"):
    title: str
    steps: list[Step]


class Heatmap(msgspec.Struct, frozen=True, kw_only=True, tag="heatmap"):
    """E.g. the weekly cohort retention table: rows cohorts, columns weeks since."""

    title: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]  # rows x columns; None: suppressed or not yet
    unit: str | None = None


class Table(msgspec.Struct, frozen=True, kw_only=True, tag="table"):
    title: str
    columns: list[str]
    rows: list[list[str | float | int | None]]


Block = Numbers | TimeSeries | Bars | Funnel | Heatmap | Table


class Section(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str
    blocks: list[Block]
    text: str | None = None  # a short paragraph under the title


class Period(msgspec.Struct, frozen=True, kw_only=True):
    start: str  # ISO date, inclusive
    end: str  # ISO date, inclusive


class ReportDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: ReportKind
    title: str
    period: Period
    generated_at: str  # RFC 3339, UTC
    sections: list[Section]
    notes: list[str] = []  # how privacy shaped the numbers: k, DP, what was suppressed
