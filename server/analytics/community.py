"""§7 from community reports: one anonymous report per install and active UTC day.

No id links two reports, so every number is a sum over reports (rkd.client.report says
which): DAU counts reports, WAU and MAU sum the first-of-week / first-of-month flags,
retention divides reports of install age k by new installs k days earlier. Each function
reads the ``reports`` table for one product and a period of whole UTC days, and returns
estimates (exact reports exact, randomized ones debiased with an error) with the number
of reports behind them, for k-suppression.
"""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Any, Final, NamedTuple

from rkd.client.dp import Estimate
from rkd.client.report import LATENCY_BUCKETS_MS
from rkd.server.analytics.estimate import (
    MECH_SQL,
    Cell,
    age_count,
    count_sum,
    flag_count,
    ratio,
    total,
)
from rkd.server.warehouse import Warehouse

WHERE: Final = (
    "product = {product:String} AND day BETWEEN {start:Date} AND {end:Date}"
    " AND ({exact:UInt8} = 0 OR dp_epsilon = 0)"  # exact_only: the exact reports alone
)
RETENTION_DAYS: Final = (1, 7, 30)


def query(wh: Warehouse, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``{db}`` for the database, ClickHouse ``{name:Type}`` parameters)."""
    result = wh.client.query(sql.replace("{db}", wh.db), parameters=params)
    return [tuple(r) for r in result.result_rows]


def monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def dau(wh: Warehouse, product: str, start: dt.date, end: dt.date,
        exact_only: bool = False) -> dict[dt.date, Cell]:  # fmt: skip
    """Reports per day: installs active that day (exact: a report's existence is not
    randomized)."""
    rows = query(wh, f"SELECT day, count() FROM {{db}}.reports WHERE {WHERE} GROUP BY day",
                 product=product, start=start, end=end, exact=int(exact_only))  # fmt: skip
    return {d: Cell(Estimate(float(n), 0.0), int(n)) for d, n in rows}


def _flag_by(wh: Warehouse, product: str, start: dt.date, end: dt.date, period: str,
             flag: str, exact_only: bool) -> dict[dt.date, Cell]:  # fmt: skip
    rows = query(
        wh,
        f"SELECT {period}(day) AS p, dp_epsilon, count(), sum({flag}) FROM {{db}}.reports"
        f" WHERE {WHERE} GROUP BY p, dp_epsilon",
        product=product, start=start, end=end, exact=int(exact_only),
    )  # fmt: skip
    groups: dict[dt.date, list[tuple[float, int, int]]] = {}
    for p, eps, n, ones in rows:
        groups.setdefault(p, []).append((float(eps), int(n), int(ones)))
    return {
        p: Cell(flag_count(g, flag), sum(ones for _, _, ones in g))  # type: ignore[arg-type]
        for p, g in sorted(groups.items())
    }


def wau(wh: Warehouse, product: str, start: dt.date, end: dt.date,
        exact_only: bool = False) -> dict[dt.date, Cell]:  # fmt: skip
    """Installs active per ISO week (keyed by its Monday): first-of-week flags summed
    over the week's reports from ``monday(start)`` (a week cut by ``end`` is to date)."""
    return _flag_by(wh, product, monday(start), end, "toMonday", "first_of_week", exact_only)


def mau(wh: Warehouse, product: str, start: dt.date, end: dt.date,
        exact_only: bool = False) -> dict[dt.date, Cell]:  # fmt: skip
    """Installs active per calendar month (keyed by its first day), from the month's
    first day to ``end``."""
    return _flag_by(
        wh, product, start.replace(day=1), end, "toStartOfMonth", "first_of_month", exact_only
    )


def dau_over_mau(wh: Warehouse, product: str, month: dt.date, end: dt.date) -> Estimate | None:
    """Stickiness: mean DAU over the month (to ``end``) divided by its MAU."""
    first = month.replace(day=1)
    days = dau(wh, product, first, end)
    m = mau(wh, product, first, end).get(first)
    if m is None or not days:
        return None
    mean = sum(c.estimate.value for c in days.values()) / ((end - first).days + 1)
    return ratio(Estimate(mean, 0.0), m.estimate)


