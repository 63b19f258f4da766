"""Sessions and the events the daemon derives: session_started/ended, feature adoption.

Unit tests drive the stamper with a fake monotonic clock and move the wall clock with
monkeypatch; end-to-end tests run the real daemon and read the real database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import apsw
import pytest
from rkd.client import schema as s
from rkd.client.clock import now_ms
from rkd.daemon import sessions as sessions_mod
from rkd.daemon.derived import MAX_FEATURES, FeatureCounter, feature_ids
from rkd.daemon.sessions import IDLE_SECS, MAX_AGE_SECS, SessionStamper
from rkd.daemon.storage import SessionRow, Storage

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import frame

HOUR_MS = 3_600_000
RawPush = Callable[[list[bytes]], None]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def row(started_ago_ms: int, last_ago_ms: int, **over: Any) -> SessionRow:
    fields: dict[str, Any] = dict(rowid=1, uuid="a", started_ms=now_ms() - started_ago_ms,
                                  last_ms=now_ms() - last_ago_ms, events=3)  # fmt: skip
    fields.update(over)
    return SessionRow(**fields)


# -- the stamper -------------------------------------------------------------------------


def test_first_session_reserves_sequence_one_for_its_start() -> None:
    clock = Clock()
    st = SessionStamper(None, clock=clock)
    a, seq = st.stamp(now_ms())
    assert 2 == seq
    ended, opened = st.take()
    assert ([], [(a, "first")]) == (ended, opened)
    assert (a, 3) == st.stamp(now_ms())
    assert ([], []) == st.take()


def test_without_markers_sequences_start_at_one_and_nothing_is_opened() -> None:
    st = SessionStamper(None, clock=Clock(), markers=False)
    assert 1 == st.stamp(now_ms())[1]
    assert ([], []) == st.take()


def test_idle_ends_a_session_with_its_monotonic_duration() -> None:
    clock = Clock()
    st = SessionStamper(None, clock=clock)
    a, _ = st.stamp(now_ms())
    clock.t += 600  # ten minutes of activity
    st.stamp(now_ms())
    st.take()
    clock.t += IDLE_SECS + 1
    b, seq = st.stamp(now_ms())
    ended, opened = st.take()
    assert b.uuid != a.uuid and 2 == seq
    assert [(a, "idle", 600_000)] == ended
    assert [(b, "idle")] == opened
    assert a.ended_ms == a.last_ms


def test_busy_all_day_still_rotates_daily() -> None:
    clock = Clock()
    st = SessionStamper(None, clock=clock)
    a, _ = st.stamp(now_ms())
    for _ in range(int(MAX_AGE_SECS // (IDLE_SECS - 1)) + 1):  # never idle
        clock.t += IDLE_SECS - 1
        c, _ = st.stamp(now_ms())
    ended, opened = st.take()
    assert c.uuid != a.uuid
    assert [("daily", "daily")] == [
        (e.reason, o.reason) for e, o in zip(ended, opened[1:], strict=True)
    ]
    assert ended[0].duration_ms < MAX_AGE_SECS * 1000 and ended[0].session is a


def test_timer_ends_an_idle_session_without_a_new_event() -> None:
    clock = Clock()
    st = SessionStamper(None, clock=clock)
    a, _ = st.stamp(now_ms())
    st.take()
    clock.t += IDLE_SECS - 1
    st.end_if_due()
    assert ([], []) == st.take() and st.current is a
    clock.t += 2
    st.end_if_due()
    assert ([(a, "idle", 0)], []) == st.take()
    assert st.current is None
    st.end_if_due()  # nothing left to end
    assert ([], []) == st.take()


def test_wall_clock_jumps_do_not_split_or_freeze_a_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall clock leaps a day ahead, then a day back: one session all along, because
    decisions follow the monotonic clock; event labels follow the wall clock."""
    clock = Clock()
    st = SessionStamper(None, clock=clock)
    a, _ = st.stamp(now_ms())
    real = sessions_mod.now_ms
    for jump in (24 * HOUR_MS, -24 * HOUR_MS, -365 * 24 * HOUR_MS):
        monkeypatch.setattr(sessions_mod, "now_ms", lambda j=jump: real() + j)
        clock.t += 60
        assert a is st.stamp(real() + jump)[0]
    clock.t += IDLE_SECS + 1  # while the monotonic clock says idle, it is idle
    assert a is not st.stamp(now_ms())[0]


