"""Transport v2 (issue 15): numbered batches, "stored up to N", exact loss accounting.

Every test runs the real client in its own process against the real daemon; the
hostile ones push raw frames at the daemon's socket as another program of the user's
could."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, cast

import msgspec
import pytest
from rkd.client import schema as s
from rkd.client.wire import (
    BATCH_EVENTS,
    MAX_BATCH_BYTES,
    ConfirmRequest,
    batch_prefix,
)

from tests.conftest import Daemon, Sandbox, go, wait_for
from tests.samples import batch, events, frame, leaving_client, ready_client

APP = "event_type = 'thinktool_completed'"


def stored_and_lost(sandbox: Sandbox, daemon: Daemon) -> tuple[int, dict[str, int]]:
    daemon.flush()
    c = daemon.status().counters
    return sandbox.count(APP), {k: v for k, v in c.items() if k.startswith("client_drop.")}


def test_frozen_daemon_and_full_spool_stored_plus_lost_equals_sent(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Issue 15: the daemon frozen (SIGSTOP) and the spool full while a process sends
    15,010 events and exits. Before, ~100 were stored, ~9,900 copies were discarded by
    close() and the daemon counted no loss. Now the process leaves within 200 ms, and once
    the daemon runs again, stored + counted as lost = sent, exactly: events still queued
    for the daemon are stored, the numbers it never got are counted, none twice."""
    app = sandbox.spawn_python("""
        import sys, time
        from rkd.client import Telemetry, spool
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(5_000):
            tel.thinktool("gigathink", duration_ms=i)
        tel.flush()
        print("ready", tel._transport.stored, flush=True)
        sys.stdin.readline()
        spool.write_spool.__defaults__ = (0,)  # the spool at its cap: nothing more fits
        for i in range(15_010):
            tel.thinktool("gigathink", duration_ms=i)
        t = time.perf_counter(); tel.close(); took = time.perf_counter() - t
        print(took, tel._transport.spooled, flush=True)
    """)
    assert app.stdout is not None and app.stdin is not None
    assert "ready 5000\n" == app.stdout.readline()  # the first 5,000 confirmed stored
    with daemon.frozen():
        out = go(app)
    took, spooled = out.split()
    assert float(took) < 0.2 and "0" == spooled

    def settled() -> Any:
        stored, lost = stored_and_lost(sandbox, daemon)
        return stored + sum(lost.values()) == 20_010 and (stored, lost)

    stored, lost = wait_for(settled, timeout=30, what="stored + lost = sent")
    assert 5_000 < stored < 20_010 and lost.get("client_drop.unconfirmed", 0) > 0, (stored, lost)
    time.sleep(1)
    assert (stored, lost) == stored_and_lost(sandbox, daemon)  # and it stays so
    assert [(stored,)] == sandbox.query(f"SELECT count(DISTINCT event_id) FROM events WHERE {APP}")


def test_a_flush_confirms_stored_up_to_the_last_event(sandbox: Sandbox, daemon: Daemon) -> None:
    """tel.flush() ends with "stored up to N" for the last event sent: written to the
    database (not merely received), and every copy is let go."""
    out = sandbox.python(
        """
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(1_000):
            tel.thinktool("gigathink", duration_ms=i)
        tel.flush()
        t = tel._transport
        print(t.sent, t.stored, len(t._unconfirmed), flush=True)
        import os, sqlite3
        db = sqlite3.connect(f"file:{os.environ['DB']}?mode=ro", uri=True)
        print(db.execute("SELECT count(*) FROM events WHERE event_type = 'thinktool_completed'").fetchone()[0])
    """,
        DB=str(sandbox.settings.db_path),
    ).stdout.split()
    assert ["1000", "1000", "0", "1000"] == out


