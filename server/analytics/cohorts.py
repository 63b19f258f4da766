"""§7.2 funnels and §7.3 weekly cohorts, from community reports.

The spec's §7.3 SQL follows one ``session_hash`` across weeks: a persistent id, which
rkd never has. Here a cohort is the ISO week an install was first seen in (each report
carries it as ``cohort_week``) and "active in week w" is the report flagged
``first_of_week`` in w (exactly one per install and week). Funnels likewise: a report
holds the furthest stage of each funnel its install has reached so far, and the
``first_of_month`` report counts each install once per month, at its first active day.

Under DP both attributes of a cell are randomized independently; the cell is estimated
with the product of their unbiased indicators (estimate.joint_count). A cohort is
randomized only over the 13 weeks ending with the report's week, so the table keeps
weeks 0..11 since the cohort.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, NamedTuple

from rkd.client import dp
from rkd.client.dp import Estimate
from rkd.server.analytics.community import WHERE, monday, query
from rkd.server.analytics.estimate import (
    Cell,
    Indicator,
    Joint,
    indicator,
    joint_count,
    part,
    ratio,
    total,
)
from rkd.server.warehouse import Warehouse

MAX_WEEKS_SINCE: Final = dp.COHORT_WEEKS - 2  # 12 is "12 or more" under DP
SPEC_NOTE: Final = (
    "The spec's §7.3 SQL follows a persistent session_hash across weeks; rkd has no "
    "persistent id. Cohorts here are each report's cohort_week (the install's first ISO "
    "week) and weekly activity its first_of_week flag: sums over anonymous reports."
)


def _cross(tables: dict[float, list[tuple[bool, bool]]], ind_a: dict[float, Indicator],
           ind_b: dict[float, Indicator], weights: dict[float, list[int]]) -> Cell:  # fmt: skip
    """Sum joint_count over mechanisms; ``tables[eps]`` lists (in A, in B) per row group
    with ``weights[eps]`` reports each."""
    parts, shown = [], 0
    for eps, flags in tables.items():
        w = weights[eps]
        t = Joint(n=sum(w), ab=sum(n for (a, b), n in zip(flags, w, strict=True) if a and b),
                  a=sum(n for (a, _), n in zip(flags, w, strict=True) if a),
                  b=sum(n for (_, b), n in zip(flags, w, strict=True) if b))  # fmt: skip
        parts.append(joint_count(t, ind_a[eps], ind_b[eps]))
        shown += t.ab
    return Cell(total(parts), shown)


class FunnelStep(NamedTuple):
    stage: str
    reached: Cell  # installs that reached this stage (and every one before it)
    conversion: Estimate | None  # from the previous stage


def funnel(wh: Warehouse, product: str, start: dt.date, end: dt.date, name: str,
           exact_only: bool = False) -> list[FunnelStep]:  # fmt: skip
    """One funnel of rkd.client.dp.FUNNELS: per stage, the installs active in the period's
    months that had reached it by their first active day of the month (one count per
    install and month), and the conversion from the stage before.

    Under DP a funnel answer gets ε/60 (1/20 of the report's ε, split over 3 funnels):
    at ε = 1 a stage count's error is ~30 per report, so mixed estimates need millions
    of reports; ``exact_only`` counts the exact reports alone (installs that left DP off)."""
    stages = dp.FUNNELS[name]
    rows = query(
        wh,
        f"SELECT dp_epsilon, JSONExtractInt(body, 'funnel', {{name:String}}) AS stage,"
        f" first_of_month, count() FROM {{db}}.reports WHERE {WHERE}"
        " GROUP BY dp_epsilon, stage, first_of_month",
        product=product, start=start, end=end, name=name, exact=int(exact_only),
    )  # fmt: skip
    k = len(stages) + 1
    steps: list[FunnelStep] = []
    for s in range(1, k):
        tables: dict[float, list[tuple[bool, bool]]] = {}
        weights: dict[float, list[int]] = {}
        ind_a, ind_b = {}, {}
        for eps, stage, fom, n in rows:
            e = float(eps)
            tables.setdefault(e, []).append((int(stage) >= s, bool(fom)))
            weights.setdefault(e, []).append(int(n))
            ind_a[e] = indicator(k, k - s, part(e, "funnel") / len(dp.FUNNELS) if e else 0.0)
            ind_b[e] = indicator(2, 1, part(e, "first_of_month") if e else 0.0)
        cell = _cross(tables, ind_a, ind_b, weights)
        prev = steps[-1].reached.estimate if steps else None
        conv = ratio(cell.estimate, prev) if prev is not None else None
        steps.append(FunnelStep(stages[s - 1], cell, conv))
    return steps


def _iso_monday(week: str) -> dt.date:
    year, w = (int(x) for x in week.split("-W"))
    return dt.date.fromisocalendar(year, w, 1)


class CohortTable(NamedTuple):
    cohorts: list[dt.date]  # Mondays of the cohort weeks
    cells: dict[tuple[dt.date, int], Cell]  # (cohort, weeks since) -> installs active


def cohorts(wh: Warehouse, product: str, start: dt.date, end: dt.date,
            exact_only: bool = False) -> CohortTable:  # fmt: skip
    """Installs active per cohort week and week since, for the cohorts that began in the
    period (from ``monday(start)``): the §7.3 table without a persistent id
    (``exact_only``: from exact reports alone, as for :func:`funnel`)."""
    first = monday(start)
    rows = query(
        wh,
        f"SELECT dp_epsilon, toMonday(day) AS w, cohort_week, first_of_week, count()"
        f" FROM {{db}}.reports WHERE {WHERE}"
        " GROUP BY dp_epsilon, w, cohort_week, first_of_week",
        product=product, start=first, end=end, exact=int(exact_only),
    )  # fmt: skip
    by_week: dict[dt.date, list[tuple[float, dt.date, bool, int]]] = {}
    for eps, w, cw, fow, n in rows:
        by_week.setdefault(w, []).append((float(eps), _iso_monday(cw), bool(fow), int(n)))
    weeks = sorted(w for w in by_week if w >= first)
    cells = {}
    for c in weeks:
        for j in range(MAX_WEEKS_SINCE + 1):
            w = c + dt.timedelta(weeks=j)
            if w in by_week:
                cells[(c, j)] = _cohort_cell(by_week[w], c)
    return CohortTable(weeks, cells)


def _cohort_cell(rows: list[tuple[float, dt.date, bool, int]], cohort: dt.date) -> Cell:
    tables: dict[float, list[tuple[bool, bool]]] = {}
    weights: dict[float, list[int]] = {}
    ind_a, ind_b = {}, {}
    for eps, cw, fow, n in rows:
        tables.setdefault(eps, []).append((cw == cohort, fow))
        weights.setdefault(eps, []).append(n)
        ind_a[eps] = indicator(dp.COHORT_WEEKS, 1, part(eps, "cohort_week") if eps else 0.0)
        ind_b[eps] = indicator(2, 1, part(eps, "first_of_week") if eps else 0.0)
    return _cross(tables, ind_a, ind_b, weights)


def retention_rates(table: CohortTable, k: int) -> dict[tuple[dt.date, int], Estimate | None]:
    """Each cell over its cohort's week-0 cell (None: suppressed, fewer than ``k``
    reports in either)."""
    out: dict[tuple[dt.date, int], Estimate | None] = {}
    for (c, j), cell in table.cells.items():
        base = table.cells.get((c, 0))
        if base is None or cell.contributors < k or base.contributors < k:
            out[(c, j)] = None
        else:
            out[(c, j)] = ratio(cell.estimate, base.estimate)
    return out
