"""Community reports built from real local databases (the daemon's own storage code)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import apsw
import msgspec
import pytest
from rkd.client import dp
from rkd.client import schema as s
from rkd.client.clock import DAY_MS, now_ms
from rkd.client.config import PrivacyConfig
from rkd.client.report import LATENCY_BUCKETS_MS, CommunityReport, decode_report
from rkd.client.upload import OTHER
from rkd.client.vocabulary import reasonkit_vocabulary
from rkd.daemon import reports as rp
from rkd.daemon.storage import Record, SessionRow, Storage

from tests.samples import SOURCE, envelope

EXACT = PrivacyConfig()
DP1 = PrivacyConfig(differential_privacy=True, dp_epsilon=1.0)
MONDAY = dt.date(2026, 3, 2)  # an ISO week's first day, and not the first of its month
VOCAB = reasonkit_vocabulary()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = Storage(tmp_path / "t.db")
    rp.ensure_report_tables(st.db)
    yield st
    st.close()


def ms(day: dt.date, hour: int = 12) -> int:
    return rp.day_number(day) * DAY_MS + hour * 3_600_000


def store(st: Storage, day: dt.date, payloads: list[s.Payload], session: str = "s1",
          source: s.Source = SOURCE) -> None:  # fmt: skip
    """Write ``payloads`` as events of ``day`` (one session), through the daemon's writer."""
    sess = SessionRow(rowid=None, uuid=f"{session}-{day}", started_ms=0, last_ms=0, events=0)
    recs = [
        Record(envelope(p, source=source), sess, i, ms(day) + i) for i, p in enumerate(payloads)
    ]
    st.write(recs, {}, now_ms())


def run(
    st: Storage, day: dt.date, privacy: PrivacyConfig = EXACT, seed: int = 1
) -> rp.Built | None:
    """Build ``day``'s report like the sync worker does, and record it."""
    state = rp.load_state(st.db, VOCAB.product)
    built = rp.build_report(st.db, state, day, VOCAB, privacy, random.Random(seed))
    if built is not None:
        rp.record_built(st.db, built, rp.send_time(day, random.Random(seed)), now_ms())
    return built


def think(command: str = "think", ms: int = 120, **kw: object) -> s.CommandExecuted:
    return s.CommandExecuted(command=command, execution=s.Execution(duration_ms=ms), **kw)  # type: ignore[arg-type]


def test_a_day_with_activity_gives_its_exact_figures(storage: Storage) -> None:
    """Counts, latency buckets, funnels, coarse version and flags of a first day."""
    store(storage, MONDAY, [
        s.SessionStarted(),
        think(ms=40, profile="deep", tokens=s.Tokens(model="gpt-4o")),
        think(ms=3000, profile="balanced"),
        s.CommandFailed(command="compare", error_category="timeout",
                        execution=s.Execution(duration_ms=70_000, success=False)),
        s.ThinkToolCompleted(tool_name="gigathink"),
        s.ErrorOccurred(error_category="api_error"),
        s.FeatureFirstUse(feature_id="command.think"),
        s.UpgradePromptShown(prompt_id="pro_upgrade_v1"),
    ])  # fmt: skip
    built = run(storage, MONDAY)
    assert built is not None
    latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    latency[0], latency[6], latency[-1] = 1, 1, 1
    expected = CommunityReport(
        day=MONDAY, product="reasonkit-core", version="1.0", os="linux", arch="x86_64",
        cohort_week="2026-W10", install_age_days=0, new_install=True, first_of_week=True,
        first_of_month=True, sessions=1, commands=3, errors=1,
        funnel={"first_run": 4, "activation": 1, "upgrade": 1},
        counts={"command": {"compare": 1, "think": 2}, "profile": {"balanced": 1, "deep": 1},
                "model": {"gpt-4o": 1}, "thinktool": {"gigathink": 1},
                "error_category": {"api_error": 1}, "feature": {"command.think": 1}},
        latency_ms=latency,
    )  # fmt: skip
    assert expected == built.report
    assert expected == decode_report(msgspec.msgpack.encode(built.report))
    assert 0.0 == built.epsilon