def test_a_burst_goes_in_batches(sandbox: Sandbox, daemon: Daemon) -> None:
    """Several events per frame: 10,000 events in at most a few hundred frames, and a
    sparse event (after a quiet moment) is not held back for the next one."""
    out = sandbox.python("""
        import time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        t = tel._transport
        for i in range(10_000):
            tel.thinktool("gigathink", duration_ms=i)
        time.sleep(0.01)
        tel.thinktool("sparse")
        print(len(t._batch), flush=True)
        tel.close()
    """).stdout
    assert "0\n" == out  # the sparse event left at once
    daemon.flush()
    assert 10_001 == sandbox.count(APP)
    frames = daemon.status().counters
    assert frames.get("accepted") == 10_001


def test_an_error_event_is_never_held_in_a_batch(sandbox: Sandbox, daemon: Daemon) -> None:
    out = sandbox.python("""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(10):
            tel.thinktool("gigathink", duration_ms=i)
        tel.error("timeout", code="llm_timeout")
        print(len(tel._transport._batch), flush=True)
    """).stdout
    assert "0\n" == out


def test_confirmation_is_per_connection(sandbox: Sandbox, daemon: Daemon) -> None:
    """The daemon's answer is about one connection: another client's numbers (or a made-up
    id) are not confirmed by it."""
    from rkd.client.control import request

    c1, c2 = 11, 12
    push = _pusher(sandbox)
    push([batch(c1, 1, events(5)), batch(c2, 1, events(3, "other"))])
    ask = ConfirmRequest(client=c1, upto=5, flush=True)
    wait_for(
        lambda: request(sandbox.settings.runtime_dir, ask).stored == 5, what="c1 stored up to 5"
    )
    assert (
        3
        == request(
            sandbox.settings.runtime_dir, ConfirmRequest(client=c2, upto=3, flush=True)
        ).stored
    )
    assert 0 == request(sandbox.settings.runtime_dir, ConfirmRequest(client=99)).stored


