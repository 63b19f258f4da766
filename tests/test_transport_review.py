"""Review of transport v2 (issue 15): each test is a behaviour the design promises.

Real daemon subprocess, real sockets, real database, as tests/test_transport.py. A test
marked xfail(strict) is a bug found in review: it fails today and must pass once fixed.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from rkd.client.control import DaemonUnavailable, request
from rkd.client.dropfile import DROPS_FILE, Claim, add_drops
from rkd.client.wire import BATCH_TAG, StatusRequest, array_header

from tests.conftest import Daemon, Sandbox, go, wait_for
from tests.samples import batch, events, ready_client

Push = Callable[[list[bytes]], None]


@contextmanager
def drops_file_locked(sandbox: Sandbox) -> Iterator[None]:
    """Hold the drops file's flock, as any process of the user's (or a client stopped
    with ^Z inside add_drops) can."""
    assert add_drops(sandbox.settings.spool_dir, {"other": 1})  # the file exists
    fd = os.open(sandbox.settings.spool_dir / DROPS_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- the batch-hold rule -------------------------------------------------------------------


def test_a_long_running_app_does_not_hold_its_last_event(sandbox: Sandbox, daemon: Daemon) -> None:
    """An application that emits two events back to back and then does other work for a
    while: both reach the daemon within a second (not at its next event, hours later,
    or never if it is killed meanwhile)."""
    app = sandbox.spawn_python("""
        import sys, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("warmup")
        tel.flush()
        time.sleep(0.05)
        tel.thinktool("first")
        tel.thinktool("second")  # within 2 ms of the first: held for the next event
        print("sent", flush=True)
        sys.stdin.readline()  # the application goes on with other work
    """)
    try:
        assert app.stdout is not None
        assert "sent\n" == app.stdout.readline()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sandbox.count("1") < 3:
            daemon.flush()
            time.sleep(0.1)
        assert 3 == sandbox.count("1")
    finally:
        app.kill()
        app.communicate()


def test_a_first_burst_reaches_the_daemon_without_a_later_event(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A long-running process emits 1,000 events as it starts, then works on: they reach
    the daemon within seconds. Today the first send finds the connection not yet up
    (IMMEDIATE), the burst goes to the backlog, and the backlog is only drained by a
    later send: none comes, so none is stored (and a SIGKILL loses all 1,000 uncounted)."""
    app = sandbox.spawn_python("""
        import sys
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(1_000):
            tel.thinktool("gigathink", duration_ms=i)
        print("sent", flush=True)
        sys.stdin.readline()
    """)
    try:
        assert app.stdout is not None
        assert "sent\n" == app.stdout.readline()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sandbox.count("1") < 1_000:
            daemon.flush()
            time.sleep(0.1)
        assert 1_000 == sandbox.count("1")
    finally:
        app.kill()
        app.communicate()


def test_a_forked_worker_loses_no_event_it_emitted(sandbox: Sandbox, daemon: Daemon) -> None:
    """multiprocessing's fork workers leave by os._exit, so no atexit runs in them: what
    a worker emitted must not wait for close() (with v1 each event left at once)."""
    sandbox.python("""
        import multiprocessing, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("parent")
        tel.flush()

        def work():
            tel.thinktool("child-warmup")
            time.sleep(0.05)
            tel.thinktool("child-a")
            tel.thinktool("child-b")
            tel.thinktool("child-c")
            time.sleep(0.5)  # zmq's io thread has long sent whatever it was given

        p = multiprocessing.get_context("fork").Process(target=work)
        p.start()
        p.join(20)
        assert p.exitcode == 0
        tel.close()
    """)
    daemon.flush()
    assert 5 == sandbox.count("1")


# -- claims in the drops file --------------------------------------------------------------