def test_undeclared_values_become_other(storage: Storage) -> None:
    """Commands, tools, features, models, platform and versions nobody declared: __other__."""
    odd = s.Source(product="reasonkit-core", version="v2.5.1", os="plan9",
                   arch="riscv64", python_version="3.11.7")  # fmt: skip
    store(storage, MONDAY, [
        think("my-private-script", tokens=s.Tokens(model="acme-internal-7b")),
        think("think"),
        s.ThinkToolCompleted(tool_name="homegrown"),
        s.FeatureAdoption(feature_id="secret.feature", feature_event="milestone"),
    ], source=odd)  # fmt: skip
    built = run(storage, MONDAY)
    assert built is not None
    r = built.report
    assert (OTHER, OTHER, OTHER) == (r.version, r.os, r.arch)
    assert {"command": {OTHER: 1, "think": 1}, "model": {OTHER: 1}, "thinktool": {OTHER: 1},
            "feature": {OTHER: 1}} == r.counts  # fmt: skip


def test_only_the_vocabularys_product_is_reported(storage: Storage) -> None:
    """Another product's events in the same database are neither counted nor activity."""
    other = s.Source(product="someone-else", version="1.0.0", os="linux", arch="x86_64",
                     python_version="3.11.7")  # fmt: skip
    store(storage, MONDAY, [think(), think()], source=other)
    assert run(storage, MONDAY) is None
    store(storage, MONDAY, [think()], session="s2")
    built = run(storage, MONDAY)
    assert built is not None and 1 == built.report.commands


def test_no_report_for_an_inactive_day(storage: Storage) -> None:
    """No events, or only the daemon's own bookkeeping, is no activity: no report."""
    assert run(storage, MONDAY) is None
    store(storage, MONDAY, [s.SessionEnded(), s.FeatureFirstUse(feature_id="command.think")])
    assert run(storage, MONDAY) is None
    assert [] == rp.due_days(storage.db, VOCAB.product, MONDAY, MONDAY + dt.timedelta(days=3))


def test_week_and_month_flags_once_each(storage: Storage) -> None:
    """first_of_week once per ISO week, first_of_month once per month, install age grows."""
    active = [MONDAY + dt.timedelta(days=d) for d in (0, 2, 6, 7, 8, 20, 27, 28, 29)]
    for day in active:
        store(storage, day, [think()])
    assert active == rp.due_days(storage.db, VOCAB.product, MONDAY, dt.date(2026, 5, 1))
    got = []
    for day in active:
        built = run(storage, day)
        assert built is not None
        r = built.report
        got.append((r.day.isoformat(), r.first_of_week, r.first_of_month, r.install_age_days,
                    r.new_install, r.cohort_week))  # fmt: skip
    assert [
        ("2026-03-02", True, True, 0, True, "2026-W10"),
        ("2026-03-04", False, False, 2, False, "2026-W10"),
        ("2026-03-08", False, False, 6, False, "2026-W10"),
        ("2026-03-09", True, False, 7, False, "2026-W10"),
        ("2026-03-10", False, False, 8, False, "2026-W10"),
        ("2026-03-22", True, False, 20, False, "2026-W10"),
        ("2026-03-29", True, False, 27, False, "2026-W10"),
        ("2026-03-30", True, False, 28, False, "2026-W10"),
        ("2026-03-31", False, False, 29, False, "2026-W10"),
    ] == got
    assert [] == rp.due_days(storage.db, VOCAB.product, MONDAY, dt.date(2026, 5, 1))
    store(storage, dt.date(2026, 4, 1), [think()])  # a Wednesday: a new month, same week
    built = run(storage, dt.date(2026, 4, 1))
    assert built is not None
    assert (False, True, 30) == (
        built.report.first_of_week,
        built.report.first_of_month,
        built.report.install_age_days,
    )


