"""`rkd metrics`: daily aggregates kept at write time, and the report read from them.

One generated dataset with known counts, percentiles and tokens (:func:`dataset`) is
written through ``Storage.write`` (which runs the aggregation hook) or sent to a real
daemon, and every figure of ``rkd metrics --json`` is asserted exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from rkd.cli import metrics as m
from rkd.cli.main import cli
from rkd.client import schema as s
from rkd.client.clock import DAY_MS, now_ms
from rkd.daemon import aggregates as agg
from rkd.daemon.derived import feature_ids
from rkd.daemon.storage import MIGRATIONS, Record, SessionRow, Storage

from tests.conftest import KILL_VARS, Daemon, Sandbox, wait_for
from tests.samples import envelope, frame

RawPush = Callable[[list[bytes]], None]
DAY = DAY_MS
SONNET, MINI = "claude-3-5-sonnet-20241022", "gpt-4o-mini-2024-07-18"

# -- the dataset ------------------------------------------------------------------------------

NAMES = ["think"] * 12 + ["compare"] * 5 + ["explain"] * 2 + ["metrics"]  # cycle of 20
PROFILES: list[Any] = ["balanced"] * 9 + ["quick"] * 6 + ["deep"] * 3 + ["paranoid", None]
FAILED: list[Any] = ["timeout"] * 3 + ["api_error"] * 2 + ["rate_limited", "network_error", None]
TOKENS: list[Any] = (
    [s.Tokens(input=1500, output=800, cached=200, model=SONNET)] * 10
    + [s.Tokens(input=1000, output=200, model=MINI)] * 5
    + [s.Tokens(input=500, output=100, model="my-local-model")] * 2
    + [s.Tokens(input=300, output=50)]  # no model: counted as "unknown", unpriced
    + [s.Tokens()] * 2
)  # fmt: skip


def command(i: int) -> s.Payload:
    """Command i of 200: every figure below follows from these rules."""
    kind: Any = s.CommandExecuted
    category = None
    if i % 25 == 0:
        kind, category = s.CommandFailed, FAILED[i // 25]
    elif i % 50 == 7:
        kind, category = s.CommandCancelled, "cancelled"
    return kind(
        command=NAMES[i % 20], profile=PROFILES[i % 20], cache_hit=i % 4 == 1,
        execution=s.Execution(duration_ms=32 * (i + 1), success=kind is s.CommandExecuted and i not in (1, 2)),
        tokens=TOKENS[i % 20], error_category=category,
    )  # fmt: skip


def others() -> list[s.Payload]:
    tools = ["gigathink"] * 40 + ["laserlogic"] * 30 + ["bedrock"] * 20 + ["proofguard"] * 10
    errors = ["rate_limited"] * 6 + ["network_error"] * 4 + ["timeout"] * 2
    return [
        *(s.ThinkToolCompleted(tool_name=t, step_count=3, duration_ms=500) for t in tools),
        *(s.ThinkToolStarted(tool_name="gigathink") for _ in range(5)),
        *(s.ErrorOccurred(error_category=e) for e in errors),  # type: ignore[arg-type]
        *(s.HelpViewed(topic="think") for _ in range(5)),
        *(s.ProfileUsed(profile="deep") for _ in range(3)),
    ]


def dataset(now: int) -> list[tuple[s.Payload, int, int]]:
    """(payload, ts_ms, session number) in a stable shuffled order.

    In the 30-day window (today and 29 days back, UTC): 200 commands and 125 other
    events over sessions 0-2, one command exactly at the window's first millisecond.
    Outside it: one command a millisecond before the window (session 3) and one 40 days
    back (session 4), with a million sonnet tokens each, that must not be counted.
    """
    first = (now // DAY - 29) * DAY
    items = [(command(i), now - (i % 29) * DAY, i % 3) for i in range(199)]
    items.append((command(199), first, 199 % 3))
    items += [(p, now - (i % 29) * DAY, i % 3) for i, p in enumerate(others())]
    big = s.Tokens(input=1_000_000, output=1_000_000, model=SONNET)
    late = s.CommandExecuted(command="late", profile="deep", execution=s.Execution(duration_ms=99_999), tokens=big)  # fmt: skip
    items += [(late, first - 1, 3), (late, now - 40 * DAY, 4)]
    random.Random(7).shuffle(items)
    return items


def usage(count: int, whole: int) -> dict[str, Any]:
    return {"count": count, "share": round(count / whole, 6)}


EXPECTED: dict[str, Any] = {
    "sessions": 3,
    "queries": 200,
    "duration_ms": 643_200,  # 32 * (1 + ... + 200)
    "outcomes": {"executed": 188, "failed": 8, "cancelled": 4},
    "commands": {"think": usage(120, 200), "compare": usage(50, 200),
                 "explain": usage(20, 200), "metrics": usage(10, 200)},
    "profiles": {"balanced": usage(90, 200), "quick": usage(60, 200), "deep": usage(30, 200),
                 "none": usage(10, 200), "paranoid": usage(10, 200)},
    "thinktools": {"gigathink": 40, "laserlogic": 30, "bedrock": 20, "proofguard": 10},
    "performance": {
        # durations 32, 64, ..., 6400: nearest rank 100, 190 and 198 of 200
        "latency_ms": {"avg": 3216.0, "p50": 3200, "p95": 6080, "p99": 6336},
        "success_rate": 0.93,  # 188 executed, 2 of them with success = false
        "cache_hit_rate": 0.25,
    },
    "errors": {
        "total": 12,
        "by_category": {"rate_limited": usage(6, 200), "network_error": usage(4, 200),
                        "timeout": usage(2, 200)},
        "failed_commands": {"timeout": usage(3, 200), "api_error": usage(2, 200),
                            "network_error": usage(1, 200), "rate_limited": usage(1, 200),
                            "unknown": usage(1, 200)},
    },
    "tokens": {
        "input": 213_000, "output": 92_500, "cached": 20_000,
        "est_cost_usd": 1.6635,  # sonnet 150K x $3 + 80K x $15; mini 50K x $0.15 + 10K x $0.6
        "unpriced_models": ["my-local-model", "unknown"],
        "by_model": {
            SONNET: {"input": 150_000, "output": 80_000, "cached": 20_000, "cost_usd": 1.65},
            MINI: {"input": 50_000, "output": 10_000, "cached": 0, "cost_usd": 0.0135},
            "my-local-model": {"input": 10_000, "output": 2_000, "cached": 0, "cost_usd": None},
            "unknown": {"input": 3_000, "output": 500, "cached": 0, "cost_usd": None},
        },
    },
    "events": {"command_executed": 188, "thinktool_completed": 100, "error_occurred": 12,
               "command_failed": 8, "help_viewed": 5, "thinktool_started": 5,
               "command_cancelled": 4, "profile_used": 3},
}  # fmt: skip


def records(items: list[tuple[s.Payload, int, int]]) -> list[Record]:
    sessions = [SessionRow(rowid=None, uuid=f"s{n}", started_ms=0, last_ms=0, events=0)
                for n in range(5)]  # fmt: skip
    return [Record(envelope(p), sessions[n], i, ts) for i, (p, ts, n) in enumerate(items)]


def write(path: Path, items: list[tuple[s.Payload, int, int]], batch: int = 64) -> Storage:
    """Store ``items`` through Storage.write in several batches (the daemon's path)."""
    storage = Storage(path)
    recs = records(items)
    for i in range(0, len(recs), batch):
        storage.write(recs[i : i + batch], {}, now_ms())
    return storage


def invoke(sandbox: Sandbox, *args: str) -> Any:
    env = {**dict.fromkeys(KILL_VARS), **sandbox.env}
    return CliRunner().invoke(cli, ["metrics", *args], env=env)


def metrics_json(sandbox: Sandbox, *args: str) -> dict[str, Any]:
    result = invoke(sandbox, "--json", *args)
    assert 0 == result.exit_code, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def without_period(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("period", "database")}


@pytest.fixture
def stored(sandbox: Sandbox) -> Sandbox:
    """The dataset, written through Storage.write into the sandbox's database."""
    write(sandbox.settings.db_path, dataset(now_ms())).close()
    return sandbox


# -- every figure -------------------------------------------------------------------------------


def test_every_figure_of_the_json_report(stored: Sandbox) -> None:
    """--json reports exactly the dataset's counts, shares, percentiles, tokens and cost."""
    report = metrics_json(stored)
    assert EXPECTED == without_period(report)
    today = dt.datetime.now(dt.UTC).date()
    assert {"days": 30, "first_day": (today - dt.timedelta(days=29)).isoformat(),
            "last_day": today.isoformat(), "time_zone": "UTC"} == report["period"]  # fmt: skip
    assert str(stored.settings.db_path) == report["database"]
    assert ["think", "compare", "explain", "metrics"] == list(report["commands"])  # largest first


def test_window_edges(stored: Sandbox) -> None:
    """--days N is today and N-1 UTC days back: the first millisecond is in, the one before out."""
    r30 = metrics_json(stored)
    assert (200, 3, None) == (r30["queries"], r30["sessions"], r30["commands"].get("late"))
    r31 = metrics_json(stored, "--days", "31")
    assert (201, 4, 1) == (r31["queries"], r31["sessions"], r31["commands"]["late"]["count"])
    r41 = metrics_json(stored, "--days", "41")
    assert (202, 5, 2_213_000) == (r41["queries"], r41["sessions"], r41["tokens"]["input"])
    today = metrics_json(stored, "--days", "1")
    assert 7 == today["queries"]  # commands 0, 29, ..., 174 are dated today
    assert (
        1 == today["period"]["days"] and today["period"]["first_day"] == today["period"]["last_day"]
    )


def test_aggregates_survive_pruning(sandbox: Sandbox) -> None:
    """Pruning raw events leaves the aggregated figures exactly as they were."""
    storage = write(sandbox.settings.db_path, dataset(now_ms()))
    before, before_41 = metrics_json(sandbox), metrics_json(sandbox, "--days", "41")
    assert storage.prune(retention_days=1, max_db_size_mb=1000) > 300
    assert storage.count_events() < 30
    storage.close()
    assert (before, before_41) == (metrics_json(sandbox), metrics_json(sandbox, "--days", "41"))


def test_aggregates_commit_or_roll_back_with_the_events(tmp_path: Path) -> None:
    """A write that fails leaves neither events nor aggregates behind."""
    storage = Storage(tmp_path / "t.db")
    with pytest.raises(TypeError):
        storage.write(records(dataset(now_ms())), {"bad": object()}, now_ms())  # type: ignore[dict-item]
    counts = [storage.db.execute(f"SELECT count(*) FROM {t}").get for t in ("events", *agg.TABLES)]
    assert [0, 0, 0, 0] == counts
    storage.close()


def test_delete_all_clears_the_aggregates(stored: Sandbox) -> None:
    """After delete_all the report is all zeros."""
    storage = Storage(stored.settings.db_path)
    storage.delete_all()
    storage.close()
    report = metrics_json(stored)
    assert (0, 0, {}, 0) == (report["queries"], report["sessions"], report["events"],
                             report["tokens"]["input"])  # fmt: skip


def test_migration_fills_the_aggregates_of_events_already_stored(tmp_path: Path) -> None:
    """The migration's backfill from raw events gives exactly the rows the write hook keeps."""
    storage = write(tmp_path / "t.db", dataset(now_ms()), batch=50)
    db = storage.db
    tables = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in agg.TABLES}
    with db:
        for t in agg.TABLES:
            db.execute(f"DELETE FROM {t}")
        db.execute(agg._backfill_sql())
    assert tables == {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in agg.TABLES}
    storage.close()


