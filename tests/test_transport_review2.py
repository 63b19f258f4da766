"""Second review of transport v2 (62777b1, 55a4871): the shipper thread, close(), fork,
the erasure moment, the persisted client ledger and the refused-id memory.

Real daemon subprocess, real sockets, real database, as tests/test_transport_review.py.
Seven of these were bugs found in review (each failed before its fix); the others are
attacks that held, kept as regression tests.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable

import pytest
from rkd.client.schema import Source, ThinkToolCompleted
from rkd.client.spool import write_spool

from tests.conftest import Daemon, Sandbox, go, wait_for
from tests.samples import batch, events, frame

Push = Callable[[list[bytes]], None]
THINKTOOL = "event_type = 'thinktool_completed'"


def settle(daemon: Daemon, cond: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Flush the daemon (socket and spool) until ``cond`` holds; then once more after a
    pause, so that a late spool file or frame is in the figures the test asserts."""
    wait_for(lambda: daemon.flush() >= 0 and cond(), timeout=timeout, what=what)
    time.sleep(0.3)
    daemon.flush()


# -- after close(): straight to the spool ---------------------------------------------------


def test_events_from_a_later_atexit_handler_are_all_stored(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """An atexit handler registered before the first event runs after rkd's close() and
    emits a few events back to back (a "shutting down", its figures, a "bye"): all are
    stored or counted. Today one goes to the spool, and an event that comes within 2 ms
    of that ship waits in the open batch for the shipper, which close() let go and
    _arm() no longer starts (``_closed``): nothing ships it, nothing counts it."""
    sandbox.python("""
        import atexit
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        atexit.register(lambda: [tel.thinktool("at_exit", duration_ms=i) for i in range(5)])
        for i in range(10):
            tel.thinktool("gigathink", duration_ms=i)
    """)
    settle(daemon, lambda: sandbox.count("1") >= 11, "the events before exit stored")
    assert 15 == sandbox.count("1") + daemon.lost()


def test_emit_after_an_explicit_close_connects_again(sandbox: Sandbox, daemon: Daemon) -> None:
    """A long-running program whose component calls tel.close() (a job's teardown, a
    `with` block) and goes on emitting, one event every few milliseconds. Before, each
    event after close() was written straight to the spool: a new file, an fsync and a
    rename in the application's thread for every event (~0.8 ms each), and one spool file
    per event for the daemon. Now the next event connects again: nothing is spooled, and
    the emit costs what a sparse event costs without any close() (same process, same
    load; generous factor for a busy machine)."""
    out = sandbox.python("""
        import statistics, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")

        def sparse(tool):
            took = []
            for i in range(100):
                time.sleep(0.003)
                t = time.perf_counter()
                tel.thinktool(tool, duration_ms=i)
                took.append(time.perf_counter() - t)
            return statistics.median(took)

        before = sparse("before_close")
        tel.close()
        after = sparse("after_close")
        tel.flush()
        print(after / before, tel._transport.spooled)
    """).stdout
    ratio, spooled = out.split()
    assert "0" == spooled
    assert float(ratio) < 4, out
    settle(daemon, lambda: sandbox.count("1") == 200, "all 200 stored")


def test_close_from_two_threads_at_once_loses_and_doubles_nothing(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Two threads call close() at the same moment while a third emits: both return,
    and every event is stored once (the second close() finds nothing left to do, the
    emitting thread's late events go to the spool)."""
    out = sandbox.python("""
        import threading, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(2_000):
            tel.thinktool("gigathink", duration_ms=i)
        stop, late = threading.Event(), [0]

        def emit():
            while not stop.is_set():
                tel.thinktool("late")
                late[0] += 1
                time.sleep(0.003)  # > 2 ms: each one ships (to the spool once closed)

        go = threading.Barrier(2)

        def close():
            go.wait()
            tel.close()

        threads = [threading.Thread(target=f) for f in (emit, close, close)]
        for t in threads:
            t.start()
        threads[1].join(5)
        threads[2].join(5)
        time.sleep(0.02)
        stop.set()
        threads[0].join(5)
        print(2_000 + late[0], sum(t.is_alive() for t in threads))
    """).stdout
    sent, alive = map(int, out.split())
    assert 0 == alive
    settle(daemon, lambda: sandbox.count("1") >= sent, "every event stored")
    assert [(sent, sent)] == sandbox.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_type = "
        "'thinktool_completed'"
    )


def test_exit_while_the_shipper_sleeps_is_prompt_and_spools_everything(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """No daemon: the shipper holds a backlog and sleeps PROBE_INTERVAL_SECS (2 s) between
    connection attempts when the program ends. Interpreter shutdown does not wait for
    it, close() spools the backlog and the open batch, and the next daemon stores all."""
    t = time.monotonic()
    sandbox.python("""
        import time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(5):
            tel.thinktool("no_daemon", duration_ms=i)
        time.sleep(0.05)  # the shipper tried once and sleeps
        tel.thinktool("last_a")
        tel.thinktool("last_b")
    """)
    assert time.monotonic() - t < 1.5
    daemon = start_daemon()
    settle(daemon, lambda: sandbox.count("1") >= 7, "the spooled events stored")
    assert (7, 0) == (sandbox.count("1"), daemon.lost())


# -- signals and forks ----------------------------------------------------------------------


def test_an_event_emitted_from_a_signal_handler_does_not_hang_the_program(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A program emits in its main loop and from a signal handler (a SIGALRM tick, or a
    SIGTERM handler that emits "stopping" then calls tel.close()). Python runs the
    handler in the main thread between two bytecodes, possibly inside Transport.send()
    with its lock held: the handler's send() then waits for a lock only its own thread
    can release. "emit never blocks" becomes a hang for ever."""
    code = """
        import signal, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("warmup")
        tel.flush()
        signal.signal(signal.SIGALRM, lambda *_: tel.thinktool("from_handler"))
        signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            tel.thinktool("main_loop")
        signal.setitimer(signal.ITIMER_REAL, 0)
        print("done")
    """
    try:
        out = sandbox.python(code, timeout=4).stdout
    except subprocess.TimeoutExpired:
        out = "hung"
    assert "done\n" == out


def test_a_multiprocessing_worker_that_returns_at_once_loses_nothing_silently(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A fork worker (multiprocessing.Process) emits three events and returns at once.
    The worker leaves by os._exit; the fix registers close() as a multiprocessing
    finalizer in the at-fork hook, but Process._bootstrap() clears the finalizer registry
    right after the fork (util._after_fork), so no close() runs: the last events, held in
    the open batch (or queued in zmq), vanish uncounted."""
    sandbox.python("""
        import multiprocessing
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("parent")
        tel.flush()

        def work(i):
            for k in range(3):
                tel.thinktool(f"child-{i}", duration_ms=k)

        ctx = multiprocessing.get_context("fork")
        for i in range(3):
            p = ctx.Process(target=work, args=(i,))
            p.start()
            p.join(10)
    """)
    settle(daemon, lambda: sandbox.count("1") >= 1, "the parent's event stored")
    assert 1 + 3 * 3 == sandbox.count("1") + daemon.lost()


def test_forks_while_the_shipper_holds_the_lock_neither_hang_nor_lose(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A thread emits without pause (the shipper busy, the lock taken and released all the
    time) while the main thread forks 20 children that emit and close: no child hangs on
    a lock held at the fork, and every event is stored once (a child never re-sends
    the parent's events)."""
    out = sandbox.python(
        """
        import os, threading, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("warmup")
        tel.flush()
        stop, n = threading.Event(), [0]

        def emit():
            while not stop.is_set():
                tel.thinktool("parent_thread")
                n[0] += 1
                if n[0] % 50 == 0:
                    time.sleep(0.001)  # batches held, the shipper woken

        t = threading.Thread(target=emit)
        t.start()
        pids = []
        for i in range(20):
            time.sleep(0.003)
            pid = os.fork()
            if pid == 0:
                for k in range(5):
                    tel.thinktool(f"child-{i}", duration_ms=k)
                tel.close()
                os._exit(0)
            pids.append(pid)
        hung = 0
        deadline = time.monotonic() + 10
        for pid in pids:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.005)
        stop.set()
        t.join()
        print(1 + n[0] + 20 * 5, hung)
    """,
        timeout=40,
    ).stdout
    sent, hung = map(int, out.split())
    assert 0 == hung
    settle(daemon, lambda: sandbox.count("1") + daemon.lost() >= sent, "every event")
    assert (sent, 0) == (sandbox.count("1"), daemon.lost())
    assert [(sent,)] == sandbox.query("SELECT count(DISTINCT event_id) FROM events "
                                      "WHERE event_type = 'thinktool_completed'")  # fmt: skip


# -- the moment of `rkd delete` -------------------------------------------------------------

HOLDING_APP = """
    import sys
    from rkd.client import Telemetry
    tel = Telemetry(product="reasonkit-core", version="1.0.0")
    for i in range(10):
        tel.thinktool("before_delete", duration_ms=i)  # no daemon: held in the backlog
    print("ready", flush=True)
    sys.stdin.readline()  # then it exits: the backlog goes to the spool
"""


@pytest.mark.parametrize("database", [True, False])
def test_an_offline_delete_is_not_undone_by_a_running_app_s_backlog(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], database: bool
) -> None:
    """No daemon runs; an application holds 10 events in its backlog (it spools them at
    exit); the user runs `rkd delete`. The next daemon must not store those 10 events:
    they were recorded before the deletion. With a database (a daemon ran before), the
    offline delete records the moment and they are refused. Without one (the daemon
    never ran, or the user removed the file), delete_offline() skips delete_all() and
    nothing records the moment: the 10 events are stored after the user erased them."""
    if database:
        start_daemon().stop()
    app = sandbox.spawn_python(HOLDING_APP)
    assert app.stdout is not None
    assert "ready\n" == app.stdout.readline()
    time.sleep(0.01)  # the delete comes strictly after the events
    proc = sandbox.rkd("delete", "--confirm")
    assert 0 == proc.returncode, proc.stderr
    go(app)
    daemon = start_daemon()
    settle(daemon, lambda: daemon.counter("accepted") + daemon.counter(
        "rejected.before_deletion") >= 10, "the spooled events taken", timeout=10)  # fmt: skip
    assert (0, 10) == (sandbox.count("1"), daemon.counter("rejected.before_deletion"))


def test_events_emitted_just_after_rkd_delete_are_stored_and_those_before_are_not(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A running application: 500 events before `rkd delete` (their copies spooled at its
    exit, the daemon restarted meanwhile, so none is confirmed), then 50 at once after
    the delete returned, then it exits. The 50 are stored (dated after the moment, which
    is the daemon's clock at the delete); the 500 stay erased, across the restart."""
    first = start_daemon()
    app = sandbox.spawn_python("""
        import sys
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(500):
            tel.thinktool("before", duration_ms=i)
        tel.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(50):
            tel.thinktool("after", duration_ms=i)
        tel.flush()
        print("sent", flush=True)
        sys.stdin.readline()
    """)
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    proc = sandbox.rkd("delete", "--confirm")
    assert 0 == proc.returncode, proc.stderr
    app.stdin.write("go\n")
    app.stdin.flush()
    assert "sent\n" == app.stdout.readline()
    assert 0 == first.stop()[0]
    second = start_daemon()
    go(app)
    settle(second, lambda: sandbox.count("1") >= 50, "the events after the delete stored")
    assert [("after", 50)] == sandbox.query(
        "SELECT json_extract(payload, '$.tool_name'), count(*) FROM events "
        "WHERE event_type = 'thinktool_completed' GROUP BY 1"
    )


def test_a_second_rkd_delete_moves_the_moment_on(
    sandbox: Sandbox, daemon: Daemon, raw_push: Push
) -> None:
    """Two deletions in a row: the second one succeeds (meta's erased_ms is replaced, not
    inserted twice) and an event dated between the two is refused, one dated after is
    stored."""
    assert 0 == sandbox.rkd("delete", "--confirm").returncode
    between = frame(ThinkToolCompleted(tool_name="between", duration_ms=1))
    time.sleep(0.01)
    proc = sandbox.rkd("delete", "--confirm")
    assert 0 == proc.returncode, proc.stderr
    raw_push([between, *events(3, "after")])
    settle(daemon, lambda: daemon.counter("accepted") >= 3, "the events taken")
    assert (3, 1) == (sandbox.count("1"), daemon.counter("rejected.before_deletion"))


# -- the client ledger across restarts ------------------------------------------------------


def test_a_crash_after_a_clean_restart_counts_no_stored_event_as_lost_in_transit(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A long-running application across three daemons: the first stops cleanly (it
    saves the ledger: the connection stored up to 1), the second stores 500 more events
    and is killed (SIGKILL: it saves nothing, so the first's ledger stays in meta), the
    third gets the next 500. It loads the first's stale ledger, sees numbers 502.. after
    1, and counts 500 events `transport.gap` ("lost in transit" in `rkd status`) though
    every one of them is stored: stored + counted as lost = 1,501 for 1,001 sent.
    (README: after a crash a *claim* may count a stored event; this is no claim, and it
    happens to every connection alive across the crash.)"""
    first = start_daemon()
    app = sandbox.spawn_python("""
        import sys
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("warmup")
        tel.flush()
        print("ready", flush=True)
        for r in range(2):
            sys.stdin.readline()
            for i in range(500):
                tel.thinktool(f"round{r}", duration_ms=i)
            tel.flush(2.0)
            print("sent", flush=True)
        sys.stdin.readline()
    """)
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    assert 0 == first.stop()[0]
    second = start_daemon()
    app.stdin.write("go\n")
    app.stdin.flush()
    assert "sent\n" == app.stdout.readline()
    settle(second, lambda: sandbox.count(THINKTOOL) >= 501, "round 0 stored")
    second.kill()
    third = start_daemon()
    app.stdin.write("go\n")
    app.stdin.flush()
    assert "sent\n" == app.stdout.readline()
    go(app)
    settle(third, lambda: sandbox.count(THINKTOOL) >= 1_001, "round 1 stored")
    gap = third.counter("transport.gap")  # (third also reports the second's crash)
    assert (1_001, 0, 0) == (sandbox.count(THINKTOOL), third.lost(), gap)


def test_frames_lost_at_a_clean_restart_are_not_counted_lost_and_stored(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: Push
) -> None:
    """A client's numbers 1..10 are stored; the daemon stops cleanly (ledger saved); 11..20
    were in the client's zmq pipe when the socket closed (lost with the pipe), and the
    client sends 21..30 to the new daemon, then spools its copies of 11..20 (the new pid
    confirms nothing of the old one's, as Transport.confirmed() does). All 30 are stored,
    yet the new daemon, which loaded the old ledger (high 10), counts 11..20 as
    `transport.gap`. Before the ledger was kept, a new daemon started the connection at
    the number it first saw, and counted nothing."""
    first = start_daemon()
    frames = events(30)
    raw_push([batch(4242, 1, frames[:10])])
    settle(first, lambda: sandbox.count("1") >= 10, "1..10 stored")
    assert 0 == first.stop()[0]
    second = start_daemon()
    raw_push([batch(4242, 21, frames[20:])])
    assert 10 == write_spool(sandbox.settings.spool_dir, frames[10:20])
    settle(second, lambda: sandbox.count("1") >= 30, "all 30 stored")
    assert (30, 0, 0) == (sandbox.count("1"), second.lost(), second.counter("transport.gap"))


def test_a_ledger_from_another_version_is_ignored(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: Push
) -> None:
    """The database holds a client_ledger another version wrote (a map, 5-tuples, a
    number where a list is expected, ids out of range): the daemon starts, ignores it,
    and a connection it lists is counted afresh (no gap, no claim)."""
    import apsw
    import msgspec

    start_daemon().stop()
    for saved in (
        msgspec.msgpack.encode({"4343": [1, 5, 5]}),
        msgspec.msgpack.encode([(4343, 1, 5, 5, 0)]),
        msgspec.msgpack.encode([(4343, 1, 1 << 63, 5)]),
        msgspec.msgpack.encode(7),
        b"\xc1",
    ):
        db = apsw.Connection(str(sandbox.settings.db_path))
        with db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('client_ledger', ?)", (saved,))
        db.close()
        d = start_daemon()
        raw_push([batch(4343, 1000, events(2))])
        settle(d, lambda d=d: d.counter("accepted") >= 2, "the batch taken")
        assert (0, 0) == (d.counter("transport.gap"), d.counter("rejected.bad_number"))
        assert 0 == d.stop()[0]


# -- the refused-id memory ------------------------------------------------------------------


def test_a_refused_copy_with_a_legitimate_id_does_not_stop_it_being_stored(
    sandbox: Sandbox, daemon: Daemon, raw_push: Push
) -> None:
    """A hostile application of the same user sends events that are refused (in rkd's own
    name) under the ids of another application's events before those arrive. The
    refused-id memory only turns a *refusal* into a duplicate: the legitimate events are
    stored, each once, and the hostile ones are counted as refused."""
    ids = [uuid.uuid4() for _ in range(5)]
    rkd = Source(product="rkd", version="1.0.0", os="linux", arch="x86_64",
                 python_version="3.11.7")  # fmt: skip
    payload = ThinkToolCompleted(tool_name="gigathink", duration_ms=1)
    raw_push([frame(payload, event_id=i, source=rkd) for i in ids])
    wait_for(lambda: daemon.counter("rejected.daemon_owned") == 5, what="the forgeries refused")
    raw_push([batch(4444, 1, [frame(payload, event_id=i) for i in ids])])
    settle(daemon, lambda: sandbox.count("1") >= 5, "the real events stored")
    assert [(5, 5)] == sandbox.query("SELECT count(*), count(DISTINCT event_id) FROM events "
                                     "WHERE event_type = 'thinktool_completed'")  # fmt: skip
    assert (5, 0) == (daemon.counter("rejected.daemon_owned"), daemon.counter("socket.duplicates"))


def test_the_refused_id_memory_outlives_a_clean_restart(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: Push
) -> None:
    """An event refused before a clean restart and sent again after it (a client's
    spooled copy, say) is counted once: as refused, then as a duplicate. The memory
    used to start empty with each daemon, so the copy was counted as refused again."""
    rkd = Source(product="rkd", version="1.0.0", os="linux", arch="x86_64",
                 python_version="3.11.7")  # fmt: skip
    forged = frame(ThinkToolCompleted(tool_name="gigathink", duration_ms=1), source=rkd)
    d = start_daemon()
    raw_push([forged])
    wait_for(lambda: d.counter("rejected.daemon_owned") == 1, what="the forgery refused")
    assert 0 == d.stop()[0]
    d = start_daemon()
    raw_push([forged])
    wait_for(lambda: d.counter("socket.duplicates") == 1, what="the copy seen as one")
    assert 1 == d.counter("rejected.daemon_owned")