def test_funnels_progress_in_order_over_days(storage: Storage) -> None:
    """Stages reached on earlier days count later; a stage counts once those before it did."""
    days = [MONDAY + dt.timedelta(days=d) for d in (0, 1, 2, 9)]
    store(storage, days[0], [think(profile="deep"), s.UpgradeLinkClicked(prompt_id="x")])
    store(storage, days[1], [s.CommandCancelled(command="think")])
    store(storage, days[2], [s.UpgradePromptShown(prompt_id="x")])
    store(storage, days[3], [s.ThinkToolCompleted(tool_name="gigathink")])
    got = []
    for day in days:
        built = run(storage, day)
        assert built is not None
        got.append(built.report.funnel)
    assert [
        {"first_run": 1, "activation": 1, "upgrade": 0},  # no session_started stored yet
        {"first_run": 1, "activation": 3, "upgrade": 0},  # a second day; "deep" on the first
        {"first_run": 1, "activation": 3, "upgrade": 2},  # the click before the prompt
        {"first_run": 1, "activation": 4, "upgrade": 2},  # a week after the first day
    ] == got
    store(storage, days[3] + dt.timedelta(days=1), [s.SessionStarted(), think()])
    built = run(storage, days[3] + dt.timedelta(days=1))
    assert built is not None
    assert {"first_run": 4, "activation": 4, "upgrade": 2} == built.report.funnel


def test_the_first_report_counts_funnel_stages_from_before_it(storage: Storage) -> None:
    """History stored before the first report (consent came later) moves the funnels."""
    early = MONDAY - dt.timedelta(days=20)
    store(storage, early, [s.SessionStarted(), think(profile="quick"),
                           s.UpgradePromptShown(prompt_id="x")])  # fmt: skip
    store(storage, MONDAY, [s.CommandCancelled(command="think")])
    built = run(storage, MONDAY)
    assert built is not None
    assert {"first_run": 4, "activation": 4, "upgrade": 1} == built.report.funnel
    assert (20, "2026-W07") == (built.report.install_age_days, built.report.cohort_week)


