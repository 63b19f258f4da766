"""End-to-end throughput: client processes -> real daemon -> durable SQLite rows.

    python bench/throughput.py                      # 4 clients x 25k events
    python bench/throughput.py --clients 2 --events 10000
    python bench/throughput.py --quick              # 4 clients x 5k events

rkd: N client processes each send M ``CommandExecuted`` events through the real
``Telemetry`` client to the real daemon. The clock starts when all clients are ready and
told to go, and stops when the daemon has every event and a FlushRequest has made them
rows in the database (confirmed by ``SELECT count(*)`` on a read-only connection).
Clients stay alive until then: what is measured is throughput, not the exit path.

Raw ceilings, measured in the same run on the same machine:
  (a) bare pyzmq PUSH/PULL over ipc: N sender processes, one receiver, same frame size;
  (b) bare apsw: rows shaped like rkd's (integer key, 16-byte blob, ints, the same JSON
      text) in 100-row ``executemany`` transactions, WAL, synchronous=NORMAL.
The target is rkd >= 50% of the lower ceiling. CPU time per event (daemon, from
/proc/<pid>/stat; clients, from their own rusage) shows where the work goes and stays
meaningful when other processes load the machine. The daemon's resident memory is read
from /proc once idle after start and every 50 ms during the load (target: peak <= 60 MB).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import msgspec
import zmq
from _harness import Daemon, Sandbox, load_note, machine, table, verdict
from rkd.client.schema import CommandExecuted, Execution, Tokens

RATIO_TARGET = 0.5
RSS_TARGET_MB = 60.0
SAMPLE_SECS = 0.05
DEADLINE_SECS = 120.0

PAYLOAD = CommandExecuted(
    command="think", profile="balanced", thinktool_chain=("gigathink", "laserlogic"),
    thinktool_count=2, execution=Execution(duration_ms=2500, llm_latency_ms=2100),
    tokens=Tokens(input=1500, output=800, cached=200, model="claude-3-5-sonnet-20241022"),
)  # fmt: skip

# Prints "ready", emits on "go", pushes its backlog (what a full queue held back) to the
# daemon or the spool, prints "sent spooled dropped cpu_ms", and exits on the next line.
CLIENT = """
import resource, sys
import zmq  # imported ahead: the first send's one-off import is not throughput
from rkd.client import Telemetry
from rkd.client.schema import CommandExecuted, Execution, Tokens
tel = Telemetry(product="reasonkit-core", version="1.0.0")
assert tel.enabled, tel.disabled_reason
payload = CommandExecuted(
    command="think", profile="balanced", thinktool_chain=("gigathink", "laserlogic"),
    thinktool_count=2, execution=Execution(duration_ms=2500, llm_latency_ms=2100),
    tokens=Tokens(input=1500, output=800, cached=200, model="claude-3-5-sonnet-20241022"),
)
print("ready", flush=True)
sys.stdin.readline()
r0 = resource.getrusage(resource.RUSAGE_SELF)
emit = tel.emit
for _ in range({m}):
    emit(payload)
tel.flush()
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu_ms = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000
t = tel._transport
print(t.sent, t.spooled, sum(t.drops.values()), cpu_ms, flush=True)
sys.stdin.readline()
tel.close()
"""

SENDER = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.setsockopt(zmq.SNDHWM, 10_000)
s.connect(sys.argv[1])
frame = b"x" * int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
send = s.send
for _ in range(int(sys.argv[3])):
    send(frame)
s.close(linger=30_000)
ctx.term()
"""


# -- processes -------------------------------------------------------------------------------


def start_all(sb: Sandbox, code: str, n: int, args: tuple[str, ...] = ()) -> list[Any]:
    """Start ``n`` interpreters running ``code`` and wait until each prints ``ready``."""
    procs = [sb.popen(code, *args) for _ in range(n)]
    for p in procs:
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a child failed to start (exit {p.wait()}): {line!r}")
    return procs


def reap(procs: list[Any]) -> None:
    """Kill the children that are still running, after an error.

    A client left blocked on stdin would wake when we exit, and spool its backlog into a
    sandbox that no longer exists.
    """
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def tell(procs: list[Any]) -> float:
    """Write one line to every child (go, or exit); return the time just before."""
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return t0


def cpu_ms(pid: int) -> float:
    """User + system CPU of a live process (all its threads), in ms, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Reads the daemon's VmRSS every ``SAMPLE_SECS`` until stopped; keeps the peak."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        self.target, self.peak_kb, self.samples = daemon, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak_kb = max(self.peak_kb, self.target.rss_kb())
                self.samples += 1
            except (OSError, KeyError):
                return
            self._stop_event.wait(SAMPLE_SECS)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak_kb


# -- rkd end to end ------------------------------------------------------------------------


def stored(db_path: Path) -> int:
    """Rows of the type the clients sent, on a read-only connection.

    The daemon also writes events of its own (session_started, feature first use and
    milestones: 13 for this load); those are not the clients' events.
    """
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        sql = "SELECT count(*) FROM events WHERE event_type = 'command_executed'"
        return int(db.execute(sql).get)  # type: ignore[arg-type]
    finally:
        db.close()


def client_reports(procs: list[Any]) -> list[float]:
    """Sum the clients' "sent spooled dropped cpu_ms" lines (each prints one when done)."""
    total = [0.0, 0.0, 0.0, 0.0]
    for p in procs:
        total = [a + float(b) for a, b in zip(total, p.stdout.readline().split(), strict=True)]
    return total