def test_restart_resumes_a_fresh_session_and_ends_a_stale_one() -> None:
    fresh = row(60_000, 60_000)
    st = SessionStamper(fresh, clock=Clock())
    assert ("a", 4) == (lambda r: (r[0].uuid, r[1]))(st.stamp(now_ms()))
    assert ([], []) == st.take()

    stale = row(2 * HOUR_MS, HOUR_MS)
    st = SessionStamper(stale, clock=Clock())
    assert [(stale, "idle", HOUR_MS)] == st.take()[0]  # ended at start, before any event
    b, _ = st.stamp(now_ms())
    assert [(b, "idle")] == st.take()[1] and b.uuid != "a"

    old = row(25 * HOUR_MS, 10_000)  # busy, but over a day old
    assert "daily" == SessionStamper(old, clock=Clock()).take()[0][0].reason


@pytest.mark.parametrize("ago_ms", [-HOUR_MS, -30 * 24 * HOUR_MS])
def test_restart_after_the_wall_clock_went_backwards(ago_ms: int) -> None:
    """The last session looks like it is from the future: not resumed, ended with a
    duration that is never negative."""
    st = SessionStamper(row(ago_ms, ago_ms), clock=Clock())
    ended, _ = st.take()
    assert 1 == len(ended) and ended[0].duration_ms >= 0
    assert "a" != st.stamp(now_ms())[0].uuid


def test_restart_after_an_ended_session_says_restart() -> None:
    st = SessionStamper(row(HOUR_MS, HOUR_MS, ended_ms=now_ms() - HOUR_MS), clock=Clock())
    assert ([], []) == st.take()
    b, _ = st.stamp(now_ms())
    assert [(b, "restart")] == st.take()[1]


# -- feature counting --------------------------------------------------------------------


def test_feature_ids_follow_what_metrics_counts() -> None:
    cmd = s.CommandExecuted(command="config", subcommand="set", profile="deep")
    assert ("command.config.set", "profile.deep") == feature_ids(cmd)
    assert ("command.think",) == feature_ids(s.CommandFailed(command="think"))
    assert ("thinktool.gigathink",) == feature_ids(s.ThinkToolCompleted(tool_name="gigathink"))
    assert () == feature_ids(s.ThinkToolStarted(tool_name="gigathink"))
    assert () == feature_ids(s.HelpViewed(topic="think"))


def test_redacted_and_overlong_names_are_not_features() -> None:
    redacted = s.CommandExecuted(command="think", subcommand="[EMAIL]")  # as the firewall leaves it
    assert () == feature_ids(redacted)
    assert () == feature_ids(s.ThinkToolCompleted(tool_name="t" * 60))  # 70 with the prefix


def test_first_use_and_milestones_exactly_once() -> None:
    fc = FeatureCounter({})
    out = [fc.use("p", s.ThinkToolCompleted(tool_name="x"), 1) for _ in range(120)]
    got = [(i + 1, type(e).__name__, getattr(e, "milestone_count", None))
           for i, events in enumerate(out) for e in events]  # fmt: skip
    assert [
        (1, "FeatureFirstUse", None),
        *[(n, "FeatureAdoption", n) for n in (5, 10, 25, 50, 100)],
    ] == got
    assert {("p", "thinktool.x"): (120, 1)} == fc.changed
    assert [] == fc.use("other-product", s.HelpViewed(topic="x"), 2)


def test_feature_table_is_bounded() -> None:
    fc = FeatureCounter({("p", f"command.c{i}"): 1 for i in range(MAX_FEATURES)})
    assert [] == fc.use("p", s.CommandExecuted(command="new"), 1)
    assert 1 == fc.untracked
    assert [] == fc.use("p", s.CommandExecuted(command="c1"), 1)
    assert 2 == fc.uses[("p", "command.c1")]  # known features go on being counted


def test_snapshot_and_restore() -> None:
    fc = FeatureCounter({})
    snap = fc.snapshot()
    fc.use("p", s.CommandExecuted(command="a"), 1)
    fc.restore(snap)
    assert ({}, {}) == (fc.uses, fc.changed)
    assert 1 == len(fc.use("p", s.CommandExecuted(command="a"), 1))  # first use again


# -- the real daemon ---------------------------------------------------------------------


def stored(sandbox: Sandbox, where: str = "1") -> list[tuple[Any, ...]]:
    return sandbox.query(
        "SELECT e.event_type, e.sequence, ss.uuid, s.product, e.payload FROM events e"
        " JOIN sessions ss ON ss.id = e.session_id JOIN sources s ON s.id = e.source_id"
        f" WHERE {where} ORDER BY e.id"
    )