def downgrade_to_schema_1(db: Any) -> None:
    """Take away everything the migrations after the first one added (tables, triggers,
    indexes, columns): what rkd at schema 1 left on disk, with its rows."""
    from rkd.daemon.storage import MIGRATIONS

    first = apsw.Connection(":memory:")
    first.execute(MIGRATIONS[0])
    keep = {n for (n,) in first.execute("SELECT name FROM sqlite_schema")}
    columns = {t: {c[1] for c in first.execute(f"PRAGMA table_info({t})")}
               for (t,) in first.execute("SELECT name FROM sqlite_schema WHERE type='table'")}  # fmt: skip
    with db:
        for kind in ("trigger", "index", "table"):
            for (name,) in db.execute(
                "SELECT name FROM sqlite_schema WHERE type = ? AND name NOT LIKE 'sqlite_%'",
                (kind,),
            ).fetchall():
                if name not in keep:
                    db.execute(f"DROP {kind.upper()} IF EXISTS {name}")
        for table, cols in columns.items():
            for c in db.execute(f"PRAGMA table_info({table})").fetchall():
                if c[1] not in cols:
                    db.execute(f"ALTER TABLE {table} DROP COLUMN {c[1]}")
        db.execute("PRAGMA user_version = 1")


def test_upgrade_from_schema_1_counts_existing_events(tmp_path: Path) -> None:
    """A database of schema 1 opened by this rkd gets its aggregates from its events."""
    path = tmp_path / "t.db"
    storage = write(path, dataset(now_ms()))
    downgrade_to_schema_1(storage.db)
    storage.close()
    Storage(path).close()  # migrates 1 -> 2
    today = now_ms() // DAY
    report = m.report(m.read_sums(path, today - 29), 30, today, m.DEFAULT_PRICES, path)
    assert EXPECTED == without_period(report)


