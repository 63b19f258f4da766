"""The four reports of §10 as ReportDocs (rkd.server.report_doc): what the renderers draw.

weekly: the 7 days ending at ``end`` (feature usage, error rates, performance);
monthly: the calendar month of ``end``, to ``end`` (funnels, cohorts, growth);
quarterly: the calendar quarter of ``end`` (trends, and year over year where the
warehouse still holds the same quarter a year back); transparency: the 365 days ending
at ``end`` (§10.2; every usage number there carries central DP noise, nothing individual).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

from rkd.client import dp
from rkd.client.dp import Estimate
from rkd.server.analytics import blocks as b
from rkd.server.analytics import cohorts as co
from rkd.server.analytics import community as cm
from rkd.server.analytics import pro
from rkd.server.analytics.estimate import K_DEFAULT, Cell, total
from rkd.server.report_doc import (
    Bars,
    Funnel,
    Heatmap,
    Numbers,
    Period,
    ReportDoc,
    ReportKind,
    Section,
    Step,
    Table,
    Value,
)
from rkd.server.warehouse import Warehouse

PRODUCT: Final = "reasonkit-core"
UPGRADES: Final = ("upgrade_prompt_shown", "upgrade_link_clicked", "trial_started",
                   "upgrade_completed", "trial_ended")  # fmt: skip
NO_ID: Final = (
    "Pro raw events carry a random id per session and nothing that links sessions: "
    "figures from them count sessions, not people."
)


def period_of(kind: ReportKind, end: dt.date) -> tuple[dt.date, dt.date]:
    if kind == "weekly":
        return end - dt.timedelta(days=6), end
    if kind == "monthly":
        return end.replace(day=1), end
    if kind == "quarterly":
        return dt.date(end.year, 3 * ((end.month - 1) // 3) + 1, 1), end
    return end - dt.timedelta(days=364), end


def notes(k: int) -> list[str]:
    return [
        f"Cells with fewer than {k} contributors (reports, or Pro sessions) are suppressed.",
        "Numbers from community reports sent under local differential privacy are debiased;"
        " ± is one standard error (exact reports add none).",
        "No persistent identifier exists: DAU/WAU/MAU are sums over anonymous daily reports. "
        + NO_ID,
    ]


def engagement(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int) -> Section:
    x = b.days(start, end)
    dau = cm.dau(wh, product, start, end)
    weeks = cm.wau(wh, product, start, end)
    months = cm.mau(wh, product, start, end)
    last_month = months.get(end.replace(day=1))
    mean = Estimate(sum(c.estimate.value for c in dau.values()) / len(x), 0.0)
    stats = pro.session_stats(wh, product, start, end)
    ok_stats = stats is not None and stats.sessions >= k
    items = [
        b.value("DAU (mean)", Cell(mean, min((c.contributors for c in dau.values()), default=0)), k),
        b.value("WAU (ISO week of the end, to date)", weeks.get(max(weeks)) if weeks else None, k),
        b.value("MAU (month to date)", last_month, k),
        b.of("DAU/MAU", cm.dau_over_mau(wh, product, end, end) if last_month else None, "%", 100),
        b.of("Pro session duration p50", Estimate(stats.duration_ms_p50 / 1000, 0) if ok_stats and stats else None, "s"),
        b.of("Pro queries per session", Estimate(stats.queries_mean, 0) if ok_stats and stats else None),
    ]  # fmt: skip
    return Section(id="engagement", title="Engagement", blocks=[
        Numbers(items=items),
        b.timeseries("Active installs per day", x, {"DAU": dau}, k, "installs"),
        b.timeseries("Active installs per ISO week", sorted(weeks), {"WAU": weeks}, k, "installs"),
        b.timeseries("Pro sessions per day", x, {"sessions": pro.sessions_per_day(wh, product, start, end)}, k, "sessions"),
    ], text=NO_ID)  # fmt: skip


Fetch = Callable[[bool], dict[Any, Cell]]  # exact_only -> cells


def choose(fetch: Fetch) -> tuple[dict[Any, Cell], str]:
    """The cells over all reports, or over the exact ones alone when the DP reports'
    noise swamps the largest cell (its error above half its value); and a title suffix."""
    mixed = fetch(False)
    top = max(mixed.values(), key=lambda c: c.estimate.value, default=None)
    if top is None or not too_noisy(top.estimate):
        return mixed, ""
    return fetch(True), EXACT_ONLY


def chosen_bars(title: str, fetch: Fetch, k: int, unit: str | None = None,
                scale: float = 1.0) -> Bars:  # fmt: skip
    cells, suffix = choose(fetch)
    return b.bars(title + suffix, cells, k, unit, scale)


def adoption(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int) -> Section:
    def dim(name: str) -> Fetch:
        return lambda exact: cm.counts(wh, product, start, end, name, exact)

    return Section(id="adoption", title="Feature adoption", blocks=[
        chosen_bars("ThinkTool runs", dim("thinktool"), k, "runs"),
        chosen_bars("Profiles", dim("profile"), k, "commands"),
        chosen_bars("Commands", dim("command"), k, "commands"),
        b.bars("Feature discovery sources (Pro)", pro.discovery_sources(wh, product, start, end), k),
        b.bars("Feature stickiness: 5 uses after a first use (Pro)", pro.stickiness(wh, product, start, end), k, "%", 100),
        b.bars("Pro-feature interest: upgrade events (Pro)", pro.by_type(wh, product, start, end, UPGRADES), k, "events"),
    ], text=f"{EXACT_ONLY.strip()}: {EXACT_NOTE}")  # fmt: skip


def quality(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int) -> Section:
    hist, n = cm.latency_histogram(wh, product, start, end, exact_only=True)
    items: list[Value] = [
        b.value("Success rate (Pro)", pro.success_rate(wh, product, start, end), k, "%", 100)
    ]
    for p in pro.PERCENTILES:
        items.append(bucket_value(f"Latency p{round(p * 100)} (reports)", hist, p, n, k))
    qs, sessions = pro.latency(wh, product, start, end)
    for p, v in zip(pro.PERCENTILES, qs, strict=False):
        items.append(
            b.value(f"Latency p{round(p * 100)} (Pro)", Cell(Estimate(v, 0), sessions), k, "ms")
        )
    return Section(id="quality", title="Quality", blocks=[
        Numbers(items=items),
        chosen_bars("Errors per command, by category (reports)", lambda x: cm.error_rates(wh, product, start, end, x), k, "%", 100),
        b.bars("Errors by category (Pro)", pro.by_subject(wh, product, start, end, ("error_occurred",)), k, "errors"),
        b.bars("Mean ThinkTool confidence (Pro)", pro.confidence(wh, product, start, end), k),
    ], text="Report latency percentiles come from the exact reports' histograms (fixed buckets: the value is the bucket's middle, ± half its width); DP histograms carry too much noise per bucket.")  # fmt: skip


def bucket_value(label: str, hist: list[Estimate], p: float, n: int, k: int) -> Value:
    """A histogram percentile as the bucket it lies in: the middle ± half the bucket
    (the open last bucket: its lower bound, "or more")."""
    if n < k:
        return Value(label=label, value=None, suppressed=True, unit="ms")
    q = cm.percentile(hist, p)
    if q is None:
        return Value(label=label, value=None, unit="ms")
    if q.high is None:
        return Value(label=f"{label}, at least", value=q.low, unit="ms")
    return Value(label=label, value=(q.low + q.high) / 2, error=(q.high - q.low) / 2, unit="ms")


def too_noisy(e: Estimate) -> bool:
    """An estimate whose error exceeds half its value: DP at this population size."""
    return e.stderr > 0.5 * abs(e.value)


def funnels(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int) -> Section:
    blocks, exact_note = [], False
    for name in dp.FUNNELS:
        found = co.funnel(wh, product, start, end, name)
        if found and too_noisy(found[0].reached.estimate):
            found, exact_note = co.funnel(wh, product, start, end, name, exact_only=True), True
        steps = [
            Step(label=s.stage, value=None, suppressed=True) if s.reached.contributors < k else Step(
                label=s.stage, value=round(s.reached.estimate.value, 2),
                error=s.reached.estimate.stderr or None,
                conversion=None if s.conversion is None else round(s.conversion.value, 4))
            for s in found
        ]  # fmt: skip
        blocks.append(Funnel(title=name.replace("_", " "), steps=steps))
    text = ("Each install counted once per month, at its first active day of the month, with the "
            "furthest stage it had reached by then. The spec's pricing_page_viewed has no event.")  # fmt: skip
    if exact_note:
        text += f" Exact reports only: {EXACT_NOTE}"
    return Section(id="funnels", title="Funnels (§7.2)", blocks=list(blocks), text=text)


EXACT_ONLY: Final = " (exact reports only)"
EXACT_NOTE: Final = (
    "where the DP reports' noise put the error above half the value (a DP report spends "
    "1/20 of its ε on funnels, 1/20 on its cohort, 1/10 on all its counts), the figure "
    "is from exact reports alone: installs that left DP off, a self-selected part."
)


def cohort_section(wh: Warehouse, product: str, end: dt.date, k: int) -> Section:
    start = cm.monday(end) - dt.timedelta(weeks=co.MAX_WEEKS_SINCE)
    table = co.cohorts(wh, product, start, end)
    noisy = any(too_noisy(c.estimate) for (_, j), c in table.cells.items() if j == 0)
    if noisy:
        table = co.cohorts(wh, product, start, end, exact_only=True)
    rates = co.retention_rates(table, k)
    cols = list(range(co.MAX_WEEKS_SINCE + 1))
    values = [[None if (r := rates.get((c, j))) is None else round(100 * r.value, 2) for j in cols]
              for c in table.cohorts]  # fmt: skip
    heat = Heatmap(title="Weekly cohort retention", unit="%",
                   rows=[f"{c.isocalendar()[0]}-W{c.isocalendar()[1]:02d}" for c in table.cohorts],
                   columns=[f"week {j}" for j in cols], values=values)  # fmt: skip
    text = co.SPEC_NOTE + (f" Exact reports only: {EXACT_NOTE}" if noisy else "")
    return Section(id="cohorts", title="Cohorts (§7.3)", blocks=[heat], text=text)


def growth(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int) -> Section:
    window = end - dt.timedelta(days=89)
    items = []
    for d in cm.RETENTION_DAYS:
        r = cm.retention(wh, product, window, end, d)
        label = f"D{d} retention (90 days)"
        if r.rate is None or too_noisy(r.rate):
            r, label = (
                cm.retention(wh, product, window, end, d, exact_only=True),
                label + EXACT_ONLY,
            )
        ok = r.retained.contributors >= k and r.new.contributors >= k
        items.append(b.of(label, r.rate, "%", 100) if ok
                     else Value(label=label, value=None, suppressed=True))  # fmt: skip
    churn, c_note = choose(lambda x: cm.churn(wh, product, window, end, x))
    installs, i_note = choose(lambda x: cm.new_installs(wh, product, start, end, x))
    return Section(id="growth", title="Growth", blocks=[
        Numbers(items=items),
        b.timeseries("New installs per day" + i_note, b.days(start, end), {"installs": installs}, k, "installs"),
        b.timeseries("Net weekly churn" + c_note, sorted(churn), {"churn": churn}, k, "%", 100),
        b.bars("Install method (Pro)", pro.by_subject(wh, product, start, end, ("install_completed",)), k, "installs"),
    ], text="Churn is net of installs coming back after a gap: no id tells a returning install from a new one, so it is a lower bound of gross churn. " + f"{EXACT_ONLY.strip()}: {EXACT_NOTE}")  # fmt: skip


def trends(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int) -> Section:
    weeks = cm.wau(wh, product, start, end)
    months = cm.mau(wh, product, start, end)
    a_year = dt.timedelta(days=364)  # 52 weeks: same weekdays
    rows: list[list[str | float | int | None]] = []
    for label, now, then in (
        ("Installs active (sum of MAU)", _sum(months), _sum(cm.mau(wh, product, start - a_year, end - a_year))),
        ("New installs", _sum(cm.new_installs(wh, product, start, end)), _sum(cm.new_installs(wh, product, start - a_year, end - a_year))),
        ("Active install-days (reports)", _sum(cm.dau(wh, product, start, end)), _sum(cm.dau(wh, product, start - a_year, end - a_year))),
    ):  # fmt: skip
        ok = then is not None and then.value >= k
        change = (
            None if not ok or now is None or then is None else round(now.value / then.value - 1, 4)
        )
        rows.append([label, _r(now, k), _r(then, k) if ok else None, change])
    return Section(id="trends", title="Trends", blocks=[
        b.timeseries("WAU", sorted(weeks), {"WAU": weeks}, k, "installs"),
        b.timeseries("MAU", sorted(months), {"MAU": months}, k, "installs"),
        Table(title="Year over year", columns=["metric", "this period", "a year before", "change"], rows=rows),
    ], text="Year over year appears where the warehouse still holds the period a year back (reports are kept 3 years).")  # fmt: skip


def _sum(cells: dict[dt.date, Cell]) -> Estimate | None:
    return total(c.estimate for c in cells.values()) if cells else None


def _r(e: Estimate | None, k: int) -> float | None:
    return None if e is None or e.value < k else round(e.value)


def build_report(warehouse: Warehouse, kind: ReportKind, end: dt.date, k: int = K_DEFAULT,
                 *, product: str = PRODUCT, now: dt.datetime | None = None) -> ReportDoc:  # fmt: skip
    """The ``kind`` report for the period ending at ``end`` (inclusive), cells below ``k``
    contributors suppressed."""
    from rkd.server.analytics.transparency import transparency

    start, end = period_of(kind, end)
    wh, p = warehouse, product
    if kind == "weekly":
        sections = [engagement(wh, p, start, end, k), adoption(wh, p, start, end, k),
                    quality(wh, p, start, end, k)]  # fmt: skip
    elif kind == "monthly":
        sections = [funnels(wh, p, start, end, k), cohort_section(wh, p, end, k),
                    growth(wh, p, start, end, k), engagement(wh, p, start, end, k)]  # fmt: skip
    elif kind == "quarterly":
        sections = [trends(wh, p, start, end, k), growth(wh, p, start, end, k),
                    adoption(wh, p, start, end, k), quality(wh, p, start, end, k)]  # fmt: skip
    elif kind == "transparency":
        sections = transparency(wh, p, start, end, k)
    else:
        raise ValueError(f"unknown report kind {kind!r}")
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    title = {"weekly": "Weekly metrics", "monthly": "Monthly deep dive",
             "quarterly": "Quarterly review", "transparency": "Transparency report"}[kind]  # fmt: skip
    return ReportDoc(kind=kind, title=f"{title}: {p}", generated_at=stamp, sections=sections,
                     period=Period(start=start.isoformat(), end=end.isoformat()), notes=notes(k))  # fmt: skip