def test_daemon_writes_session_start_and_feature_events(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    raw_push([frame(s.CommandExecuted(command="think", profile="quick")) for _ in range(5)])
    wait_for(lambda: daemon.counter("accepted") == 5, what="5 events")
    daemon.flush()
    rows = stored(sandbox)
    assert [
        ("session_started", 1, "rkd", {"reason": "first"}),
        ("command_executed", 2, "reasonkit-core", None),
        ("feature_first_use", 3, "reasonkit-core", {"feature_id": "command.think", "discovery_source": None}),
        ("feature_first_use", 4, "reasonkit-core", {"feature_id": "profile.quick", "discovery_source": None}),
        *[("command_executed", n, "reasonkit-core", None) for n in (5, 6, 7, 8)],
        ("feature_adoption", 9, "reasonkit-core", {
            "feature_id": "command.think",
            "feature_event": "milestone", "milestone_count": 5, "discovery_source": None}),
        ("feature_adoption", 10, "reasonkit-core", {
            "feature_id": "profile.quick",
            "feature_event": "milestone", "milestone_count": 5, "discovery_source": None}),
    ] == [
        (t, seq, product, json.loads(p) if t != "command_executed" else None)
        for t, seq, _, product, p in rows
    ]  # fmt: skip
    assert 1 == len({r[2] for r in rows})
    assert {("reasonkit-core", "command.think", 5), ("reasonkit-core", "profile.quick", 5)} == set(
        sandbox.query("SELECT product, feature_id, uses FROM features")
    )


def test_feature_counts_survive_a_restart(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """Uses counted before a restart count after it: no second first use, the milestone at
    the fifth use overall."""
    d = start_daemon()
    raw_push([frame(s.ThinkToolCompleted(tool_name="gigathink")) for _ in range(3)])
    wait_for(lambda: d.counter("accepted") == 3, what="3 events")
    assert 0 == d.stop()[0]
    d = start_daemon()
    raw_push([frame(s.ThinkToolCompleted(tool_name="gigathink")) for _ in range(2)])
    wait_for(lambda: d.counter("accepted") == 5, what="2 more")
    d.flush()
    assert [("feature_first_use", None), ("feature_adoption", 5)] == sandbox.query(
        "SELECT event_type, json_extract(payload, '$.milestone_count') FROM events"
        " WHERE event_type LIKE 'feature%' ORDER BY id"
    )


def test_feature_events_follow_consent(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """Without command_usage consent no feature events are written (ThinkTool usage alone
    still counts the uses); without session_metadata no session events, and sequences
    start at 1."""
    sandbox.env.pop("RK_TELEMETRY_ENABLED")
    assert 0 == sandbox.rkd("enable", "--yes", "--only", "thinktool_usage").returncode
    d = start_daemon()
    raw_push([frame(s.ThinkToolCompleted(tool_name="gigathink")) for _ in range(5)])
    wait_for(lambda: d.counter("accepted") == 5, what="5 events")
    d.flush()
    assert [("thinktool_completed", i) for i in range(1, 6)] == [r[:2] for r in stored(sandbox)]
    assert [("thinktool.gigathink", 5)] == sandbox.query("SELECT feature_id, uses FROM features")


def test_clients_cannot_write_session_events(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    raw_push([frame(s.SessionStarted()), frame(s.SessionEnded(duration_ms=5))])
    wait_for(lambda: daemon.counter("rejected.daemon_owned") == 2, what="2 rejections")
    daemon.flush()
    assert 0 == sandbox.count(derived=True)


def end_session_in_db(sandbox: Sandbox, hours_ago: float) -> None:
    """Move the newest session's times into the past, as if the daemon had been off."""
    db = apsw.Connection(str(sandbox.settings.db_path))
    try:
        shift = int(hours_ago * HOUR_MS)
        db.execute(
            "UPDATE sessions SET started_ms = started_ms - ?, last_ms = last_ms - ?",
            (shift, shift),
        )
    finally:
        db.close()


def test_a_session_that_went_stale_while_stopped_is_ended_at_start(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    d = start_daemon()
    raw_push([frame(s.HelpViewed(topic="think")) for _ in range(2)])
    wait_for(lambda: d.counter("accepted") == 2, what="2 events")
    assert 0 == d.stop()[0]
    end_session_in_db(sandbox, hours_ago=2)
    d = start_daemon()
    wait_for(lambda: sandbox.count("event_type = 'session_ended'", derived=True) == 1,
             what="session_ended written at start")  # fmt: skip
    raw_push([frame(s.HelpViewed(topic="think"))])
    wait_for(lambda: d.counter("accepted") == 3, what="the next event")
    d.flush()
    rows = stored(sandbox)
    assert ["session_started", "help_viewed", "help_viewed", "session_ended",
            "session_started", "help_viewed"] == [r[0] for r in rows]  # fmt: skip
    ended = json.loads(rows[3][4])
    assert {"reason": "idle", "event_count": 3} == {k: ended[k] for k in ("reason", "event_count")}
    assert (4, rows[0][2]) == (rows[3][1], rows[3][2])  # the old session's last event
    assert "idle" == json.loads(rows[4][4])["reason"] and rows[4][2] != rows[0][2]
    assert [True, False] == [
        r[0] is not None for r in sandbox.query("SELECT ended_ms FROM sessions ORDER BY id")
    ]


def test_status_and_delete_with_derived_events(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """`rkd delete` forgets feature counts: the next use is a first use again."""
    raw_push([frame(s.CommandExecuted(command="think"))])
    wait_for(lambda: daemon.counter("accepted") == 1, what="1 event")
    daemon.flush()
    assert 3 == daemon.status().events_stored  # session_started, the command, first use
    assert 0 == sandbox.rkd("delete", "--confirm").returncode
    raw_push([frame(s.CommandExecuted(command="think"))])
    wait_for(lambda: daemon.counter("accepted") == 1, what="1 event after delete")
    daemon.flush()
    assert ["session_started", "command_executed", "feature_first_use"] == [
        r[0] for r in stored(sandbox)
    ]
    assert "first" == json.loads(stored(sandbox)[0][4])["reason"]


def test_migration_from_schema_2_counts_existing_uses_and_closes_old_sessions(
    tmp_path: Any,
) -> None:
    """An existing database: its uses are counted from the events it holds, every session
    but the newest is marked ended, and the newest stays open."""
    from rkd.daemon.storage import MIGRATIONS

    path = tmp_path / "old.db"
    db = apsw.Connection(str(path))
    with db:
        for step in MIGRATIONS[:2]:
            db.execute(step)
        db.execute("PRAGMA user_version=2")
        db.execute(
            "INSERT INTO sources VALUES (1, 'app', '1.0.0', 'oss', 'linux', 'x86_64', '3.11')"
        )
        for i in (1, 2):
            db.execute("INSERT INTO sessions VALUES (?, ?, 1, 2, 3)", (i, f"s{i}"))
        payloads = [
            ("command_executed", {"command": "think", "profile": "deep"}),
            ("command_failed", {"command": "think", "profile": None}),
            ("command_executed", {"command": "config", "subcommand": "set"}),
            ("thinktool_completed", {"tool_name": "gigathink"}),
            ("thinktool_completed", {"tool_name": "[EMAIL]"}),
            ("help_viewed", {"topic": "think"}),
        ]
        for i, (t, p) in enumerate(payloads):
            db.execute(
                "INSERT INTO events(event_id, event_type, schema_version, ts_ms, session_id,"
                " sequence, source_id, payload) VALUES (?, ?, '1.0.0', ?, 2, ?, 1, ?)",
                (bytes(16), t, 1000 + i, i + 1, json.dumps({"event_type": t, **p})),
            )
    db.close()
    st = Storage(path)
    try:
        assert {("app", "command.think"): 2, ("app", "profile.deep"): 1,
                ("app", "command.config.set"): 1, ("app", "thinktool.gigathink"): 1,
                } == st.feature_uses()  # fmt: skip
        assert [(1, 2), (2, None)] == st.db.execute(
            "SELECT id, ended_ms FROM sessions ORDER BY id"
        ).fetchall()
        last = st.last_session()
        assert last is not None and last.ended_ms is None
    finally:
        st.close()


def test_spooled_events_get_their_derived_events_once(sandbox: Sandbox) -> None:
    """Events spooled while no daemon ran are stamped and counted when ingested."""
    sandbox.python("""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for _ in range(5):
            tel.thinktool("gigathink")
        tel.close()
    """)
    d = Daemon(sandbox)
    try:
        wait_for(lambda: d.status().events_stored + d.status().pending >= 5, what="spool")
        d.flush()
        assert ["session_started", "thinktool_completed", "feature_first_use",
                *["thinktool_completed"] * 4, "feature_adoption"] == [
            r[0] for r in stored(sandbox)
        ]  # fmt: skip
    finally:
        d.stop()