def _age_rows(wh: Warehouse, product: str, start: dt.date, end: dt.date, age: int,
              exact_only: bool) -> tuple[list[tuple[float, int, int]], int]:  # fmt: skip
    rows = query(
        wh,
        f"SELECT dp_epsilon, count(), countIf(install_age_days = {int(age)})"
        f" FROM {{db}}.reports WHERE {WHERE} GROUP BY dp_epsilon",
        product=product, start=start, end=end, exact=int(exact_only),
    )  # fmt: skip
    out = [(float(e), int(n), int(s)) for e, n, s in rows]
    return out, sum(s for _, _, s in out)


class Retention(NamedTuple):
    retained: Cell  # reports of install age k on days [start + k, end]
    new: Cell  # new installs on days [start, end - k]
    rate: Estimate | None


def retention(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int,
              exact_only: bool = False) -> Retention:  # fmt: skip
    """Dk retention over the period: installs active exactly k days after their first
    day, over the installs that started early enough in the period to be seen k days on."""
    shift = dt.timedelta(days=k)
    num_rows, num_n = _age_rows(wh, product, start + shift, end, k, exact_only)
    den_rows, den_n = _age_rows(wh, product, start, end - shift, 0, exact_only)
    num, den = age_count(num_rows, k), age_count(den_rows, 0)
    return Retention(Cell(num, num_n), Cell(den, den_n), ratio(num, den))


def new_installs(wh: Warehouse, product: str, start: dt.date, end: dt.date,
                 exact_only: bool = False) -> dict[dt.date, Cell]:  # fmt: skip
    """Installs per day: reports that are an install's first active day (install age 0)."""
    rows = query(
        wh,
        f"SELECT day, dp_epsilon, count(), countIf(install_age_days = 0) FROM {{db}}.reports"
        f" WHERE {WHERE} GROUP BY day, dp_epsilon",
        product=product, start=start, end=end, exact=int(exact_only),
    )  # fmt: skip
    groups: dict[dt.date, list[tuple[float, int, int]]] = {}
    for d, eps, n, s in rows:
        groups.setdefault(d, []).append((float(eps), int(n), int(s)))
    return {d: Cell(age_count(g, 0), sum(s for *_, s in g)) for d, g in sorted(groups.items())}


def scalars(wh: Warehouse, product: str, start: dt.date, end: dt.date,
            exact_only: bool = False) -> dict[str, Cell]:  # fmt: skip
    """Sessions, commands and errors summed over the period's reports."""
    rows = query(
        wh,
        f"SELECT {MECH_SQL}, count(), sum(sessions), sum(commands), sum(errors)"
        f" FROM {{db}}.reports WHERE {WHERE} GROUP BY eps, bound",
        product=product, start=start, end=end, exact=int(exact_only),
    )  # fmt: skip
    reports = sum(int(r[2]) for r in rows)
    out = {}
    for i, name in enumerate(("sessions", "commands", "errors")):
        sums = [(float(r[0]), int(r[1]), int(r[2]), int(r[3 + i])) for r in rows]
        out[name] = Cell(count_sum(sums, histogram=False), reports)
    return out


def counts(wh: Warehouse, product: str, start: dt.date, end: dt.date, dimension: str,
           exact_only: bool = False) -> dict[str, Cell]:  # fmt: skip
    """One dimension's counts by key (ThinkTools, profiles, commands, error categories,
    features), summed over reports; contributors: reports with a positive count."""
    rows = query(
        wh,
        f"SELECT key, {MECH_SQL}, count(), sum(n), countIf(n > 0) FROM {{db}}.reports"
        " ARRAY JOIN count_dimension AS dim, count_key AS key, count_n AS n"
        f" WHERE {WHERE} AND dim = {{dim:String}} GROUP BY key, eps, bound",
        product=product, start=start, end=end, exact=int(exact_only), dim=dimension,
    )  # fmt: skip
    groups: dict[str, list[tuple[float, int, int, int]]] = {}
    people: dict[str, int] = {}
    for key, eps, bound, n, s, pos in rows:
        groups.setdefault(key, []).append((float(eps), int(bound), int(n), int(s)))
        people[key] = people.get(key, 0) + int(pos)
    return {
        key: Cell(count_sum(g, histogram=True), people[key]) for key, g in sorted(groups.items())
    }