def test_the_builder_only_reads(storage: Storage, tmp_path: Path) -> None:
    """build_report works on a read-only connection (the sync worker may use one)."""
    store(storage, MONDAY, [think()])
    ro = apsw.Connection(str(tmp_path / "t.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        built = rp.build_report(ro, rp.load_state(ro, VOCAB.product), MONDAY, VOCAB, DP1)
    finally:
        ro.close()
    assert built is not None and 1.0 == built.epsilon


def test_first_day_survives_pruning(storage: Storage) -> None:
    """Once recorded, the install's first day stays, even when its events are gone."""
    store(storage, MONDAY, [think()])
    run(storage, MONDAY)
    storage.db.execute("DELETE FROM events")
    later = MONDAY + dt.timedelta(days=40)
    store(storage, later, [think()])
    built = run(storage, later)
    assert built is not None
    assert ("2026-W10", 31, False) == (
        built.report.cohort_week,
        built.report.install_age_days,
        built.report.new_install,
    )


def test_dp_reports_differ_and_the_ledger_records_epsilon(storage: Storage) -> None:
    """Under DP the report is randomized (all declared keys present, model dropped), says
    how, and ε is charged per day, ISO week and month."""
    for day in (MONDAY, MONDAY + dt.timedelta(days=1), MONDAY + dt.timedelta(days=7)):
        store(storage, day, [think(tokens=s.Tokens(model="gpt-4o")), think(profile="deep")])
    exact = rp.build_report(storage.db, rp.load_state(storage.db, VOCAB.product), MONDAY,
                            VOCAB, EXACT)  # fmt: skip
    assert exact is not None
    noisy = [run(storage, d, DP1, seed=i) for i, d in
             enumerate((MONDAY, MONDAY + dt.timedelta(days=1), MONDAY + dt.timedelta(days=7)))]  # fmt: skip
    first = noisy[0]
    assert first is not None
    r = first.report
    assert r != exact.report
    assert dp.Fraction(1) == dp.exact_epsilon(r.privacy.epsilon)  # type: ignore[union-attr]
    assert (1.0, dp.COUNT_BOUND) == (r.privacy.epsilon, r.privacy.count_bound)  # type: ignore[union-attr]
    assert set(dp.DP_DIMENSIONS) == set(r.counts)
    assert sorted([*VOCAB.values["command"], OTHER]) == sorted(r.counts["command"])
    assert r.install_age_days in dp.AGE_DOMAIN
    assert r.new_install == (r.install_age_days == 0)
    assert set(dp.FUNNELS) == set(r.funnel)
    assert r == decode_report(msgspec.msgpack.encode(r))
    assert (True, True) == (first.first_of_week, first.first_of_month)  # the exact flags kept
    assert [("2026-03-02", 1.0, 1), ("2026-03-03", 1.0, 1), ("2026-03-09", 1.0, 1)] == rp.budget(
        storage.db, VOCAB.product, "day"
    )
    assert [("2026-W10", 2.0, 2), ("2026-W11", 1.0, 1)] == rp.budget(
        storage.db, VOCAB.product, "week"
    )
    assert [("2026-03", 3.0, 3)] == rp.budget(storage.db, VOCAB.product, "month")


def test_dp_reports_are_drawn_once_and_resent_as_stored(storage: Storage) -> None:
    """The stored body is what is sent: pending until its time, gone once sent."""
    store(storage, MONDAY, [think()])
    built = run(storage, MONDAY, DP1)
    assert built is not None
    at = rp.send_time(MONDAY, random.Random(1))
    assert [] == rp.pending(storage.db, at - 1)
    [(product, day, body)] = rp.pending(storage.db, at)
    assert ("reasonkit-core", MONDAY, built.report) == (product, day, decode_report(body))
    rp.record_sent(storage.db, product, day, at + 5)
    assert [] == rp.pending(storage.db, at + 10)
    with pytest.raises(apsw.ConstraintError):  # one report per day, ever: no second draw
        rp.record_built(storage.db, built, at, now_ms())


def test_pruning_keeps_unsent_reports_and_the_current_week_and_month(storage: Storage) -> None:
    """Sent reports past retention go (body and ledger row); the flags stay exact after."""
    days = [MONDAY + dt.timedelta(days=d) for d in (0, 7, 14, 23, 30)]  # Mar 2 ... 25, Apr 1
    for day in days:
        store(storage, day, [think()])
        run(storage, day)
    for day in days[1:]:
        rp.record_sent(storage.db, VOCAB.product, day, now_ms())
    # Cutoff Thursday Apr 2: its week began Mon Mar 30, its month Apr 1, so Mar 9, 16
    # and 25 go; the unsent Mar 2 stays.
    assert 3 == rp.prune_reports(storage.db, dt.date(2026, 4, 2))
    assert [("2026-03-02", 0.0, 1), ("2026-04-01", 0.0, 1)] == rp.budget(
        storage.db, VOCAB.product, "day"
    )
    store(storage, dt.date(2026, 4, 3), [think()])
    built = run(storage, dt.date(2026, 4, 3))
    assert built is not None
    assert (False, False) == (built.report.first_of_week, built.report.first_of_month)


def test_send_time_is_uniform_within_the_following_day() -> None:
    """Every draw falls in the next UTC day, and draws spread over the whole of it."""
    rng = random.Random(7)
    start = rp.day_number(MONDAY + dt.timedelta(days=1)) * DAY_MS
    times = [rp.send_time(MONDAY, rng) - start for _ in range(2000)]
    assert all(0 <= t < DAY_MS for t in times)
    quarters = [
        sum(1 for t in times if q * DAY_MS // 4 <= t < (q + 1) * DAY_MS // 4) for q in range(4)
    ]
    assert all(400 < n < 600 for n in quarters), quarters


def test_clip_histogram_bounds_the_total() -> None:
    assert [3, 4] == rp.clip_histogram([3, 4], 10)
    assert [2, 5, 3] == rp.clip_histogram([6, 15, 9], 10)
    assert sum(rp.clip_histogram([99, 1, 1000, 7], 10)) <= 10


def test_building_days_in_a_row_read_only_equals_building_and_recording_each(
    storage: Storage, tmp_path: Path
) -> None:
    """The sync worker builds all the days due on its read-only connection, each on the
    state the ones before it leave (rp.after_recording), and the loop records them: the
    reports are those of building and recording one day at a time."""
    days = [MONDAY, MONDAY + dt.timedelta(days=2), MONDAY + dt.timedelta(days=8)]
    for i, day in enumerate(days):
        store(storage, day, [s.SessionStarted(), think(), *([think("compare")] * i)])
    reader = apsw.Connection(str(storage.path), flags=apsw.SQLITE_OPEN_READONLY)
    in_a_row = rp.build_due(reader, VOCAB, MONDAY, days[-1] + dt.timedelta(days=1), EXACT)
    reader.close()
    one_by_one = [run(storage, day) for day in days]
    assert [b.report for b in one_by_one if b] == [b.report for b in in_a_row]
    assert [(True, True), (False, False), (True, False)] == [
        (b.report.first_of_week, b.report.first_of_month) for b in in_a_row
    ]
