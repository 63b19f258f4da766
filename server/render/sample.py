"""Synthetic reports of each kind, with every block kind, error bars, suppressed cells and
an empty section: what the renderers are tested on, and what ``scripts/check_reports``
opens in a browser when the analytics are not installed. Deterministic (seeded); the
numbers are made up and say so in the notes."""

from __future__ import annotations

import datetime as dt
import math
import random

from rkd.server.report_doc import (
    Bars,
    Funnel,
    Heatmap,
    Numbers,
    Period,
    ReportDoc,
    ReportKind,
    Section,
    Series,
    Step,
    Table,
    TimeSeries,
    Value,
)

END = dt.date(2026, 12, 6)
DAYS = {"weekly": 7, "monthly": 28, "quarterly": 91, "transparency": 365}
NOTE = "SAMPLE DATA: synthetic numbers to show the layout, not measurements."
PRIVACY = [
    "Cells built from fewer than k = 10 contributors are suppressed.",
    "Community numbers are debiased from randomized response and shown ± one standard error.",
]


def sample_report(kind: ReportKind, end: dt.date = END) -> ReportDoc:
    rng = random.Random(f"{kind}{end}")
    days = DAYS[kind]
    start = end - dt.timedelta(days=days - 1)
    sections = {
        "weekly": lambda: [_engagement(rng, end, 28), _adoption(rng), _quality(rng)],
        "monthly": lambda: [_engagement(rng, end, 56), _funnels(rng), _cohorts(rng, end), _growth()],
        "quarterly": lambda: [_engagement(rng, end, 112), _adoption(rng), _cohorts(rng, end), _yoy()],
        "transparency": lambda: [_transparency(rng), _public_usage(rng)],
    }[kind]()  # fmt: skip
    return ReportDoc(
        kind=kind, title=f"ReasonKit {kind} report", period=Period(start=start.isoformat(), end=end.isoformat()),
        generated_at=f"{end + dt.timedelta(days=1)}T06:00:00Z", sections=sections, notes=[NOTE, *PRIVACY],
    )  # fmt: skip


