"""Daily aggregates over a year old become monthly rows, and reports do not change."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import apsw
from rkd.cli import metrics as m
from rkd.client import schema as s
from rkd.client.clock import DAY_MS, now_ms
from rkd.daemon import aggregates as agg
from rkd.daemon.rollup import ROLLUP_AFTER_DAYS, month_bounds, rollup_all, rollup_step
from rkd.daemon.storage import Record, SessionRow, Storage

from tests.conftest import Daemon, Sandbox
from tests.samples import envelope

DAY = DAY_MS
EPOCH = dt.date(1970, 1, 1)


def days(d: dt.date) -> int:
    return (d - EPOCH).days


def test_month_bounds() -> None:
    assert (days(dt.date(2024, 2, 1)), days(dt.date(2024, 3, 1))) == month_bounds(
        days(dt.date(2024, 2, 29))
    )
    assert (days(dt.date(2025, 12, 1)), days(dt.date(2026, 1, 1))) == month_bounds(
        days(dt.date(2025, 12, 31))
    )
    assert (days(dt.date(2026, 1, 1)), days(dt.date(2026, 2, 1))) == month_bounds(
        days(dt.date(2026, 1, 1))
    )


def history(today: int, n_days: int = 1000) -> list[Record]:
    """A command every day for ``n_days``, sessions changing weekly, varied latencies."""
    rng = random.Random(3)
    sessions = [SessionRow(rowid=None, uuid=f"s{i}", started_ms=0, last_ms=0, events=0)
                for i in range(n_days // 7 + 1)]  # fmt: skip
    out = []
    for i in range(n_days):
        ts = (today - i) * DAY + 3600_000
        p = s.CommandExecuted(
            command=rng.choice(["think", "compare"]), profile=rng.choice(["quick", "deep"]),
            execution=s.Execution(duration_ms=rng.randrange(1, 9000), success=rng.random() < 0.9),
            tokens=s.Tokens(input=rng.randrange(100), output=7, model="gpt-4o-mini"),
        )  # fmt: skip
        out.append(Record(envelope(p), sessions[i // 7], i, ts))
        out.append(
            Record(envelope(s.ThinkToolCompleted(tool_name="gigathink")), sessions[i // 7], i, ts)
        )
    return out


def report(path: Path, today: int, n_days: int) -> dict[str, Any]:
    r = m.report(m.read_sums(path, today - n_days + 1), n_days, today, m.DEFAULT_PRICES, path)
    return {k: v for k, v in r.items() if k not in ("period", "database")}


def rows(db: apsw.Connection, table: str, where: str = "1") -> int:
    return int(db.execute(f"SELECT count(*) FROM {table} WHERE {where}").get)  # type: ignore[arg-type]


def test_rollup_keeps_every_figure_of_a_whole_history(tmp_path: Path) -> None:
    today = now_ms() // DAY
    path = tmp_path / "t.db"
    st = Storage(path)
    recs = history(today)
    for i in range(0, len(recs), 100):
        st.write(recs[i : i + 100], {}, now_ms())
    before = report(path, today, 1100)
    last_year = report(path, today, ROLLUP_AFTER_DAYS)
    due, _ = month_bounds(today - ROLLUP_AFTER_DAYS)
    old_rows = rows(st.db, "agg_daily", f"day < {due}")

    merged = rollup_all(st.db, today)
    assert 20 <= merged <= 23  # the whole months from ~1000 days ago up to a year ago
    assert before == report(path, today, 1100)  # counts, sums, percentiles, sessions
    assert last_year == report(path, today, ROLLUP_AFTER_DAYS)  # the recent year untouched
    assert rows(st.db, "agg_daily", f"day < {due}") <= old_rows / 20  # a row a month, not a day
    not_first = "strftime('%d', day * 86400, 'unixepoch') != '01'"
    for table in agg.TABLES:
        assert 0 == rows(st.db, table, f"day < {due} AND {not_first}"), table
        assert rows(st.db, table, f"day >= {due} AND {not_first}") > 0, table
    assert 0 == rollup_all(st.db, today)  # nothing left: merged months are not touched again
    assert not rollup_step(st.db, today)
    st.close()


def test_new_events_of_an_old_month_merge_into_it(tmp_path: Path) -> None:
    """Rows that land later in a merged month (a late spool file) are merged on the next step."""
    today = now_ms() // DAY
    st = Storage(path := tmp_path / "t.db")
    st.write(history(today, 500), {}, now_ms())
    rollup_all(st.db, today)
    old_day = today - 450
    sess = SessionRow(rowid=None, uuid="late", started_ms=0, last_ms=0, events=0)
    p = s.CommandExecuted(command="late", execution=s.Execution(duration_ms=5))
    st.write([Record(envelope(p), sess, 1, old_day * DAY)], {}, now_ms())
    first, _ = month_bounds(old_day)
    if old_day != first:
        assert rollup_step(st.db, today)
    assert [(first, 1)] == st.db.execute(
        "SELECT day, n FROM agg_daily WHERE dim = 'command' AND key = 'late'"
    ).fetchall()
    st.close()
    assert 1 == report(path, today, 600)["commands"]["late"]["count"]


def test_rkd_prune_merges_old_months_with_the_daemon_and_without(sandbox: Sandbox) -> None:
    today = now_ms() // DAY
    st = Storage(sandbox.settings.db_path)
    st.write(history(today, 450), {}, now_ms())
    st.close()
    due, _ = month_bounds(today - ROLLUP_AFTER_DAYS)
    old = f"SELECT count(*) FROM agg_daily WHERE day < {due} AND strftime('%d', day * 86400, 'unixepoch') != '01'"
    assert sandbox.query(old)[0][0] > 0
    d = Daemon(sandbox)
    try:
        proc = sandbox.rkd("prune")
        assert 0 == proc.returncode, proc.stderr
    finally:
        d.stop()
    assert 0 == sandbox.query(old)[0][0]
    metrics = json.loads(sandbox.rkd("metrics", "--json", "--days", "3650").stdout)
    assert 450 == metrics["queries"]
