"""The daemon: lock, sockets, flush triggers, graceful stop, sessions, storage, config keys."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import uuid
from collections.abc import Callable

import pytest
from rkd.client import schema as s
from rkd.client.clock import now_ms
from rkd.daemon.storage import SCHEMA_VERSION, Record, SessionRow, Storage

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import envelope, frame

RawPush = Callable[[list[bytes]], None]


def think(i: int = 0) -> bytes:
    return frame(s.ThinkToolCompleted(tool_name="gigathink", duration_ms=i))


def test_second_daemon_refuses_to_start(sandbox: Sandbox, daemon: Daemon) -> None:
    """Only one daemon per user: the second exits 78 (no restart helps) naming the first."""
    proc = sandbox.rkd("run")
    assert 78 == proc.returncode
    assert (
        f"Error: another rkd daemon (pid {daemon.proc.pid}) is already running for this user\n"
        == proc.stderr
    )


def test_a_client_checking_for_the_daemon_does_not_stop_it_starting(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """Clients and `rkd` commands ask whether a daemon runs by taking the lock file's
    shared lock for a moment (control.daemon_pid). A daemon starting in such a moment
    took that for another daemon and exited 78, which systemd does not restart (CI saw
    it once, between two tests' daemons). Here a prober holds the shared lock most of
    the time, in bursts of a few milliseconds, as busy clients would: the daemon starts."""
    import fcntl
    import threading

    from rkd.client.wire import LOCK_FILE

    first = start_daemon()
    code, log = first.stop()
    assert 0 == code, log
    stop = threading.Event()

    def probe() -> None:
        fd = os.open(sandbox.settings.runtime_dir / LOCK_FILE, os.O_RDONLY)
        try:
            while not stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # the daemon has it now
                    time.sleep(0.005)
                    continue
                time.sleep(0.004)
                fcntl.flock(fd, fcntl.LOCK_UN)
                time.sleep(0.0005)
        finally:
            os.close(fd)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        second = start_daemon()
    finally:
        stop.set()
        prober.join()
    assert second.proc.poll() is None


def test_stale_sockets_of_a_dead_daemon_are_cleaned_up(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """After SIGKILL the next daemon replaces the stale sockets and receives events."""
    first = start_daemon()
    first.proc.kill()
    first.proc.wait()
    assert (sandbox.settings.runtime_dir / "events.sock").exists()
    second = start_daemon()
    raw_push([think()])
    wait_for(lambda: second.counter("accepted") == 2, what="the event and crash_detected")


def test_files_and_folders_are_private(sandbox: Sandbox, daemon: Daemon) -> None:
    """Runtime folder 0700, sockets 0600, data folder 0700, database 0600."""
    st = sandbox.settings
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert 0o700 == mode(st.runtime_dir)
    assert (0o600, 0o600) == (
        mode(st.runtime_dir / "events.sock"),
        mode(st.runtime_dir / "control.sock"),
    )
    assert (0o700, 0o600) == (mode(st.db_path.parent), mode(st.db_path))


def test_loose_runtime_dir_is_tightened(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A runtime folder others could enter is made 0700 before any socket is bound."""
    run = sandbox.settings.runtime_dir
    run.mkdir(mode=0o777, parents=True)
    run.chmod(0o777)
    start_daemon()
    assert 0o700 == stat.S_IMODE(run.stat().st_mode)


def test_too_long_runtime_path_is_a_clear_error(sandbox: Sandbox) -> None:
    """A socket path longer than the OS allows is refused with a hint, and exit 78: a
    restart cannot fix it, so the service manager must not retry."""
    long = sandbox.root / ("x" * 120)
    proc = sandbox.rkd("run", XDG_RUNTIME_DIR=str(long))
    assert 78 == proc.returncode
    assert "path too long for a socket" in proc.stderr and "XDG_RUNTIME_DIR" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_loses_nothing_pending(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush, sig: int
) -> None:
    """SIGTERM/SIGINT with events pending: every one is written before exit."""
    sandbox.write_config("[telemetry]\nbatch_size = 10000\nflush_interval_secs = 3600\n")
    d = start_daemon()
    raw_push([think(i) for i in range(250)])
    wait_for(lambda: d.counter("accepted") == 250, what="250 pending")
    assert 0 == sandbox.count()
    code, log = d.stop(sig)
    assert 0 == code
    assert 250 == sandbox.count()
    assert "daemon_stopped" in log
    assert not (sandbox.settings.runtime_dir / "events.sock").exists()


def test_batch_size_triggers_a_flush(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """config batch_size: reaching it writes the buffer without waiting for the timer."""
    sandbox.write_config("[telemetry]\nbatch_size = 10\nflush_interval_secs = 3600\n")
    d = start_daemon()
    for _ in range(3):  # separate sends so the daemon sees them in separate turns
        raw_push([think() for _ in range(4)])
        wait_for(lambda: d.status().pending + d.status().events_stored >= 4, what="events")
    wait_for(lambda: d.counter("accepted") == 12, what="12 events")
    assert d.status().events_stored >= 10
    assert d.status().pending < 10


def test_flush_interval_triggers_a_flush(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """config flush_interval_secs: pending events are written when the interval passes."""
    sandbox.write_config("[telemetry]\nbatch_size = 10000\nflush_interval_secs = 0.3\n")
    d = start_daemon()
    raw_push([think() for _ in range(5)])
    wait_for(lambda: sandbox.count() == 5, timeout=5, what="the timed flush")
    assert d.status().last_flush is not None


def test_error_events_are_written_at_once(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """An error event is written immediately, with what was pending before it (spec §4.2)."""
    sandbox.write_config("[telemetry]\nbatch_size = 10000\nflush_interval_secs = 3600\n")
    d = start_daemon()
    raw_push([think(), frame(s.ErrorOccurred(error_category="timeout"))])
    wait_for(lambda: sandbox.count() == 2, timeout=5, what="the error write")
    assert 0 == d.status().pending


def test_db_path_env_and_config_decide_where_events_go(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """RK_TELEMETRY_PATH (and db_path) move the database."""
    target = sandbox.root / "elsewhere" / "t.db"
    sandbox.env["RK_TELEMETRY_PATH"] = str(target)
    d = start_daemon()
    raw_push([think()])
    wait_for(lambda: d.counter("accepted") == 1, what="event")
    d.flush()
    assert str(target) == d.status().db_path
    assert 1 == sandbox.count()


def test_sessions_are_stamped_by_the_daemon(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """Events get one anonymous session with sequence 1..n, opened by session_started and
    with the feature events after the uses that reach them; the client cannot set it."""
    forged = envelope(s.HelpViewed(topic="think"), session=s.Session(
        id=__import__("uuid").uuid4(), sequence=999, started_at=__import__("datetime").datetime.now(__import__("datetime").UTC)))  # fmt: skip
    import msgspec

    raw_push([think(i) for i in range(5)] + [msgspec.msgpack.encode(forged)])
    wait_for(lambda: daemon.counter("accepted") == 6, what="6 events")
    daemon.flush()
    rows = sandbox.query(
        "SELECT s.uuid, e.sequence, e.event_type, json_extract(e.payload, '$.milestone_count')"
        " FROM events e JOIN sessions s ON s.id = e.session_id ORDER BY e.id"
    )
    assert [
        (1, "session_started", None),
        (2, "thinktool_completed", None),
        (3, "feature_first_use", None),
        *[(i, "thinktool_completed", None) for i in (4, 5, 6, 7)],
        (8, "feature_adoption", 5),
        (9, "help_viewed", None),
    ] == [r[1:] for r in rows]
    assert 1 == len({r[0] for r in rows})
    assert rows[0][0] == daemon.status().session_id
    assert str(forged.session.id) != rows[0][0]  # type: ignore[union-attr]


def test_storage_migrates_and_refuses_newer_schema(tmp_path: __import__("pathlib").Path) -> None:
    """A new database gets the current user_version; a newer one is refused clearly."""
    from rkd.daemon.storage import StorageError

    path = tmp_path / "t.db"
    Storage(path).close()
    import apsw

    db = apsw.Connection(str(path))
    assert SCHEMA_VERSION == db.execute("PRAGMA user_version").get
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StorageError, match="newer than this rkd understands"):
        Storage(path)


def test_damaged_database_is_moved_aside_and_a_fresh_one_started(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """A file that is not a database is kept under another name; the daemon starts fresh,
    logs it, and `rkd status` shows it."""
    db = sandbox.settings.db_path
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)
    d = start_daemon()
    (aside,) = [p for p in db.parent.iterdir() if p.name.startswith(db.name + ".corrupt-")]
    assert b"this is not sqlite" * 100 == aside.read_bytes()
    raw_push([think()])
    wait_for(lambda: d.counter("accepted") == 1, what="an event in the fresh database")
    d.flush()
    assert 1 == sandbox.count()
    status = json.loads(sandbox.rkd("status", "--json").stdout)
    assert str(aside) == status["recovered"]["kept_as"]
    assert f"kept as {aside}" in sandbox.rkd("status").stdout
    _, log = d.stop()
    assert "database_damaged_moved_aside" in log


def test_crash_is_reported_on_the_next_start(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """SIGKILL leaves the run marker; the next daemon stores crash_detected. A clean stop does not."""
    first = start_daemon()
    raw_push([frame(s.ErrorOccurred(error_category="timeout"))])
    wait_for(lambda: sandbox.count() == 1, what="the error event")
    first.proc.kill()
    first.proc.wait()
    second = start_daemon()
    wait_for(lambda: sandbox.count("event_type = 'crash_detected'") == 1, what="crash_detected")
    (payload,) = sandbox.query("SELECT payload FROM events WHERE event_type = 'crash_detected'")[0]
    assert "daemon" == json.loads(payload)["component"]
    assert [("rkd",)] == sandbox.query(
        "SELECT s.product FROM events e JOIN sources s ON s.id = e.source_id WHERE e.event_type = 'crash_detected'"
    )
    second.stop()
    start_daemon().flush()
    assert 1 == sandbox.count("event_type = 'crash_detected'")


def test_retention_days_and_size_cap_prune(tmp_path: __import__("pathlib").Path) -> None:
    """retention_days drops old events; max_db_size_mb drops the oldest until under the cap."""
    storage = Storage(tmp_path / "t.db")
    sess = SessionRow(rowid=None, uuid="s", started_ms=now_ms(), last_ms=now_ms(), events=0)
    old = now_ms() - 10 * 86_400_000
    big = s.CommandExecuted(command="think", thinktool_chain=("a" * 60,) * 32)
    recs = [Record(envelope(big), sess, i, old if i < 100 else now_ms()) for i in range(3000)]
    storage.write(recs, {}, now_ms())
    assert 2900 == 3000 - storage.prune(retention_days=5, max_db_size_mb=1000)
    assert storage.size_bytes() > 1024 * 1024
    storage.prune(retention_days=5, max_db_size_mb=1)
    assert storage.size_bytes() <= 1024 * 1024
    kept = storage.db.execute("SELECT min(sequence), count(*) FROM events").fetchone()
    assert kept[0] > 100 and 0 < kept[1] < 2900  # the oldest went first


def test_daemon_prunes_at_start(sandbox: Sandbox, start_daemon: Callable[..., Daemon]) -> None:
    """The maintenance job runs on the daemon's timer, honouring retention_days."""
    sandbox.write_config("[telemetry]\nretention_days = 1\n")
    storage = Storage(sandbox.settings.db_path)
    sess = SessionRow(rowid=None, uuid="s", started_ms=now_ms(), last_ms=now_ms(), events=0)
    ev = envelope(s.HelpViewed(topic="x"))
    storage.write(
        [Record(ev, sess, 1, now_ms() - 3 * 86_400_000), Record(ev, sess, 2, now_ms())],
        {},
        now_ms(),
    )
    storage.close()
    d = start_daemon()
    wait_for(lambda: sandbox.count() == 1, timeout=10, what="the prune")
    assert 1 == d.counter("pruned")


def test_disabled_daemon_stores_nothing(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """A daemon whose config says disabled counts incoming events as rejected, stores none."""
    sandbox.env.pop("RK_TELEMETRY_ENABLED")
    d = start_daemon()
    raw_push([think()])
    wait_for(lambda: d.counter("rejected.disabled") == 1, what="the rejection")
    d.flush()
    assert 0 == sandbox.count()


def test_kill_switch_keeps_the_daemon_from_starting(sandbox: Sandbox) -> None:
    """`rkd run` under a kill switch says so and opens nothing."""
    proc = sandbox.rkd("run", DO_NOT_TRACK="1")
    assert (
        78,
        "Error: telemetry is disabled by DO_NOT_TRACK in the environment; not starting\n",
    ) == (proc.returncode, proc.stderr)
    assert not sandbox.settings.runtime_dir.exists()


def test_sighup_reloads_config(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """SIGHUP re-reads config.toml: a new batch size applies without a restart."""
    sandbox.write_config("[telemetry]\nbatch_size = 10000\nflush_interval_secs = 3600\n")
    d = start_daemon()
    sandbox.write_config("[telemetry]\nbatch_size = 1\nflush_interval_secs = 3600\n")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    raw_push([think()])
    wait_for(lambda: sandbox.count() == 1, timeout=5, what="a flush at batch size 1")
    assert d.proc.poll() is None


def test_logs_are_json_and_carry_no_payload(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """Daemon logs are JSON lines and never contain payload values."""
    d = start_daemon()
    raw_push([frame(s.CommandExecuted(command="secretcommandname")), b"garbage"])
    wait_for(lambda: d.counter("rejected.malformed") == 1, what="rejection")
    _, log = d.stop()
    lines = [json.loads(line) for line in log.splitlines()]
    assert {"daemon_started", "frame_rejected", "stopping", "daemon_stopped"} <= {
        x["event"] for x in lines
    }
    assert "secretcommandname" not in log


def test_systemd_notify_ready_and_stopping(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """Under systemd (Type=notify) the daemon sends READY=1 when serving, STOPPING=1 at stop."""
    import socket

    path = sandbox.root / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(10)
    try:
        d = start_daemon(NOTIFY_SOCKET=str(path))
        ready = listener.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=storing to ") and f"MAINPID={d.proc.pid}" in ready
        d.proc.send_signal(signal.SIGHUP)
        assert ("RELOADING=1", "READY=1") == (
            listener.recv(4096).decode(),
            listener.recv(4096).decode(),
        )
        d.stop()
        assert listener.recv(4096).decode().startswith("STOPPING=1")
    finally:
        listener.close()


def _old_and_new(sandbox: Sandbox) -> None:
    storage = Storage(sandbox.settings.db_path)
    sess = SessionRow(
        rowid=None, uuid=str(uuid.uuid4()), started_ms=now_ms(), last_ms=now_ms(), events=0
    )
    ev = envelope(s.CommandExecuted(command="think"))
    storage.write([Record(ev, sess, i, now_ms() - 10 * 86_400_000) for i in range(3)]
                  + [Record(ev, sess, 9, now_ms())], {}, now_ms())  # fmt: skip
    storage.close()


@pytest.mark.parametrize("with_daemon", [True, False])
def test_prune_command(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], with_daemon: bool
) -> None:
    """`rkd prune` applies retention now, with or without the daemon; aggregates stay."""
    sandbox.write_config("[telemetry]\nretention_days = 5\n")
    _old_and_new(sandbox)
    if with_daemon:
        d = start_daemon()
        wait_for(lambda: d.counter("pruned") == 3, what="the start-up prune")  # runs at start
        # A step that removed something is followed by one more on the next loop turn;
        # two round trips later that one has run too, and the daemon is idle again.
        d.status()
        d.status()
        _old_and_new(sandbox)  # the daemon is the only writer, but the file is ours to seed
    proc = sandbox.rkd("prune")
    assert 0 == proc.returncode, proc.stderr
    assert "Pruned 3 events (retention 5 days, size cap 100 MB).\n" == proc.stdout
    metrics = json.loads(sandbox.rkd("metrics", "--days", "30", "--json").stdout)
    assert (8 if with_daemon else 4) == metrics["queries"]


def test_write_failures_keep_events_and_recover(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """While the database cannot be written, events stay buffered; the failure is logged
    once, writes are retried with backoff, and everything lands when it can be written."""
    import apsw

    sandbox.write_config("[telemetry]\nbatch_size = 1\n")
    d = start_daemon()
    blocker = apsw.Connection(str(sandbox.settings.db_path))
    blocker.execute("BEGIN EXCLUSIVE")  # no other writer gets in (as with a full disk)
    try:
        raw_push([think(i) for i in range(10)])
        wait_for(
            lambda: d.counter("accepted") == 10 and d.counter("write_errors") >= 1, what="buffered"
        )
        time.sleep(1.0)
        assert 10 + 4 == d.status().pending  # + session_started, first use, 5th and 10th use
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    wait_for(lambda: sandbox.count() == 10, timeout=70, what="the retried write")
    _, log = d.stop()
    assert 1 == log.count('"write_failed"') and 1 == log.count('"write_recovered"')


def test_eight_writers_ten_thousand_each_lose_nothing(sandbox: Sandbox, daemon: Daemon) -> None:
    """8 processes x 10,000 events through the real client: all 80,000 stored, once each."""
    code = """
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(10_000):
            tel.thinktool("gigathink", duration_ms=i)
        tel.close()
        print(sorted(tel.drops.items()))
    """
    procs = [sandbox.spawn_python(code) for _ in range(8)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert 0 == p.returncode, err
        # The only drops allowed are "unconfirmed": copies of delivered frames that did
        # not fit in the spool when the busy daemon could not confirm within 200 ms.
        assert all(reason == "unconfirmed" for reason, _ in eval(out)), out
    wait_for(
        lambda: daemon.flush() >= 0 and sandbox.count() == 80_000, timeout=120, what="80,000 rows"
    )
    assert [(80_000, 80_000)] == sandbox.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
        " WHERE event_type = 'thinktool_completed'"
    )
    # Exactly what the daemon adds: one session, the first use and five milestones.
    assert [("feature_adoption", 5), ("feature_first_use", 1), ("session_started", 1)] == (
        sandbox.query(
            "SELECT event_type, count(*) FROM events"
            " WHERE event_type != 'thinktool_completed' GROUP BY 1 ORDER BY 1"
        )
    )


def test_bounded_set_forgets_the_oldest_and_stays_fast() -> None:
    """The duplicate window keeps the newest ids only and never grows past its limit."""
    from rkd.daemon.windows import BoundedSet

    b = BoundedSet(3)
    for k in (1, 2, 3, 2, 4):
        b.add(k)
    assert [False, True, True, True] == [k in b for k in (1, 2, 3, 4)]
    big = BoundedSet(1000)
    for k in range(5000):
        big.add(k)
    assert (1000, 1000) == (len(big._members), len(big._order))
    assert 3999 not in big and 4000 in big
    again = BoundedSet(500)  # what a clean stop saves: the newest 500 come back
    again.load(big.dump())
    assert (500, 500) == (len(again._members), len(again._order))
    assert 4499 not in again and 4500 in again and 4999 in again
    for damaged in (big.dump()[:-1], "text", None):
        fresh = BoundedSet(10)
        fresh.load(damaged)
        assert 0 == len(fresh._order)


def test_database_from_a_newer_rkd_stops_the_daemon_for_good(sandbox: Sandbox) -> None:
    """A database a newer rkd wrote: one line naming the versions, exit 78 (no restarts)."""
    import apsw

    Storage(sandbox.settings.db_path).close()
    db = apsw.Connection(str(sandbox.settings.db_path))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    proc = sandbox.rkd("run")
    assert 78 == proc.returncode
    assert "is newer than this rkd understands" in proc.stderr and "upgrade rkd" in proc.stderr


def test_an_original_arriving_after_its_spooled_copy_is_stored_once(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """A client spools copies of frames still in flight at its exit; if the daemon stores
    the spool file first, the originals that arrive later are dropped, and counted."""
    from rkd.client.spool import write_spool

    frames = [think(i) for i in range(50)]
    assert 50 == write_spool(sandbox.settings.spool_dir, frames)
    daemon.flush()  # the spool file is stored: the copies came first
    assert 50 == sandbox.count("event_type = 'thinktool_completed'")
    raw_push(frames)  # then the originals
    wait_for(lambda: daemon.counter("socket.duplicates") == 50, what="50 duplicates")
    daemon.flush()
    assert [(50, 50)] == sandbox.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
        " WHERE event_type = 'thinktool_completed'"
    )
    assert 50 == daemon.counter("accepted")  # the spooled copies; none of the originals


def test_a_spool_file_that_fails_to_write_is_stored_whole_later(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """The database refuses the write while a spool file is being stored: the file stays,
    and when writing works again every event of it is stored once (not taken for copies
    of itself), with one session start."""
    import apsw
    from rkd.client.control import request
    from rkd.client.spool import write_spool
    from rkd.client.wire import FlushRequest

    assert 5 == write_spool(sandbox.settings.spool_dir, [think(i) for i in range(5)])
    blocker = apsw.Connection(str(sandbox.settings.db_path))
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        reply = request(daemon.runtime, FlushRequest(), timeout_ms=20_000)
        assert not reply.ok and "cannot be written" in (reply.error or "")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count() == 5, timeout=20, what="stored")
    assert [("session_started", 1), ("thinktool_completed", 5)] == sandbox.query(
        "SELECT event_type, count(DISTINCT event_id) FROM events"
        " WHERE event_type IN ('session_started', 'thinktool_completed') GROUP BY 1 ORDER BY 1"
    )
    assert (0, 5) == (daemon.counter("spool.duplicates"), daemon.counter("spool.events"))
    assert [] == list(sandbox.settings.spool_dir.glob("*.spool"))