def test_a_claim_is_counted_on_a_quiet_daemon(
    sandbox: Sandbox, daemon: Daemon, raw_push: Push
) -> None:
    """A client left a claim (numbers 1..10, 4 of them received) and no client sends
    anything after it: `rkd status` shows the 6 lost within a few scans, without anyone
    running `rkd flush` (which drains the socket and so moves the "read empty" mark)."""
    raw_push([batch(41, 1, events(4))])
    wait_for(lambda: daemon.counter("accepted") == 4, what="four received")
    assert add_drops(sandbox.settings.spool_dir, {}, [Claim(41, 1, 10, "unconfirmed")])
    wait_for(lambda: daemon.counter("client_drop.unconfirmed") == 6, timeout=15,
             what="6 lost, with only status requests")  # fmt: skip


def test_a_claim_left_at_shutdown_is_not_counted_twice(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: Push
) -> None:
    """The daemon is stopped (a restart, a logout) after a client left a claim and before
    its next 5 s scan: stored + counted as lost = sent still holds. Today the next daemon
    reads the claim with an empty ledger and counts the 4 events it stored as lost."""
    first = start_daemon()
    raw_push([batch(51, 1, events(4))])
    wait_for(lambda: first.counter("accepted") == 4, what="four received")
    assert add_drops(sandbox.settings.spool_dir, {}, [Claim(51, 1, 10, "unconfirmed")])
    code, log = first.stop()
    assert 0 == code, log
    second = start_daemon()
    wait_for(
        lambda: second.flush() >= 0 and second.lost() > 0, timeout=20, what="the claim settled"
    )
    time.sleep(0.5)
    assert (4, 6) == (sandbox.count("1"), second.lost())


# -- the drops file's lock: the exit budget and the daemon's loop ----------------------------


def test_close_does_not_wait_for_the_drops_file_lock(sandbox: Sandbox) -> None:
    """No daemon, the spool full: close() counts the loss in the drops file. If another
    process holds that file's lock, close() still returns within the exit budget (today
    it blocks until the lock is released: forever, if the holder is stopped)."""
    with drops_file_locked(sandbox):
        app = sandbox.spawn_python("""
            import time
            from rkd.client import Telemetry, spool
            spool.write_spool.__defaults__ = (0,)  # the spool at its cap
            tel = Telemetry(product="reasonkit-core", version="1.0.0")
            for i in range(10):
                tel.thinktool("gigathink", duration_ms=i)
            t = time.perf_counter(); tel.close(); print(time.perf_counter() - t, flush=True)
        """)
        try:
            out, err = app.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            app.kill()
            app.communicate()
            out, err = "", "close() still blocked after 5 s"
    assert out and float(out) < 0.3, err