# -- the real daemon, as a subprocess ------------------------------------------------------------


def test_real_daemon_then_daemon_down(sandbox: Sandbox, daemon: Daemon, raw_push: RawPush) -> None:
    """Events sent to a real daemon; `rkd metrics` as a subprocess, with the daemon up and down."""
    now = now_ms()
    items = dataset(now)
    raw_push(
        [frame(p, timestamp=dt.datetime.fromtimestamp(ts / 1000, dt.UTC)) for p, ts, _ in items]
    )
    wait_for(lambda: daemon.counter("accepted") == len(items), what="every event accepted")
    daemon.flush()
    # The daemon stamps one session for the burst, and writes its start and the feature
    # events (a first use, milestones), dated like the use that reached them: in the
    # window or not, in the order the uses arrived.
    uses: Counter[str] = Counter()
    derived = Counter({"session_started": 1})
    for p, ts, _ in items:
        for f in feature_ids(p):
            uses[f] += 1
            if ts >= (now // DAY - 29) * DAY and (uses[f] == 1 or uses[f] in (5, 10, 25, 50, 100)):
                derived["feature_first_use" if uses[f] == 1 else "feature_adoption"] += 1
    expected = {**EXPECTED, "sessions": 1, "events": {**EXPECTED["events"], **derived}}
    up = sandbox.rkd("metrics", "--json")
    assert (0, "") == (up.returncode, up.stderr)
    assert expected == without_period(json.loads(up.stdout))
    daemon.stop()
    down = sandbox.rkd("metrics", "--json")
    assert (0, up.stdout) == (down.returncode, down.stdout)
    human = sandbox.rkd("metrics")
    assert 0 == human.returncode and "Total Queries:   200" in human.stdout


# -- human output --------------------------------------------------------------------------------


def test_human_report(stored: Sandbox) -> None:
    """The spec's layout: title, underline, aligned figures, bars, at most 80 columns."""
    result = invoke(stored)
    assert 0 == result.exit_code
    lines = result.output.splitlines()
    assert ["Personal Usage Metrics (Last 30 Days)", "=" * 37, ""] == lines[:3]
    assert ["Sessions:        3", "Total Queries:   200", "Total Duration:  10m 43s"] == lines[4:7]
    assert [
        "Command Usage:",
        "  think:         120 (60.0%)  " + "█" * 18,
        "  compare:        50 (25.0%)  ███████▌",
        "  explain:        20 (10.0%)  ███",
        "  metrics:        10 (5.0%)   █▌",
    ] == lines[8:13]
    for expected in [
        "  none:          10 (5.0%)   █▌",
        "  gigathink:     40 calls  " + "█" * 12,
        "  Avg Latency:   3,216ms", "  p50 Latency:   3,200ms", "  p95 Latency:   6,080ms",
        "  p99 Latency:   6,336ms", "  Success Rate:  93.0%", "  Cache Hit:     25.0%",
        "  rate_limited:  6 (3.0%)   ▉", "  unknown:       1 (0.5%)   ▏",
        "  Input:         213K", "  Output:        92.5K", "  Cached:        20.0K",
        "  Est. Cost:     $1.66 (excludes 2 unpriced models)",
        "    claude-3-5-sonnet-20241022   150K in  80.0K out  $1.65",
        "    my-local-model              10.0K in   2.0K out  unpriced",
    ]:  # fmt: skip
        assert expected in lines
    assert max(len(ln) for ln in lines) <= 80


def test_bars_fit_80_columns_whatever_the_names_and_numbers() -> None:
    """64-character names, billions of events and many keys still fit in 80 columns."""
    counts = {"x" * 64: 3_000_000_000, **{f"cmd{i}": 10**i for i in range(12)}}
    lines = m.bar_rows(counts, sum(counts.values()))
    assert 10 == len(lines) and lines[-1].startswith("  other:")
    assert max(len(ln) for ln in lines) <= 80
    assert lines[0].startswith("  " + "x" * 23 + "…:")


def test_the_whole_report_fits_80_columns_at_the_extremes() -> None:
    """Longest names in every section, huge counts and costs: no line over 80 columns."""
    big, name = 10**15, "m" * 64
    daily = {(dim, f"{name[:-3]}-{i:02}"): big // (i + 1)
             for dim in ("command", "profile", "thinktool", "error", "failed", "tokens_input",
                         "tokens_output", "tokens_cached") for i in range(12)}  # fmt: skip
    daily |= {("event", "command_executed"): big, ("stat", "duration_ms"): big * 1000}
    prices = {name[:-3]: (99_999.0, 99_999.0)}
    sums = m.Sums(daily=daily, latency=[(2**53, big)], sessions=big)
    text = m.render(m.report(sums, 3650, 20_000, prices, Path("/x")))
    assert max(len(ln) for ln in text.splitlines()) <= 80, text


def test_empty_and_missing_database(sandbox: Sandbox) -> None:
    """No database: a friendly all-zero report, n/a for rates, and no file created."""
    report = metrics_json(sandbox)
    assert (0, 0, 0, None, None, 0.0) == (
        report["sessions"], report["queries"], report["duration_ms"],
        report["performance"]["success_rate"], report["performance"]["latency_ms"]["p50"],
        report["tokens"]["est_cost_usd"],
    )  # fmt: skip
    human = invoke(sandbox).output
    assert "  Success Rate:  n/a" in human and "No events stored for this period yet." in human
    assert not (sandbox.root / "data").exists()
    Storage(sandbox.settings.db_path).close()  # a fresh, empty database
    assert report["queries"] == metrics_json(sandbox)["queries"]


def test_old_schema_and_broken_database_are_one_line(sandbox: Sandbox) -> None:
    """A schema-1 database or a file that is not one: one line, exit 1, no traceback."""
    path = sandbox.settings.db_path
    path.parent.mkdir(parents=True)
    db = apsw.Connection(str(path))
    db.execute(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.close()
    result = invoke(sandbox)
    assert (1, f"Error: {path}: database schema 1 predates metrics; start the daemon once"
               " (rkd run) to upgrade it\n") == (result.exit_code, result.output)  # fmt: skip
    path.write_bytes(b"not a database" * 100)
    proc = sandbox.rkd("metrics")
    assert 1 == proc.returncode and proc.stderr.startswith(f"Error: {path}: cannot")
    assert "Traceback" not in proc.stderr and 1 == len(proc.stderr.splitlines())


@pytest.mark.parametrize(("args", "message"), [
    (["--days", "0"], "Invalid value for '--days': 0 is not in the range 1<=x<=3650."),
    (["--days", "abc"], "Invalid value for '--days': 'abc' is not a valid integer range."),
    (["--days", "3651"], "Invalid value for '--days': 3651 is not in the range 1<=x<=3650."),
    (["--bogus"], "No such option '--bogus'."),
])  # fmt: skip
def test_mistakes_are_one_clear_line(sandbox: Sandbox, args: list[str], message: str) -> None:
    """Bad arguments: a usage error (exit 2) naming the option, never a traceback."""
    result = invoke(sandbox, *args)
    assert 2 == result.exit_code
    assert f"Error: {message}" == result.output.splitlines()[-1]
    assert "Traceback" not in result.output


def test_help_has_an_example() -> None:
    """`rkd metrics --help` explains the window and shows an example."""
    result = CliRunner().invoke(cli, ["metrics", "--help"])
    assert 0 == result.exit_code
    assert "Example:" in result.output and "UTC" in result.output and "rkd flush" in result.output


# -- prices --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "price"), [
    ("claude-3-5-sonnet-20241022", (3.0, 15.0)),
    ("claude-3-5-sonnet@20240620", (3.0, 15.0)),
    ("claude-3-5-haiku-20241022", (0.8, 4.0)),
    ("claude-3-haiku-20240307", (0.25, 1.25)),
    ("claude-3-opus-20240229", (15.0, 75.0)),
    ("gpt-4o-2024-08-06", (2.5, 10.0)),
    ("gpt-4o-2024-05-13", (5.0, 15.0)),
    ("gpt-4o-mini-2024-07-18", (0.15, 0.6)),
    ("gpt-4", (30.0, 60.0)),
    ("o1-mini-2024-09-12", (1.1, 4.4)),
    ("o1-2024-12-17", (15.0, 60.0)),
    ("gpt-4oo", None),
    ("o10", None),
    ("my-local-model", None),
])  # fmt: skip
def test_price_matching(model: str, price: tuple[float, float] | None) -> None:
    """The longest key that equals the model id or is followed in it by - @ or : wins."""
    assert price == m.price_for(model, m.DEFAULT_PRICES)