def _engagement(rng: random.Random, end: dt.date, days: int) -> Section:
    x = [(end - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    trend = [1 + 0.004 * i + 0.08 * math.sin(i * 2 * math.pi / 7) for i in range(days)]

    def series(name: str, base: float) -> Series:
        values: list[float | None] = [round(base * t * rng.uniform(0.97, 1.03), 1) for t in trend]
        errors: list[float | None] = [round(0.04 * (v or 0), 1) for v in values]
        values[days // 3] = errors[days // 3] = None  # a day below k: suppressed
        return Series(name=name, values=values, errors=errors)

    dau, wau, mau = series("DAU", 820), series("WAU", 2350), series("MAU", 4100)
    return Section(
        id="engagement", title="Engagement",
        text="Installs active per day, week and month, from community reports.",
        blocks=[
            Numbers(items=[
                Value(label="DAU (last day)", value=dau.values[-1], error=dau.errors[-1] if dau.errors else None),
                Value(label="WAU", value=wau.values[-1], error=41.0),
                Value(label="MAU", value=mau.values[-1], error=63.0),
                Value(label="DAU/MAU", value=20.4, error=0.6, unit="%"),
                Value(label="Median session", value=412.0, unit="s"),
                Value(label="Pro sessions on Linux/arm64", value=None, suppressed=True),
            ]),
            TimeSeries(title="Active installs", x=x, series=[dau, wau, mau], unit="installs"),
        ],
    )  # fmt: skip


def _adoption(rng: random.Random) -> Section:
    tools = ["gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty", "powercombo"]
    items = [
        Value(
            label=t,
            value=round(rng.uniform(8, 64), 1),
            error=round(rng.uniform(0.8, 3), 1),
            unit="%",
        )
        for t in tools
    ]
    items.append(Value(label="__other__", value=None, suppressed=True, unit="%"))
    profiles = [
        Value(label=p, value=v, error=e, unit="%")
        for p, v, e in (
            ("quick", 31.5, 1.2),
            ("balanced", 44.0, 1.4),
            ("deep", 18.2, 1.0),
            ("paranoid", 6.3, 0.7),
        )
    ]
    return Section(
        id="adoption", title="Feature adoption",
        text="Share of active installs that used each ThinkTool and profile at least once.",
        blocks=[Bars(title="ThinkTool usage", items=items), Bars(title="Profile distribution", items=profiles)],
    )  # fmt: skip


def _quality(rng: random.Random) -> Section:
    return Section(
        id="quality", title="Quality and performance",
        blocks=[
            Numbers(items=[
                Value(label="Success rate", value=97.8, error=0.3, unit="%"),
                Value(label="p50 latency", value=1240.0, unit="ms"),
                Value(label="p95 latency", value=4810.0, unit="ms"),
                Value(label="p99 latency", value=9120.0, unit="ms"),
            ]),
            Bars(title="Errors by category (per 1,000 commands)", items=[
                Value(label="network", value=8.4, error=0.9),
                Value(label="provider_rate_limit", value=5.1, error=0.7),
                Value(label="timeout", value=2.2, error=0.5),
                Value(label="config", value=None, suppressed=True),
            ]),
            Table(title="Latency by command (ms)", columns=["command", "p50", "p95", "p99", "commands"],
                  rows=[["think", 1240, 4810, 9120, 18234], ["verify", 640, 2100, 3900, 5120],
                        ["web", 2210, 7300, 12800, 2210], ["<script>alert(1)</script>", None, None, None, None]]),
        ],
    )  # fmt: skip


def _funnels(rng: random.Random) -> Section:
    def funnel(title: str, steps: list[tuple[str, float | None]]) -> Funnel:
        out, prev = [], None
        for label, v in steps:
            conv: float | None = None if v is None or prev is None else v / prev
            out.append(Step(label=label, value=v, error=None if v is None else round(v ** 0.5, 1),
                            conversion=conv, suppressed=v is None))  # fmt: skip
            prev = v if v is not None else prev
        return Funnel(title=title, steps=out)

    return Section(
        id="funnels", title="Funnels",
        text="Installs reaching each step in the period; the drop is from the step before.",
        blocks=[
            funnel("Install to habit", [("installed", 5120), ("first command", 4230), ("first ThinkTool", 2890), ("used on 3 days", 1410), ("used in week 2", 960)]),
            funnel("Pro conversion", [("saw Pro feature", 1830), ("started trial", 212), ("activated key", None)]),
        ],
    )  # fmt: skip


def _cohorts(rng: random.Random, end: dt.date) -> Section:
    n = 8
    weeks = [(end - dt.timedelta(weeks=n - i)).strftime("%G-W%V") for i in range(n)]
    values: list[list[float | None]] = []
    for r in range(n):
        row: list[float | None] = []
        for c in range(n):
            if c == 0:
                row.append(100.0)
            elif c < n - r:
                row.append(round(100 * 0.55 * 0.9 ** (c - 1) * rng.uniform(0.92, 1.08), 1))
            else:
                row.append(None)
        values.append(row)
    values[2][5] = None  # a cell below k
    return Section(
        id="cohorts", title="Weekly cohort retention",
        text="Rows: the ISO week an install first reported. Columns: weeks since. No persistent id exists: "
             "each report carries its cohort week and its weekly activity.",
        blocks=[Heatmap(title="Retention by cohort week", rows=weeks, columns=[f"W{c}" for c in range(n)], values=values, unit="%")],
    )  # fmt: skip


def _growth() -> Section:
    return Section(id="growth", title="Growth", text="Installs per day by method.", blocks=[])


def _yoy() -> Section:
    return Section(
        id="yoy", title="Year over year",
        blocks=[Table(title="Quarter against the same quarter last year", columns=["metric", "this year", "last year", "change"],
                      rows=[["MAU", 4100, 2630, "+56%"], ["DAU/MAU (%)", 20.4, 17.9, "+2.5 pt"], ["Pro keys", None, None, "suppressed"]])],
    )  # fmt: skip


def _transparency(rng: random.Random) -> Section:
    return Section(
        id="transparency", title="What we collected and what we did with it",
        text="Counts for the whole year. Nothing individual is published.",
        blocks=[
            Numbers(items=[
                Value(label="Telemetry events processed", value=48213977.0, unit="events"),
                Value(label="Community reports received", value=612450.0, unit="reports"),
                Value(label="Deletion requests fulfilled", value=37.0),
                Value(label="Security incidents", value=0.0),
            ]),
            Table(title="Privacy changes", columns=["date", "change"],
                  rows=[["2026-03-02", "Community reports use randomized response (ε = 1 per day)."],
                        ["2026-09-14", "The server drops client addresses before any log."]]),
        ],
    )  # fmt: skip


def _public_usage(rng: random.Random) -> Section:
    return Section(
        id="usage", title="Usage statistics (differentially private)",
        text="Released with central DP noise (ε = 1 per statistic); ± one standard error of the noise.",
        blocks=[Bars(title="Share of active installs by OS", items=[
            Value(label="linux", value=58.1, error=1.9, unit="%"),
            Value(label="macos", value=34.6, error=1.9, unit="%"),
            Value(label="windows", value=7.3, error=1.9, unit="%"),
            Value(label="freebsd", value=None, suppressed=True, unit="%"),
        ])],
    )  # fmt: skip