def wait_all_received(daemon: Daemon, expected: int, spooled: bool) -> None:
    """Poll until the daemon holds ``expected`` events (stored or pending).

    Events a client had to spool reach the daemon only when it scans the spool (every
    5 s), so when there are any a FlushRequest makes it look now.
    """
    deadline = time.monotonic() + DEADLINE_SECS
    while True:
        st = daemon.status()
        if st.events_stored + st.pending >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"daemon has {st.events_stored + st.pending} of {expected}")
        if spooled:
            daemon.flush()
        time.sleep(SAMPLE_SECS)


def run_rkd(clients: int, events: int) -> dict[str, Any]:
    """N real clients -> real daemon -> rows; events/s, CPU per event, daemon memory."""
    with Sandbox() as sb, Daemon(sb) as daemon:
        time.sleep(0.5)
        idle_kb = daemon.rss_kb()
        procs = start_all(sb, CLIENT.format(m=events), clients)
        sampler = RssSampler(daemon)
        sampler.start()
        try:
            cpu0 = cpu_ms(daemon.pid)
            t0 = tell(procs)
            sent, spooled, dropped, client_cpu = client_reports(procs)
            expected = clients * events - int(dropped)  # `sent` also counts drop reports
            wait_all_received(daemon, expected, spooled > 0)
            daemon.flush()
            n = stored(sb.settings.db_path)
            while n < expected and time.perf_counter() - t0 < DEADLINE_SECS:
                daemon.flush()  # the daemon's own events made the wait end a little early
                n = stored(sb.settings.db_path)
            elapsed = time.perf_counter() - t0
            daemon_cpu = cpu_ms(daemon.pid) - cpu0
            tell(procs)  # now they may exit
            for p in procs:
                p.communicate(timeout=30)
        finally:
            peak_kb = sampler.stop()
            reap(procs)
        counters = daemon.status().counters
        hwm_kb = daemon.rss_kb("VmHWM")
    if not expected <= n <= clients * events:  # a drop count may include a drop report
        raise RuntimeError(f"stored {n} events, clients sent or spooled {expected}")
    return dict(rate=n / elapsed, secs=elapsed, n=n, sent=sent, spooled=spooled,
                dropped=dropped, client_cpu_us=client_cpu * 1000 / n,
                daemon_cpu_us=daemon_cpu * 1000 / n, idle_kb=idle_kb, peak_kb=peak_kb,
                hwm_kb=hwm_kb, samples=sampler.samples,
                other={k: v for k, v in counters.items() if k != "accepted"})  # fmt: skip


# -- raw ceilings ----------------------------------------------------------------------------


def frame_size() -> int:
    """Bytes of the MessagePack frame rkd sends for PAYLOAD (envelope included)."""
    import datetime as dt
    import platform
    import uuid

    from rkd.client.schema import ENVELOPES, Source

    src = Source(product="reasonkit-core", version="1.0.0", os="linux",
                 arch=platform.machine(), python_version=platform.python_version())  # fmt: skip
    env = ENVELOPES[CommandExecuted](event_id=uuid.uuid4(), timestamp=dt.datetime.now(dt.UTC),
                                     source=src, payload=PAYLOAD)  # fmt: skip
    return len(msgspec.msgpack.encode(env))


def raw_zmq(clients: int, events: int, size: int) -> float:
    """Bare pyzmq over ipc: N PUSH processes -> one PULL here; events/s received."""
    with Sandbox() as sb:
        endpoint = f"ipc://{sb.root}/raw.sock"
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 100_000)
        pull.bind(endpoint)
        procs = start_all(sb, SENDER, clients, (endpoint, str(size), str(events)))
        recv = pull.recv
        try:
            t0 = tell(procs)
            for _ in range(clients * events):
                recv()
            elapsed = time.perf_counter() - t0
            for p in procs:
                p.communicate(timeout=30)
        finally:
            reap(procs)
            pull.close(linger=0)
            ctx.term()
    return clients * events / elapsed


RAW_SCHEMA = """
CREATE TABLE events(
    id INTEGER PRIMARY KEY, event_id BLOB NOT NULL, event_type TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, session_id INTEGER NOT NULL, sequence INTEGER NOT NULL,
    source_id INTEGER NOT NULL, payload TEXT NOT NULL)
"""
RAW_INSERT = (
    "INSERT INTO events(event_id, event_type, ts_ms, session_id, sequence, source_id, payload)"
    " VALUES (?,?,?,?,?,?,?)"
)