def latency_histogram(wh: Warehouse, product: str, start: dt.date, end: dt.date,
                      exact_only: bool = False) -> tuple[list[Estimate], int]:  # fmt: skip
    """Commands per latency bucket (rkd.client.report.LATENCY_BUCKETS_MS), summed over
    the period's reports, and the reports behind them.

    A randomized report's bucket carries noise of standard deviation ~2,500 at ε = 1
    (the histogram gets 1/90 of ε): percentiles need ``exact_only`` unless DP reports
    number in the millions. Exact reports come from installs that left DP off, a
    self-selected part of the population."""
    rows = query(
        wh,
        f"SELECT {MECH_SQL}, count(), sumForEach(latency_ms) FROM {{db}}.reports"
        f" WHERE {WHERE} AND notEmpty(latency_ms) GROUP BY eps, bound",
        product=product, start=start, end=end, exact=int(exact_only),
    )  # fmt: skip
    width = len(LATENCY_BUCKETS_MS) + 1
    buckets = []
    for i in range(width):
        sums = [(float(e), int(b), int(n), int(h[i]) if i < len(h) else 0) for e, b, n, h in rows]
        buckets.append(count_sum(sums, histogram=True))
    return buckets, sum(int(r[2]) for r in rows)


class Percentile(NamedTuple):
    """A percentile read from a histogram: interpolated within the bucket it falls in;
    the truth lies in [low, high] (high None: the open last bucket)."""

    value: float
    low: float
    high: float | None


def percentile(buckets: list[Estimate], p: float) -> Percentile | None:
    """The ``p`` quantile (0..1) of a latency histogram; negative debiased bucket counts
    count as 0. None for an empty histogram."""
    counts = [max(b.value, 0.0) for b in buckets]
    n = sum(counts)
    if n <= 0:
        return None
    target, cum = p * n, 0.0
    cumulative = []
    for c in counts:
        cum += c
        cumulative.append(cum)
    i = min(bisect.bisect_left(cumulative, target), len(counts) - 1)
    low = 0.0 if i == 0 else float(LATENCY_BUCKETS_MS[i - 1])
    if i >= len(LATENCY_BUCKETS_MS):
        return Percentile(low, low, None)
    high = float(LATENCY_BUCKETS_MS[i])
    before = cumulative[i] - counts[i]
    frac = (target - before) / counts[i] if counts[i] else 0.5
    return Percentile(low + frac * (high - low), low, high)


def error_rates(wh: Warehouse, product: str, start: dt.date, end: dt.date,
                exact_only: bool = False) -> dict[str, Cell]:  # fmt: skip
    """Errors per command, by error category: category counts over the commands."""
    commands = scalars(wh, product, start, end, exact_only)["commands"].estimate
    out = {}
    for key, cell in counts(wh, product, start, end, "error_category", exact_only).items():
        rate = ratio(cell.estimate, commands)
        if rate is not None:
            out[key] = Cell(rate, cell.contributors)
    return out


def churn(wh: Warehouse, product: str, start: dt.date, end: dt.date,
          exact_only: bool = False) -> dict[dt.date, Cell]:  # fmt: skip
    """Net weekly churn: installs active the week before and not this week, estimated as
    WAU(w-1) - (WAU(w) - new installs in w), over WAU(w-1).

    Without an id, an install that skips a week and returns later counts as churned
    then as returning, so this is churn net of reactivation (a lower bound of gross
    churn). The error ignores the covariance of WAU(w) and new installs in w (same
    reports), so it is a guide only."""
    weeks = wau(wh, product, start, end, exact_only)
    news = new_installs(wh, product, monday(start), end, exact_only)
    out = {}
    for w, cell in weeks.items():
        prev = weeks.get(w - dt.timedelta(days=7))
        if prev is None or w + dt.timedelta(days=6) > end:
            continue
        new = total(c.estimate for d, c in news.items() if w <= d < w + dt.timedelta(days=7))
        lost = Estimate(
            prev.estimate.value - cell.estimate.value + new.value,
            total((prev.estimate, cell.estimate, new)).stderr,
        )
        rate = ratio(lost, prev.estimate)
        if rate is not None:
            out[w] = Cell(rate, min(prev.contributors, cell.contributors))
    return out