@pytest.mark.parametrize(("name", "make", "counter"), [
    ("garbage after the tag", lambda: b"\x94\xa5batch\xc1\xc1\xc1", "rejected.malformed_batch"),
    ("client 0", lambda: batch(1, 1, events(1)).replace(batch_prefix(1), batch_prefix(0)), "rejected.malformed_batch"),
    ("seq 0", lambda: batch(3, 0, events(1)), "rejected.malformed_batch"),
    ("seq near 2^63", lambda: batch(3, (1 << 63) - 1, events(2)), "rejected.malformed_batch"),
    ("negative seq", lambda: batch(3, -5, events(1)), "rejected.malformed_batch"),
    ("events not a list", lambda: batch_prefix(3) + b"\x01\x05", "rejected.malformed_batch"),
    ("oversized", lambda: batch(3, 1, [b"\xc4" + b"\x00"] * 0 + [frame(s.HelpViewed(topic="x"))] * (MAX_BATCH_BYTES // 100)), "rejected.oversized_batch"),
    ("deeply nested", lambda: batch_prefix(3) + b"\x01" + b"\x91" * 2000 + b"\x00", "rejected.malformed_batch"),
])  # fmt: skip
def test_a_hostile_batch_is_one_counted_rejection(
    sandbox: Sandbox, daemon: Daemon, name: str, make: Any, counter: str
) -> None:
    push = _pusher(sandbox)
    push([make(), batch(77, 1, events(2))])
    wait_for(lambda: daemon.counter(counter) == 1 and daemon.counter("accepted") == 2, what=name)


def test_hostile_items_inside_a_batch_are_rejected_one_by_one(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A batch is decoded event by event: a report, a nested batch, a non-map or a
    duplicate inside it is one rejection each; the good events of the batch are stored,
    once. (Bytes that are not MessagePack at all make the whole batch malformed.)"""
    good = events(3)
    inner = [
        good[0],
        msgspec.msgpack.encode(["client_report", {"spool_full": 1 << 40}]),
        batch(5, 1, events(1, "nested")),
        msgspec.msgpack.encode(42),
        good[1],
        good[0],  # the same event again
        good[2],
    ]
    push = _pusher(sandbox)
    push([batch(9, 1, inner)])
    wait_for(lambda: daemon.counter("accepted") == 3, what="the three good events")
    c = daemon.status().counters
    assert c.get("rejected.malformed", 0) == 3 and c.get("socket.duplicates", 0) == 1, c
    assert not [k for k in c if k.startswith("client_drop")]  # a report inside is no report
    daemon.flush()
    assert [(3, 3)] == sandbox.query(
        f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE {APP}"
    )


def test_a_gap_in_a_connections_numbers_is_counted(sandbox: Sandbox, daemon: Daemon) -> None:
    push = _pusher(sandbox)
    push([batch(21, 1, events(4)), batch(21, 10, events(2, "after"))])
    wait_for(lambda: daemon.counter("transport.gap") == 5, what="numbers 5..9 counted as a gap")
    assert 6 == daemon.counter("accepted")
    daemon.flush()
    assert "Client Drops:   lost in transit 5\n" in sandbox.rkd("status").stdout


def test_a_claim_counts_only_what_the_daemon_never_received(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A client that left claims numbers 1..10 of its connection (sent, unconfirmed, not
    spooled); the daemon received 1..4 of them: 6 are counted as lost, after it settles."""
    from rkd.client.dropfile import Claim, add_drops

    push = _pusher(sandbox)
    push([batch(31, 1, events(4))])
    wait_for(lambda: daemon.counter("accepted") == 4, what="four received")
    assert add_drops(sandbox.settings.spool_dir, {}, [Claim(31, 1, 10, "unconfirmed"),
                                                      Claim(32, 5, 6, "unconfirmed")])  # fmt: skip
    wait_for(lambda: daemon.flush() >= 0 and daemon.counter("client_drop.unconfirmed") == 8,
             timeout=20, what="6 + 2 lost")  # fmt: skip
    time.sleep(0.5)
    assert 8 == daemon.counter("client_drop.unconfirmed")


def _pusher(sandbox: Sandbox) -> Any:
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"ipc://{sandbox.settings.runtime_dir / 'events.sock'}")

    def push(frames: list[bytes]) -> None:
        for f in frames:
            sock.send(f)

    return push


def test_batch_constants_fit_the_daemon() -> None:
    assert BATCH_EVENTS <= 64 and MAX_BATCH_BYTES < 1024 * 1024  # under zmq's MAXMSGSIZE


@pytest.mark.parametrize("frozen", [True, False])
def test_four_clients_leaving_together_each_take_under_the_exit_budget(
    sandbox: Sandbox, daemon: Daemon, frozen: bool
) -> None:
    """Issue 15: four clients exiting together took 251-349 ms against a frozen daemon
    (spooling and teardown came after the 200 ms deadline). Now each close() stays
    within the budget, teardown included; the bound here is generous for a loaded CI
    machine (the figures are in bench/RESULTS.md). Nothing is lost or doubled."""
    apps = [sandbox.spawn_python(leaving_client(5_000, "leaving")) for _ in range(4)]
    for app in apps:
        assert app.stdout is not None
        assert "ready\n" == app.stdout.readline()
    if frozen:
        os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        for app in apps:
            assert app.stdin is not None
            app.stdin.write("go\n")
            app.stdin.flush()
        took = []
        for app in apps:
            out, err = app.communicate(timeout=60)
            assert 0 == app.returncode, err
            took.append(float(out))
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert max(took) < 0.3, took
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count(APP) == 20_004, timeout=30,
             what="every event stored")  # fmt: skip
    assert [(20_004,)] == sandbox.query(f"SELECT count(DISTINCT event_id) FROM events WHERE {APP}")


def test_a_clean_restart_keeps_what_each_connection_stored(
    sandbox: Sandbox, start_daemon: Any
) -> None:
    """The ledger outlives a clean restart (an upgrade): a client that asks the new daemon
    learns "stored up to 5" and frees its copies instead of spooling them."""
    from rkd.client.control import request

    first = start_daemon()
    push = _pusher(sandbox)
    push([batch(41, 1, events(5))])
    wait_for(lambda: first.flush() >= 0 and sandbox.count(APP) == 5, what="five stored")
    code, log = first.stop()
    assert 0 == code, log
    start_daemon()
    answer = request(sandbox.settings.runtime_dir, ConfirmRequest(client=41, upto=5))
    assert 5 == answer.stored


@pytest.mark.parametrize(
    "saved",
    [
        b"\x91" * 5000 + b"\xc0",  # nested 5,000 deep
        b"\xff\xfe",  # not msgpack
        msgspec.msgpack.encode([[41, 9, 5]]),  # a first number past what was written
        msgspec.msgpack.encode([[41, 0, 5], [-1, 1, 5], [2**64 - 1, 1, 5], [41, 1, 2**63]]),
        msgspec.msgpack.encode({"41": 5}),
        "a string, not bytes",
    ],
    ids=["deep", "garbage", "inconsistent", "out-of-range", "wrong-shape", "text"],
)
def test_a_damaged_saved_ledger_is_ignored(
    sandbox: Sandbox, start_daemon: Any, saved: bytes | str
) -> None:
    """The database is an entry point too: a saved ledger that is damaged or forged is
    ignored (the daemon starts, and confirms nothing it did not store)."""
    from rkd.client.control import request

    second = _restarted_with_meta(sandbox, start_daemon, "client_ledger", saved)
    answer = request(sandbox.settings.runtime_dir, ConfirmRequest(client=41, upto=5))
    assert 0 == answer.stored
    assert second.status().counters.get("internal_error.start", 0) == 0


def test_an_emit_never_waits_for_another_threads_flush(sandbox: Sandbox, daemon: Daemon) -> None:
    """One thread calls tel.flush(0.5) while the daemon is frozen (its queue full, so the
    flush waits its whole budget for the daemon): another thread's emits meanwhile stay
    fast. Before, the flush held the client's lock all that time and every emit of the
    program waited for it."""
    app = sandbox.spawn_python(
        ready_client("""
        import threading
        for i in range(30_000):
            tel.thinktool("fill", duration_ms=i)
        flusher = threading.Thread(target=tel.flush, args=(0.5,))
        t0 = time.perf_counter()
        flusher.start()
        time.sleep(0.01)
        worst = 0.0
        while flusher.is_alive():
            t = time.perf_counter()
            tel.thinktool("meanwhile")
            worst = max(worst, time.perf_counter() - t)
            time.sleep(0.001)
        print(worst * 1000, (time.perf_counter() - t0) * 1000, flush=True)
    """)
    )
    assert app.stdout is not None
    assert "ready\n" == app.stdout.readline()
    with daemon.frozen():
        out = go(app)
    worst_ms, flush_ms = map(float, out.split())
    assert flush_ms > 300, out  # the flush did wait for the daemon
    assert worst_ms < 50, out


def test_a_flush_with_no_daemon_spools_at_once(sandbox: Sandbox) -> None:
    """No daemon: tel.flush() spools what it holds at once, it does not wait out its
    budget for a daemon that is not there (generous bound for a loaded machine)."""
    out = sandbox.python("""
        import time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(10):
            tel.thinktool("no_daemon", duration_ms=i)
        t = time.perf_counter()
        tel.flush(1.0)
        print((time.perf_counter() - t) * 1000, tel._transport.spooled)
    """).stdout
    took_ms, spooled = out.split()
    assert "10" == spooled
    assert float(took_ms) < 300, out


def test_rkd_flush_takes_the_drops_file_at_once(sandbox: Sandbox, daemon: Daemon) -> None:
    """`rkd flush` writes the losses applications left in the drops file, as it ingests
    the spool: they are in the counters when it returns, not after the next 5 s scan."""
    from rkd.client.dropfile import add_drops

    assert add_drops(sandbox.settings.spool_dir, {"spool_full": 7})
    daemon.flush()
    assert 7 == daemon.counter("client_drop.spool_full")


@pytest.mark.parametrize(
    "erased",
    [2**62, -(2**62), 4_102_444_800_000, "yesterday", b"\x00" * 8, 1.5e300],
    ids=["huge", "negative", "year-2100", "text", "blob", "real"],
)
def test_a_damaged_erasure_moment_does_not_stop_the_daemon(
    sandbox: Sandbox, start_daemon: Any, erased: Any
) -> None:
    """The erasure moment is read from the database (meta erased_ms) at start: a value out
    of any date's range crashed the daemon at every start; one far in the future would
    refuse every event until then. Those, and values of the wrong type, are ignored: the
    daemon starts and stores."""
    second = _restarted_with_meta(sandbox, start_daemon, "erased_ms", erased)
    _pusher(sandbox)([batch(51, 1, events(3))])
    wait_for(lambda: second.flush() >= 0 and sandbox.count(APP) == 3, what="three stored")


def _restarted_with_meta(sandbox: Sandbox, start_daemon: Any, key: str, value: Any) -> Daemon:
    """A daemon started on a database whose meta ``key`` was set to ``value`` while none
    ran (after a first daemon made and left the database)."""
    import apsw

    first = start_daemon()
    code, log = first.stop()
    assert 0 == code, log
    db = apsw.Connection(str(sandbox.settings.db_path))
    with db:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
    db.close()
    return cast(Daemon, start_daemon())


def test_an_event_a_signal_handler_sends_inside_emit_ships_before_the_program_idles(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """A signal handler that emits while its thread is inside emit() (the transport's
    lock held) cannot take the lock: its event waits in a deque. It used to wait there
    for the next send, flush or exit, so a program that went idle after the handler kept
    it for as long as it idled. Now emit() takes it as soon as it lets the lock go."""
    app = sandbox.spawn_python("""
        import signal, sys
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        t = tel._transport
        ship = t._ship

        def ship_once_signalled(*args):
            t._ship = ship
            signal.raise_signal(signal.SIGUSR1)  # its handler runs here, the lock held
            return ship(*args)

        signal.signal(signal.SIGUSR1, lambda *_: tel.thinktool("from_handler"))
        t._ship = ship_once_signalled
        tel.thinktool("main")  # the first event after a quiet moment ships at once
        print(len(t._deferred), flush=True)
        sys.stdin.readline()  # idle until told to exit
    """)
    assert app.stdout is not None
    assert "0\n" == app.stdout.readline()  # nothing is left waiting in the client

    def stored() -> bool:
        daemon.flush()
        return sandbox.count("json_extract(payload, '$.tool_name') = 'from_handler'") == 1

    wait_for(stored, timeout=5, what="the handler's event stored while the program idles")
    go(app)
    assert 2 == sandbox.count("1")


@pytest.mark.parametrize(
    "saved",
    [b"\x01\x02\x03", b"", "a string, not bytes", 2**62, b"\xff" * 8 * 40_000],
    ids=["ragged", "empty", "text", "integer", "oversized"],
)
def test_damaged_saved_refused_ids_are_ignored_or_bounded(
    sandbox: Sandbox, start_daemon: Any, saved: bytes | str | int
) -> None:
    """The refused ids a clean stop saves are read back at start: damaged ones are
    ignored, too many are cut to the newest REFUSED_IDS_KEPT, and the daemon stores
    events as before."""
    second = _restarted_with_meta(sandbox, start_daemon, "refused_ids", saved)
    _pusher(sandbox)([batch(52, 1, events(3))])
    wait_for(lambda: second.flush() >= 0 and sandbox.count(APP) == 3, what="three stored")
    assert second.status().counters.get("internal_error.start", 0) == 0