def test_the_daemon_answers_while_another_process_holds_the_drops_file(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A process of the user's holds the drops file's lock (or a client was stopped with
    ^Z inside add_drops): the daemon's loop goes on, and `rkd status` answers."""
    with drops_file_locked(sandbox):
        time.sleep(6)  # past the next spool scan, which reads the drops file
        try:
            request(sandbox.settings.runtime_dir, StatusRequest(), timeout_ms=2000)
            answered = True
        except DaemonUnavailable:
            answered = False
    assert answered


# -- hostile batches -------------------------------------------------------------------------


def test_batches_of_tiny_events_do_not_starve_the_control_socket(
    sandbox: Sandbox, daemon: Daemon, raw_push: Push
) -> None:
    """A client sends batches within MAX_BATCH_BYTES that hold ~90,000 one-byte "events"
    each (clients send at most 64): the daemon still answers a control request (another
    client's 200 ms exit confirmation, `rkd status`) within a second."""
    n = 90_000
    hostile = BATCH_TAG + b"\xcf" + (61).to_bytes(8, "big") + b"\x01" + array_header(n)
    raw_push([hostile + b"\xc0" * n] * 16)
    wait_for(lambda: daemon.counter("rejected.malformed_batch") > 0, what="the daemon at work")
    t = time.monotonic()
    request(sandbox.settings.runtime_dir, StatusRequest(), timeout_ms=10_000)
    assert time.monotonic() - t < 1.0


# -- close(): atomic, and within the budget ----------------------------------------------------


def test_an_event_sent_while_close_runs_is_not_lost_silently(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Another thread emits all through close() (the daemon frozen, its queue full, so
    events wait in the backlog). Before, close() flushed, then released the lock, then
    tore down: an event landing in between stayed in a transport no longer started.
    Now every event is delivered, spooled, or counted: stored + counted as lost = sent."""
    n = 25_000
    app = sandbox.spawn_python(
        ready_client(f"""
        import threading
        for i in range({n}):
            tel.thinktool("gigathink", duration_ms=i)
        other, stop = [0], threading.Event()

        def emit_meanwhile():
            while not stop.is_set():
                tel.thinktool("other_thread")
                other[0] += 1
                time.sleep(0.0005)

        thread = threading.Thread(target=emit_meanwhile)
        thread.start()
        time.sleep(0.01)
        tel.close()
        time.sleep(0.01)  # and a little after close()
        stop.set()
        thread.join()
        print(other[0], flush=True)
    """)
    )
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    with daemon.frozen():
        out = go(app)
    sent = n + 1 + int(out)
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count("1") + daemon.lost() == sent,
             timeout=30, what="stored + lost = sent")  # fmt: skip
    time.sleep(1)
    daemon.flush()
    assert sent == sandbox.count("1") + daemon.lost(), out


def test_close_with_many_unconfirmed_copies_stays_within_the_exit_budget(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """The daemon frozen with ~18,000 events in flight: close() spools every copy (fsync
    included) and tears down within the budget (generous bound for a loaded machine), and
    nothing is lost or doubled once the daemon runs again."""
    n = 20_000
    app = sandbox.spawn_python(
        ready_client(f"""
        for i in range({n}):
            tel.thinktool("gigathink", duration_ms=i)
        t = time.perf_counter(); tel.close(); took = time.perf_counter() - t
        print(took, tel._transport.spooled, flush=True)
    """)
    )
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    with daemon.frozen():
        out = go(app)
    took, spooled = out.split()
    assert float(took) < 0.3 and int(spooled) > 0, out
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count("1") == n + 1, timeout=30,
             what="every event stored")  # fmt: skip
    assert [(n + 1,)] == sandbox.query(
        "SELECT count(DISTINCT event_id) FROM events WHERE event_type = 'thinktool_completed'"
    )


# -- rkd delete, restarts, late events -------------------------------------------------------


def test_rkd_delete_is_not_undone_by_a_client_s_copies(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """Events stored, then `rkd delete`; the daemon restarts (an upgrade, a crash) before
    the application exits. The application's unconfirmed copies of the erased events must
    not bring them back: nothing recorded before the deletion is stored after it (the
    copies are spooled, then refused as `rejected.before_deletion`)."""
    first = start_daemon()
    app = sandbox.spawn_python("""
        import sys
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        import time
        for i in range(1_000):
            tel.thinktool("gigathink", duration_ms=i)
        time.sleep(0.01)
        tel.thinktool("gigathink")  # ships the open batch and the backlog
        print(tel._transport.sent, flush=True)
        sys.stdin.readline()
        tel.close()
        print(tel._transport.spooled, flush=True)
    """)
    assert app.stdout is not None and app.stdin is not None
    assert "1001\n" == app.stdout.readline()
    wait_for(lambda: first.flush() >= 0 and sandbox.count("1") == 1_001, what="all stored")
    proc = sandbox.rkd("delete", "--confirm")
    assert 0 == proc.returncode, proc.stderr
    assert 0 == sandbox.count("1")
    code, log = first.stop()
    assert 0 == code, log
    second = start_daemon()
    app.stdin.write("go\n")
    app.stdin.flush()
    out, err = app.communicate(timeout=30)
    assert 0 == app.returncode, err
    spooled = int(out)  # copies the client could not get confirmed by the new daemon
    wait_for(lambda: second.flush() >= 0
             and second.counter("rejected.before_deletion") == spooled > 0,
             what="the copies refused")  # fmt: skip
    assert 0 == sandbox.count("1")


def test_a_daemon_killed_and_restarted_while_a_client_runs_loses_and_doubles_nothing(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """The daemon is SIGKILLed with events taken but not written, another starts, the
    client goes on and exits: every event is stored exactly once (the new daemon's pid
    makes the client spool its unconfirmed copies; dedup keeps one of each)."""
    first = start_daemon()
    app = sandbox.spawn_python("""
        import sys
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(3_000):
            tel.thinktool("before", duration_ms=i)
        print("sent", flush=True)
        sys.stdin.readline()
        for i in range(3_000):
            tel.thinktool("after", duration_ms=i)
        tel.close()
    """)
    assert app.stdout is not None and app.stdin is not None
    assert "sent\n" == app.stdout.readline()
    first.kill()
    second = start_daemon()
    app.stdin.write("go\n")
    app.stdin.flush()
    _, err = app.communicate(timeout=30)
    assert 0 == app.returncode, err
    wait_for(lambda: second.flush() >= 0 and sandbox.count("1") >= 6_000, timeout=20,
             what="every event stored")  # fmt: skip
    time.sleep(0.5)
    second.flush()
    assert [(6_000, 6_000)] == sandbox.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
        " WHERE event_type = 'thinktool_completed'"
    )
    assert 0 == second.lost()


def test_an_event_emitted_by_a_later_atexit_handler_is_stored(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """An application registered its own atexit handler before its first event (so it runs
    after rkd's close(), atexit being LIFO) and emits a last event there: it is stored,
    or at least counted."""
    sandbox.python("""
        import atexit
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        atexit.register(lambda: tel.thinktool("at_exit"))
        for i in range(10):
            tel.thinktool("gigathink", duration_ms=i)
    """)
    time.sleep(0.5)
    daemon.flush()
    assert 11 == sandbox.count("1") + daemon.lost()


@pytest.mark.parametrize("ask", [
    {"op": "confirm", "client": -1, "upto": (1 << 64) - 1, "flush": True},
    {"op": "confirm", "client": (1 << 64) - 1, "upto": -(1 << 63), "flush": True},
    {"op": "confirm", "client": 0},
    {"op": "confirm", "client": 1.5},
    {"op": "confirm", "client": "1", "upto": [1]},
])  # fmt: skip
def test_a_hostile_confirm_request_gets_an_answer_and_confirms_nothing(
    sandbox: Sandbox, daemon: Daemon, raw_push: Push, ask: dict[str, Any]
) -> None:
    """Any ConfirmRequest, however odd its fields, is one answer (stored 0, or "malformed"),
    and the daemon goes on confirming real clients."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.connect(f"ipc://{sandbox.settings.runtime_dir / 'control.sock'}")
        sock.send(msgspec.msgpack.encode(ask))
        reply = msgspec.msgpack.decode(sock.recv())
    finally:
        sock.close(linger=0)
        ctx.term()
    assert reply.get("stored", 0) == 0 and (reply["ok"] or reply["error"]), reply
    raw_push([batch(71, 1, events(3))])
    from rkd.client.wire import ConfirmRequest

    good = ConfirmRequest(client=71, upto=3, flush=True)
    wait_for(lambda: request(sandbox.settings.runtime_dir, good).stored == 3, what="confirmed")


def test_a_rejected_event_is_counted_once_when_its_copy_is_spooled(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """An application whose clock runs 3 days ahead sends 100 events while the daemon is
    frozen, and exits: the daemon gets the frames (they were in its socket) and the
    spooled copies. 100 events were refused, so `rejected.bad_timestamp` is 100, not 200
    (the daemon confirms rejected numbers, and remembers the ids it refused, so the
    copies count as duplicates)."""
    app = sandbox.spawn_python(
        ready_client("""
        import datetime as dt
        from rkd.client import schema as s
        from tests.samples import frame
        ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
        for i in range(100):
            event = s.ThinkToolCompleted(tool_name="skewed", duration_ms=i)
            tel._transport.send(frame(event, timestamp=ahead))
        tel.close()
        print(tel._transport.spooled, flush=True)
    """)
    )
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    with daemon.frozen():
        out = go(app)
    assert "100\n" == out  # every copy spooled: none was confirmed
    wait_for(lambda: daemon.flush() >= 0 and daemon.counter("rejected.bad_timestamp") >= 100,
             what="the frames refused")  # fmt: skip
    time.sleep(0.5)
    daemon.flush()  # ingests the spool
    assert 100 == daemon.counter("rejected.bad_timestamp")


def test_a_forged_gap_does_not_count_an_absurd_loss(
    sandbox: Sandbox, daemon: Daemon, raw_push: Push
) -> None:
    """A frame whose number jumps by 2^62 on a known connection is not 2^62 lost events
    (no client can have sent them: a real gap is at most what can be in flight). As with
    the drops file's counts and claims, an absurd count is clamped or refused."""
    raw_push([batch(81, 1, events(1)), batch(81, 1 << 62, events(1, "after"))])
    wait_for(lambda: daemon.counter("accepted") == 2, what="both frames taken")
    assert daemon.counter("transport.gap") <= 1 << 32


def test_a_claim_after_a_daemon_restart_counts_only_what_was_never_stored(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: Push
) -> None:
    """A client's numbers 1..4 were stored by a daemon that then restarted (an upgrade);
    the client leaves with 1..10 unconfirmed and unspoolable (the new daemon frozen, the
    spool full) and claims them. The new daemon counts 6 lost, not 10: stored + counted
    as lost = sent across a restart too."""
    first = start_daemon()
    raw_push([batch(91, 1, events(4))])
    wait_for(lambda: first.flush() >= 0 and sandbox.count("1") == 4, what="four stored")
    code, log = first.stop()
    assert 0 == code, log
    second = start_daemon()
    assert add_drops(sandbox.settings.spool_dir, {}, [Claim(91, 1, 10, "unconfirmed")])
    wait_for(
        lambda: second.flush() >= 0 and second.lost() > 0, timeout=20, what="the claim settled"
    )
    assert (4, 6) == (sandbox.count("1"), second.lost())


BEFORE_V2 = "d416aba"  # the last commit before transport v2


@pytest.fixture
def old_rkd(tmp_path: Any) -> str:
    """A PYTHONPATH that runs the daemon as it was before transport v2 (the package the
    user upgraded with pip while the service kept running)."""
    import pathlib

    repo = pathlib.Path(__file__).resolve().parent.parent
    src, path = tmp_path / "src", tmp_path / "path" / "rkd"
    src.mkdir()
    path.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", BEFORE_V2, "client", "daemon", "cli", "server"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {BEFORE_V2} is not in this checkout")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    for part in ("client", "daemon", "cli", "server"):
        (path / part).symlink_to(src / part)
    return str(path.parent)


def test_a_new_client_with_a_daemon_not_yet_restarted_loses_nothing_silently(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], old_rkd: str
) -> None:
    """`pip install -U` while the daemon (a systemd service) still runs the previous
    version: an application on the new client sends 30,000 events and exits. Every one
    is stored, or counted as lost. Today the old daemon refuses every batch as
    `rejected.malformed_report` and answers no ConfirmRequest; only the last 24,000
    copies reach it (spooled at exit), the rest are claimed in a drops-file format it
    cannot read."""
    daemon = start_daemon(PYTHONPATH=old_rkd)
    sandbox.python("""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(30_000):
            tel.thinktool("gigathink", duration_ms=i)
        tel.close()
    """)
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count("1") >= 24_000, timeout=30,
             what="the spooled copies stored")  # fmt: skip
    time.sleep(6)  # a spool scan: the drops file, if the old daemon can read it
    daemon.flush()
    assert 30_000 == sandbox.count("1") + daemon.lost(), daemon.status().counters