def raw_apsw(total: int, payload_json: str, batch: int = 100) -> float:
    """Bare apsw: ``total`` rows in ``batch``-row transactions; rows/s (rows pre-built)."""
    now = time.time_ns() // 1_000_000
    rows = [(os.urandom(16), "command_executed", now + i, 1, i, 1, payload_json)
            for i in range(total)]  # fmt: skip
    with Sandbox() as sb:
        db = apsw.Connection(str(sb.root / "raw.db"))
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):  # as the daemon's storage
            db.execute(f"PRAGMA {pragma}").fetchall()
        db.execute(RAW_SCHEMA)
        t0 = time.perf_counter()
        for i in range(0, total, batch):
            with db:
                db.executemany(RAW_INSERT, rows[i : i + batch])
        elapsed = time.perf_counter() - t0
        n = db.execute("SELECT count(*) FROM events").get
        db.close()
    assert n == total
    return total / elapsed


# -- report ----------------------------------------------------------------------------------


def report(r: dict[str, Any], zmq_rate: float, apsw_rate: float, a: Any, size: int) -> None:
    lower = min(zmq_rate, apsw_rate)
    rows = [
        [f"rkd end to end ({a.clients} x {a.events:,})", f"{r['rate']:,.0f}",
         f"{r['rate'] / zmq_rate:.0%}", f"{r['rate'] / apsw_rate:.0%}",
         f"≥ {RATIO_TARGET:.0%} of lower", verdict(r["rate"] / lower, RATIO_TARGET, True)],
        ["ceiling (a): bare pyzmq PUSH/PULL ipc", f"{zmq_rate:,.0f}", "", "", "", ""],
        ["ceiling (b): bare apsw, 100-row txns", f"{apsw_rate:,.0f}", "", "", "", ""],
    ]  # fmt: skip
    table(f"Throughput, events/s (frame {size} bytes, JSON payload "
          f"{len(msgspec.json.encode(PAYLOAD))} bytes; rkd took {r['secs']:.2f} s)",
          ["what", "events/s", "vs (a)", "vs (b)", "target", ""], rows)  # fmt: skip
    cpu = [["daemon (all threads)", f"{r['daemon_cpu_us']:.1f}",
            f"{1e6 / r['daemon_cpu_us']:,.0f}"],
           ["clients (emit loop + flush, summed)", f"{r['client_cpu_us']:.1f}", ""]]  # fmt: skip
    # What the machine allows at best: every core busy with this work and nothing else.
    # The daemon's loop is one thread, so the target also bounds its own cost per event.
    cores = os.cpu_count() or 1
    per_event = r["daemon_cpu_us"] + r["client_cpu_us"]
    need = RATIO_TARGET * lower
    cpu += [[f"both, on {cores} cores at best", f"{per_event:.1f}",
             f"{cores * 1e6 / per_event:,.0f} events/s"],
            [f"daemon budget for the target ({need:,.0f} events/s, one thread)",
             f"{min(1e6 / need, cores * 1e6 / need - r['client_cpu_us']):.1f}", ""]]  # fmt: skip
    table("CPU time per stored event, µs", ["who", "µs/event", "events per CPU-second"], cpu)
    mb = 1024
    mem = [
        ["daemon RSS idle after start", f"{r['idle_kb'] / mb:.1f}", "", ""],
        [f"daemon RSS peak during load ({r['samples']} samples)", f"{r['peak_kb'] / mb:.1f}",
         f"≤ {RSS_TARGET_MB:g}", verdict(r["peak_kb"] / mb, RSS_TARGET_MB)],
        ["daemon VmHWM at the end (kernel's peak)", f"{r['hwm_kb'] / mb:.1f}",
         f"≤ {RSS_TARGET_MB:g}", verdict(r["hwm_kb"] / mb, RSS_TARGET_MB)],
    ]  # fmt: skip
    table("Daemon memory, MB", ["what", "MB", "target", ""], mem)
    print(f"\nclients: sent {r['sent']:,.0f} live, spooled {r['spooled']:,.0f}, dropped "
          f"{r['dropped']:,.0f}; daemon counters besides accepted: {r['other']}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="client processes (N)")
    ap.add_argument("--events", type=int, default=25_000, help="events per client (M)")
    ap.add_argument("--quick", action="store_true", help="5k events per client")
    a = ap.parse_args()
    if a.quick:
        a.events = 5_000
    print(f"rkd throughput benchmark: {machine()}\nbefore the run: {load_note()}")
    size = frame_size()
    r = run_rkd(a.clients, a.events)
    zmq_rate = raw_zmq(a.clients, a.events, size)
    apsw_rate = raw_apsw(a.clients * a.events, msgspec.json.encode(PAYLOAD).decode())
    report(r, zmq_rate, apsw_rate, a, size)
    print(f"after the run: {load_note()}")


if __name__ == "__main__":
    main()