def test_config_prices_override_and_add(sandbox: Sandbox) -> None:
    """[telemetry.prices] entries replace shipped prices and price unknown models."""
    sandbox.write_config("""
        [telemetry.prices]
        "claude-3-5-sonnet" = { input = 6.0, output = 30.0 }
        "my-local-model" = { input = 0.0, output = 0.0 }
    """)
    prices = m.price_table(sandbox.settings)
    assert ((6.0, 30.0), (0.0, 0.0)) == (prices["claude-3-5-sonnet"], prices["my-local-model"])
    sums = m.read_sums(Path("/nonexistent/db"), 0)
    sums.daily = {("tokens_input", SONNET): 150_000, ("tokens_output", SONNET): 80_000,
                  ("tokens_input", "my-local-model"): 10}  # fmt: skip
    t = m.tokens(sums, prices)
    assert (3.3, []) == (t["est_cost_usd"], t["unpriced_models"])


@pytest.mark.parametrize(("text", "message"), [
    ('"gpt-4o" = { input = "cheap", output = 1 }', "telemetry.prices.<entry>.input: expected `float`, got `str`"),
    ('"gpt-4o" = { input = 1e9, output = 1 }', "telemetry.prices.<entry>.input: expected `float` <= 100000.0"),
    ('"my secret key" = { input = 1, output = 1 }', "telemetry.prices: a key is not a model id"),
])  # fmt: skip
def test_bad_prices_are_one_line(sandbox: Sandbox, text: str, message: str) -> None:
    """A bad price names the file, line and key, never the value; `rkd metrics` warns
    and reports with the shipped prices (issue 10: a broken config blocks no report)."""
    path = sandbox.write_config(f"[telemetry.prices]\n{text}\n")
    proc = sandbox.rkd("metrics")
    assert 0 == proc.returncode
    assert proc.stderr.startswith(f"Warning: {path}, line ")
    assert message in proc.stderr
    assert (
        "secret" not in proc.stderr
        and "cheap" not in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_config_prices_through_the_command(stored: Sandbox) -> None:
    """`rkd metrics` prices with config.toml's table."""
    stored.write_config('[telemetry.prices]\n"my-local-model" = { input = 100.0, output = 0.0 }\n')
    t = metrics_json(stored)["tokens"]
    assert (2.6635, ["unknown"]) == (t["est_cost_usd"], t["unpriced_models"])


# -- building blocks -----------------------------------------------------------------------------


def test_latency_buckets_exact_below_2048_then_within_a_thousandth() -> None:
    """Exact below 2,048 ms; above, never high and low by less than 2**-10 of the value."""
    assert list(range(2048)) == [agg.latency_bucket(v) for v in range(2048)]
    assert (2048, 2048, 3000, 10_000, 10_000) == tuple(
        agg.latency_bucket(v) for v in (2048, 2049, 3000, 10_000, 10_007)
    )
    rng = random.Random(3)
    for v in [rng.randrange(2048, 2**53) for _ in range(20_000)] + [2**53]:
        b = agg.latency_bucket(v)
        assert b <= v and (v - b) / v < 2**-10


def test_bucket_sql_matches_python() -> None:
    """The migration's SQL rounds durations exactly as the write hook does."""
    rng = random.Random(4)
    values = [0, 1, 2047, 2048, 2049, 4095, 4096, 2**53, *(rng.randrange(2**rng.randrange(1, 54)) for _ in range(5000))]  # fmt: skip
    db = apsw.Connection(":memory:")
    db.execute("CREATE TABLE v(d INTEGER)")
    db.executemany("INSERT INTO v VALUES (?)", [(v,) for v in values])
    got = [r[0] for r in db.execute(f"SELECT {agg._bucket_sql('d')} FROM v ORDER BY rowid")]
    assert [agg.latency_bucket(v) for v in values] == got


def test_percentile_is_nearest_rank() -> None:
    """The smallest value with at least ceil(q% of N) values at or below it."""
    hist = [(10, 1), (20, 2), (30, 96), (40, 1)]
    assert (30, 30, 30, 40) == tuple(m.percentile(hist, q) for q in (50, 95, 99, 100))
    assert (10, None) == (m.percentile([(10, 1)], 99), m.percentile([], 50))


@pytest.mark.parametrize(("fn", "value", "text"), [
    (m.fmt_count, 0, "0"), (m.fmt_count, 1234, "1,234"), (m.fmt_count, 1_234_567, "1,234,567"),
    (m.fmt_compact, 950, "950"), (m.fmt_compact, 12_345, "12.3K"), (m.fmt_compact, 99_949, "99.9K"),
    (m.fmt_compact, 99_950, "100K"), (m.fmt_compact, 600_000, "600K"),
    (m.fmt_compact, 999_499, "999K"), (m.fmt_compact, 999_500, "1.0M"),
    (m.fmt_compact, 1_234_567, "1.2M"), (m.fmt_compact, 2_500_000_000, "2.5B"),
    (m.fmt_duration, 0, "0ms"), (m.fmt_duration, 850, "850ms"), (m.fmt_duration, 42_000, "42s"),
    (m.fmt_duration, 725_000, "12m 5s"), (m.fmt_duration, 15_780_000, "4h 23m"),
    (m.fmt_duration, 183_600_000, "2d 3h"),
    (m.fmt_percent, 0.982, "98.2%"), (m.fmt_percent, 1.0, "100.0%"), (m.fmt_percent, None, "n/a"),
    (m.fmt_ms, 1234.4, "1,234ms"), (m.fmt_ms, None, "n/a"),
    (m.fmt_cost, 4.5, "$4.50"), (m.fmt_cost, 0.0, "$0.00"), (m.fmt_cost, 0.004, "<$0.01"),
    (m.fmt_cost, 1234.567, "$1,234.57"), (m.fmt_cost, 999_999.994, "$999,999.99"),
    (m.fmt_cost, 1_234_567.0, "$1.2M"),
])  # fmt: skip
def test_human_numbers(fn: Callable[[Any], str], value: Any, text: str) -> None:
    """Numbers as the spec shows them: 1,234 · 1.2M · 4h 23m · 98.2% · $4.50."""
    assert text == fn(value)


def test_bar_uses_eighths_and_never_overflows() -> None:
    """Bars are proportional in eighths of a column; a tiny share still shows."""
    assert ("█" * 10, "█████", "▏", "", "█" * 4 + "▌") == (
        m.bar(1.0, 10),
        m.bar(0.5, 10),
        m.bar(0.0001, 10),
        m.bar(0.0, 10),
        m.bar(0.45, 10),
    )
    assert 10 == len(m.bar(7.0, 10))
