"""Issue 14's analytics against a known truth: a synthetic population driven through the
real daemon's report builder into embedded ClickHouse, then the warehouse queries.

The tests run two populations of 300 installs over 16 weeks, one all exact and one with
30 % of the installs under local DP at ε = 1, to stay near 25 s on a shared machine; ``python -m tests.analytics_population --installs 5000
--weeks 16`` runs the same checks on the full population (45,000 reports; 3.5 minutes
on a shared 2-core machine: all 315 checks within bounds, mean z² 0.79, max |z| 3.3).

Error bounds stated and held: DAU and every figure built from exact reports only is
exact; debiased sums (WAU, MAU, retention counts, funnel stages, cohort cells) are
within 4 of their stated standard errors; report latency percentiles lie in the
histogram bucket the estimate names (buckets: rkd.client.report.LATENCY_BUCKETS_MS).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import NamedTuple

import msgspec
import pytest
from rkd.client import dp
from rkd.client import schema as s
from rkd.client.report import CommunityReport
from rkd.daemon import reports as rp
from rkd.server import publish
from rkd.server.analytics import build_report, pro
from rkd.server.analytics import cohorts as co
from rkd.server.analytics import community as cm
from rkd.server.analytics import estimate as est
from rkd.server.report_doc import Bars, Numbers, ReportDoc, Table
from rkd.server.rows import report_row
from rkd.server.warehouse import Warehouse

from tests import analytics_population as ap

Z = 4.0
INSTALLS, WEEKS = 300, 16


class Check(NamedTuple):
    name: str
    truth: float
    value: float
    stderr: float

    @property
    def ok(self) -> bool:
        return abs(self.value - self.truth) <= Z * self.stderr + 1e-6


def checks(wh: Warehouse, truth: ap.Truth) -> list[Check]:
    """Every recovered figure beside its truth."""
    p, start = truth.product, ap.START
    end = truth.date(truth.days - 1)
    out = [Check(f"DAU {d}", truth.dau((d - start).days), c.estimate.value, c.estimate.stderr)
           for d, c in cm.dau(wh, p, start, end).items()]  # fmt: skip
    for w, c in cm.wau(wh, p, start, end).items():
        lo = (w - start).days
        out.append(Check(f"WAU {w}", truth.active_in(lo, lo + 7), *c.estimate))
    for m, c in cm.mau(wh, p, start, end).items():
        nxt = (m + dt.timedelta(days=32)).replace(day=1)
        lo, hi = max((m - start).days, 0), min((nxt - start).days, truth.days)
        out.append(Check(f"MAU {m:%Y-%m}", truth.active_in(lo, hi), *c.estimate))
    for k in cm.RETENTION_DAYS:
        r = cm.retention(wh, p, start, end, k)
        retained, new = truth.retention(k)
        out += [Check(f"D{k} retained", retained, *r.retained.estimate),
                Check(f"D{k} new installs", new, *r.new.estimate)]  # fmt: skip
        if r.rate is not None and retained > 0 and r.new.estimate.stderr == 0:
            out.append(Check(f"D{k} rate", retained / new, *r.rate))
    out += funnel_checks(wh, truth) + cohort_checks(wh, truth)
    hist, _ = cm.latency_histogram(wh, p, start, end, exact_only=True)
    for q in pro.PERCENTILES:
        got = cm.percentile(hist, q)
        assert got is not None
        true = truth.latency_quantile(q)
        high = got.high if got.high is not None else float("inf")
        half = (high - got.low) / 2 if got.high is not None else 0.0
        mid = got.low + half if got.high is not None else true
        inside = got.low <= true <= high
        out.append(Check(f"latency p{round(q * 100)} in bucket ({got.low:.0f}-{high:.0f}]", true,
                         mid if inside else got.value, half / Z))  # fmt: skip
    return out


def funnel_checks(wh: Warehouse, truth: ap.Truth) -> list[Check]:
    out = []
    for (ym, name), stages in sorted(truth.funnel_month.items()):
        first = dt.date(ym // 100, ym % 100, 1)
        last = min((first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1),
                   truth.date(truth.days - 1))  # fmt: skip
        for i, step in enumerate(co.funnel(wh, truth.product, first, last, name), start=1):
            true = sum(n for stage, n in stages.items() if stage >= i)
            out.append(
                Check(f"funnel {name} {first:%Y-%m} {step.stage}", true, *step.reached.estimate)
            )
    return out


def cohort_checks(wh: Warehouse, truth: ap.Truth) -> list[Check]:
    table = co.cohorts(wh, truth.product, ap.START, truth.date(truth.days - 1))
    return [Check(f"cohort {c} week +{j}", truth.cohort((c - ap.START).days // 7, j), *cell.estimate)
            for (c, j), cell in sorted(table.cells.items())]  # fmt: skip


def compare(wh: Warehouse, truth: ap.Truth) -> list[str]:
    """Each check as a line (the full population's printout), failures marked."""
    return [f"{'ok ' if c.ok else 'BAD'} {c.name}: true {c.truth:.4g}, estimate {c.value:.4g}"
            f" ± {c.stderr:.3g}" for c in checks(wh, truth)]  # fmt: skip


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    yield from ap.warehouse_at(tmp_path_factory.mktemp("analytics"))


@pytest.fixture(scope="module")
def exact(warehouse: Warehouse) -> ap.Truth:
    """Installs that all left DP off: every figure must come back exactly."""
    return ap.populate(warehouse, INSTALLS, WEEKS, dp_share=0.0, seed=2026, product="exact-pop")


@pytest.fixture(scope="module")
def population(warehouse: Warehouse) -> ap.Truth:
    """30 % of the installs under local DP at ε = 1, the rest exact."""
    return ap.populate(warehouse, INSTALLS, WEEKS, dp_share=0.3, epsilon=1.0, seed=14)


def test_exact_reports_give_back_the_truth_exactly(warehouse: Warehouse, exact: ap.Truth) -> None:
    """With no DP report, DAU, WAU, MAU, D1/D7/D30, every funnel stage and every cohort
    cell equal the simulation's truth, and latency p50/p95/p99 lie in their buckets."""
    found = checks(warehouse, exact)
    assert [] == [c for c in found if not c.ok]
    assert all(c.stderr == 0 for c in found if not c.name.startswith("latency"))
    names = {c.name.split(" ")[0] for c in found}
    assert {"DAU", "WAU", "MAU", "D1", "D7", "D30", "funnel", "cohort", "latency"} <= names


def test_mixed_reports_recover_the_truth_within_stated_errors(
    warehouse: Warehouse, population: ap.Truth
) -> None:
    """With 30 % DP reports (ε = 1): DAU exact; WAU, MAU, retention counts, funnel stages
    and cohort cells within 4 stated standard errors, and those errors honest overall."""
    found = checks(warehouse, population)
    assert [] == [c for c in found if not c.ok]
    noisy = [(c.value - c.truth) / c.stderr for c in found if c.stderr > 0 and c.name[0] != "l"]
    assert len(noisy) > 100
    assert sum(z * z for z in noisy) / len(noisy) < 2  # the stated errors are not too small
    assert all(c.stderr == 0 for c in found if c.name.startswith("DAU"))
    assert 0 < population.dp_reports < population.reports


def test_dp_and_exact_reports_mix_as_the_reference_estimators_say(warehouse: Warehouse) -> None:
    """Over a mix of exact reports and reports at two ε, the warehouse's debiased WAU,
    new installs and sessions equal rkd.client.dp's estimators over the same reports."""
    rng = random.Random(7)
    day = dt.date(2025, 3, 5)
    reports = []
    for i in range(600):
        exact = CommunityReport(
            day=day, product="mixcheck", version="1.0", os="linux", arch="x86_64",
            cohort_week="2025-W10", install_age_days=0 if i % 3 == 0 else 7,
            new_install=i % 3 == 0, first_of_week=i % 2 == 0, first_of_month=i % 5 == 0,
            sessions=i % 4, commands=i % 6, errors=0,
        )  # fmt: skip
        eps = (None, 1.0, 3.0)[i % 3]
        reports.append(
            exact if eps is None else rp.privatize(exact, ap.VOCAB, dp.exact_epsilon(eps), rng)
        )
    received = dt.datetime(2025, 3, 6, tzinfo=dt.UTC)
    warehouse.insert_json("reports", [report_row(r, received) for r in reports])
    wau = cm.wau(warehouse, "mixcheck", day, day)[cm.monday(day)].estimate
    assert dp.flag_sum(reports, "first_of_week") == pytest.approx(wau)
    new = cm.new_installs(warehouse, "mixcheck", day, day)[day].estimate
    assert dp.age_count(reports, 0) == pytest.approx(new)
    sessions = cm.scalars(warehouse, "mixcheck", day, day)["sessions"].estimate
    assert dp.count_sum(reports, lambda r: r.sessions, histogram=False) == pytest.approx(sessions)
    assert wau.stderr > 0 and new.stderr > 0


def test_a_cell_of_nine_contributors_is_suppressed(warehouse: Warehouse) -> None:
    """ThinkTool bars: 9 reports using bedrock are suppressed, 10 using gigathink shown;
    a day of 9 reports shows no DAU."""
    day = dt.date(2025, 1, 7)
    received = dt.datetime(2025, 1, 8, tzinfo=dt.UTC)

    def report(tool: str) -> CommunityReport:
        return CommunityReport(day=day, product="suppress", version="1.0", os="linux",
                               arch="x86_64", cohort_week="2025-W02", install_age_days=3,
                               new_install=False, first_of_week=True, first_of_month=True,
                               sessions=1, commands=1, errors=0,
                               counts={"thinktool": {tool: 2}})  # fmt: skip

    rows = [report("bedrock") for _ in range(9)] + [report("gigathink") for _ in range(10)]
    warehouse.insert_json("reports", [report_row(r, received) for r in rows])
    doc = build_report(warehouse, "weekly", day, product="suppress")
    adoption = next(sec for sec in doc.sections if sec.id == "adoption")
    tools = next(b for b in adoption.blocks if isinstance(b, Bars) and b.title == "ThinkTool runs")
    shown = {v.label: (v.value, v.suppressed) for v in tools.items}
    assert {"gigathink": (20.0, False), "bedrock": (None, True)} == shown
    cells = cm.counts(warehouse, "suppress", day, day, "thinktool")
    assert {"bedrock": 9, "gigathink": 10} == {k: c.contributors for k, c in cells.items()}
    assert est.Cell(est.ZERO, 9).shown(10) is None


def test_pro_session_figures_are_exact(warehouse: Warehouse) -> None:
    """Sessions per day, session spans, commands per session, success rate, latency
    percentiles and install methods from raw Pro events equal the simulation's."""
    day = dt.date(2026, 11, 2)
    envelopes, truth = ap.pro_sessions(day, 40, random.Random(3))
    ap.upload(warehouse, envelopes)
    p = ap.PRODUCT
    assert {day: 40} == {
        d: c.contributors for d, c in pro.sessions_per_day(warehouse, p, day, day).items()
    }
    stats = pro.session_stats(warehouse, p, day, day)
    assert stats is not None and 40 == stats.sessions
    assert sum(truth.durations_ms) / 40 == pytest.approx(stats.duration_ms_mean)
    assert sum(truth.queries) / 40 == pytest.approx(stats.queries_mean)
    rate = pro.success_rate(warehouse, p, day, day)
    assert rate is not None and truth.ok / truth.commands == pytest.approx(rate.estimate.value)
    qs, sessions = pro.latency(warehouse, p, day, day)
    xs = sorted(truth.latencies)
    assert [xs[int(q * len(xs))] for q in pro.PERCENTILES] == qs and 40 == sessions
    methods = pro.by_subject(warehouse, p, day, day, ("install_completed",))
    assert dict(truth.methods) == {m: int(c.estimate.value) for m, c in methods.items()}


@pytest.mark.parametrize("kind", ["weekly", "monthly", "quarterly", "transparency"])
def test_every_report_builds_over_the_population(
    warehouse: Warehouse, population: ap.Truth, kind: str
) -> None:
    """Each kind builds, encodes as JSON and decodes back as a ReportDoc, nothing below
    k shown."""
    doc = build_report(warehouse, kind, population.date(population.days - 1))  # type: ignore[arg-type]
    again = msgspec.json.decode(msgspec.json.encode(doc), type=ReportDoc)
    assert again == doc and doc.sections
    for section in doc.sections:
        for block in section.blocks:
            if isinstance(block, Numbers | Bars):
                assert all(v.value is None for v in block.items if v.suppressed)


def test_the_transparency_report_publishes_noisy_counts_and_no_individual_data(
    warehouse: Warehouse, population: ap.Truth
) -> None:
    """Monthly MAU is released with central discrete Laplace noise (OpenDP), near the
    debiased value within its stated noise; deletion requests come from the erasures table."""
    end = population.date(population.days - 1)
    warehouse.insert_json("erasures", [{"day": end.isoformat(), "requests": 3, "sessions": 5,
                                        "events_deleted": 40}])  # fmt: skip
    doc = build_report(warehouse, "transparency", end)
    ops = next(b for sec in doc.sections for b in sec.blocks if isinstance(b, Numbers))
    values = {v.label: v.value for v in ops.items}
    assert 3.0 == values["Deletion requests fulfilled"]
    assert 0.0 == values["Security incidents (0: none recorded)"]
    table = next(b for sec in doc.sections if sec.id == "usage" for b in sec.blocks)
    assert isinstance(table, Table)
    debiased = cm.mau(warehouse, ap.PRODUCT, ap.START, end)
    assert [m.isoformat()[:7] for m in sorted(debiased)] == [r[0] for r in table.rows]
    shown = 0
    for row, (_, cell) in zip(table.rows, sorted(debiased.items()), strict=True):
        value, err = row[1], row[2]
        if value is None:  # suppressed: the noisy count fell under k (seen once in six runs)
            continue
        shown += 1
        assert isinstance(value, int) and isinstance(err, float)
        assert abs(value - cell.estimate.value) < 5 * err  # local DP and central noise both
    assert shown >= len(table.rows) - 1
    noisy = publish.publish({"a": 1000.0}, sensitivity=12, epsilon=0.5)["a"]
    assert abs(noisy.value - 1000) < 8 * noisy.noise_stderr
    assert noisy.noise_stderr == pytest.approx(publish.noise_stderr(12, 0.5))
    zeros = publish.publish({str(i): 0.0 for i in range(400)}, 1, 1.0)
    spread = [v.value for v in zeros.values()]
    assert len(set(spread)) > 3 and abs(sum(spread) / len(spread)) < 0.5  # noise, centred


def test_pro_adoption_figures_from_raw_events(warehouse: Warehouse) -> None:
    """Discovery sources, stickiness (5 uses after a first use) and mean ThinkTool
    confidence, each from uploaded Pro events, per session."""
    day = dt.date(2026, 11, 9)
    src = msgspec.structs.replace(ap.SOURCE, tier="pro")
    at = dt.datetime.combine(day, dt.time(10), dt.UTC)
    envelopes = []
    for i in range(12):
        session = s.Session(id=uuid.uuid4(), sequence=0, started_at=at)
        payloads: list[s.Payload] = [
            s.FeatureFirstUse(
                feature_id="command.think", discovery_source=("help", "error")[i % 2]
            ),
            s.ThinkToolCompleted(tool_name="gigathink", confidence_score=(0.8, 0.6)[i % 2]),
        ]
        if i < 3:
            payloads.append(s.FeatureAdoption(feature_id="command.think", feature_event="milestone",
                                              milestone_count=5))  # fmt: skip
        envelopes += [ap.envelope(p, timestamp=at, source=src, session=session) for p in payloads]
    ap.upload(warehouse, envelopes)
    p = ap.PRODUCT
    sources = pro.discovery_sources(warehouse, p, day, day)
    assert {"help": 6, "error": 6} == {k: c.contributors for k, c in sources.items()}
    assert {"command.think": 0.25} == {
        k: c.estimate.value for k, c in pro.stickiness(warehouse, p, day, day).items()
    }
    conf = pro.confidence(warehouse, p, day, day)["gigathink"]
    assert 0.7 == pytest.approx(conf.estimate.value) and 12 == conf.contributors


def test_exact_only_counts_the_exact_reports_alone(
    warehouse: Warehouse, population: ap.Truth
) -> None:
    """``exact_only`` (used where DP noise swamps a figure) gives the figure of the installs
    that left DP off, exactly: DAU and WAU here."""
    exact = [i for i in population.installs if not i.dp]
    end = population.date(population.days - 1)
    dau = cm.dau(warehouse, population.product, ap.START, end, exact_only=True)
    assert {
        population.date(d): sum(d in i.days for i in exact) for d in range(population.days)
    } == {d: c.estimate.value for d, c in dau.items()}
    wau = cm.wau(warehouse, population.product, ap.START, end, exact_only=True)
    for w, c in wau.items():
        lo = (w - ap.START).days
        assert (sum(any(lo <= d < lo + 7 for d in i.days) for i in exact), 0.0) == c.estimate
