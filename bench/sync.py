"""Pro sync (issue 12): upload throughput from a backlog, and socket latency meanwhile.

    python bench/sync.py                    # 1M-event backlog, 45 s per phase (~2.5 min)
    python bench/sync.py --events 100000 --seconds 30
    python bench/sync.py --drain            # upload until the backlog is gone (long)

How the backlog is made: the real daemon starts once with sync on (it records the
consent moment: ``sync_on``, ``sync_since_ms``, the cursor at the newest event) and
stops; then N ``command_executed`` events are written straight into its database with
``Storage.write`` (around the socket, stamped after the consent moment, rowids after
the cursor), so all of them are due for upload when it starts again.

Phases, one database, one run:
  1. as shipped: the daemon uploads to the TLS test server (tests/tls_server.py, its own
     process on 127.0.0.1, TLS 1.3, checks every signature, counts each batch id once)
     for ``--seconds`` or until the backlog is gone;
  2. diagnostic (``--no-diagnostic`` skips it): the same, with the loop looking at the
     sync schedule every 10 ms instead of every second, a bench-side patch (the way
     bench/firewall.py swaps a stage): what the rest of the path (batch build, upload
     filter, gzip, TLS, signing) could carry;
  3. sync off: the same database, ``sync_enabled = false``, for the baseline latency.

Throughput is events in batches the server took (state ``sent`` in ``sync_batches``,
read on a read-only connection) per second since the daemon answered; the server's own
count is printed beside it. Latency is probed from this process the whole time, 20 times
a second, on sockets kept open: (a) a control round trip (``SyncRequest``: the daemon
drains its event socket and answers; the loop's responsiveness), (b) one event PUSHed
then a ``FlushRequest``, timed until the reply says it is written (durable).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import apsw
import msgspec
import zmq
from _harness import Daemon, Sandbox, load_note, machine, percentile, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.tls_server and tests.samples

from rkd.client.clock import now_ms  # noqa: E402
from rkd.client.schema import ENVELOPES, CommandExecuted, Execution, Tokens  # noqa: E402
from rkd.client.wire import (  # noqa: E402
    CONTROL_SOCKET,
    EVENTS_SOCKET,
    FlushRequest,
    Reply,
    SyncRequest,
)
from rkd.daemon.storage import Record, SessionRow, Storage  # noqa: E402

from tests import tls_server  # noqa: E402
from tests.samples import SOURCE, frame  # noqa: E402

PROBE_EVERY_SECS = 0.05
POLL_EVERY_SECS = 0.25
PLANT_CHUNK = 10_000
LOST_SECS = 2.0
STEP_PATCH = "import rkd.daemon.service as s\ns.SYNC_CHECK_SECS = 0.01\n"
KEY_ENV = {"RK_TELEMETRY_SYNC_KEY_ID": tls_server.KEY_ID,
           "RK_TELEMETRY_SYNC_SECRET": tls_server.SECRET}  # fmt: skip

PAYLOAD = CommandExecuted(
    command="think", profile="balanced", thinktool_chain=("gigathink", "laserlogic"),
    thinktool_count=2, execution=Execution(duration_ms=2500, llm_latency_ms=2100),
    tokens=Tokens(input=1500, output=800, cached=200, model="claude-3-5-sonnet-20241022"),
)  # fmt: skip

# The test server in its own process (its decoding must not share our GIL with the
# probes). Keeps a count per batch instead of every event as a dict: 1M of those is
# gigabytes. Prints the port; on a line from us prints "batches events requests bad_sig".
SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests import tls_server

class Slim:
    def __init__(self, batch_id, events, ok, headers):
        self.batch_id, self.events, self.signature_ok = batch_id, [None] * len(events), ok

tls_server.Received = Slim
certs = tls_server.make_certs(Path(sys.argv[2]))
with tls_server.serve(certs) as srv:
    print(srv.port, flush=True)
    while sys.stdin.readline():
        with srv.lock:
            n = sum(len(b.events) for b in srv.batches.values())
            bad = sum(1 for r in srv.requests if not r.signature_ok)
            print(len(srv.batches), n, len(srv.requests), bad, flush=True)
"""


# -- set-up ---------------------------------------------------------------------------------


class TestServer:
    """tests/tls_server.py in a child process."""

    def __init__(self, sb: Sandbox) -> None:
        self.certs = sb.root / "certs"
        self.proc = sb.popen(SERVER, str(ROOT), str(self.certs))
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.ca = self.certs / "ca.pem"

    def counts(self) -> tuple[int, int, int, int]:
        """(batches taken, events in them, requests, requests with a bad signature)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        a, b, c, d = (int(x) for x in self.proc.stdout.readline().split())
        return a, b, c, d

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def write_config(sb: Sandbox, server: TestServer, on: bool) -> None:
    path = sb.root / "config" / "reasonkit" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        # The default 100 MB cap would prune most of a 1M backlog before it leaves
        # (retention wins: counted as sync_expired_unsynced); raised so all of it stays.
        f"[telemetry]\nsync_enabled = {'true' if on else 'false'}\nmax_db_size_mb = 4000\n"
        f'sync_endpoint = "https://127.0.0.1:{server.port}"\n'
        f'[telemetry.sync]\nca_file = "{server.ca}"\ninterval_secs = 1\n'
        "max_batch_events = 1000\n"
    )


def plant(db_path: Path, n: int) -> float:
    """Write ``n`` events straight into the database, now (after the consent moment);
    return the seconds it took."""
    t0 = time.perf_counter()
    storage = Storage(db_path)
    t = now_ms()
    sess = SessionRow(rowid=None, uuid=str(uuid.uuid4()), started_ms=t, last_ms=t, events=0)
    make = ENVELOPES[CommandExecuted]
    when = dt.datetime.now(dt.UTC)
    try:
        for start in range(0, n, PLANT_CHUNK):
            records = [Record(make(event_id=uuid.uuid4(), timestamp=when, source=SOURCE,
                                   payload=PAYLOAD), sess, i, t)
                       for i in range(start, min(n, start + PLANT_CHUNK))]  # fmt: skip
            storage.write(records, {}, t)
    finally:
        storage.close()
    return time.perf_counter() - t0


def meta_since(db_path: Path) -> tuple[Any, Any, Any]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        get = {k: v for k, v in db.execute("SELECT key, value FROM meta")}
        return get.get("sync_on"), get.get("sync_since_ms"), get.get("sync_cursor")
    finally:
        db.close()


# -- measuring --------------------------------------------------------------------------------


class Progress:
    """What has left, from ``sync_batches`` and the cursor, on a read-only connection."""

    def __init__(self, db_path: Path) -> None:
        self.db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
        self.db.setbusytimeout(2000)

    def read(self) -> tuple[int, int, int, int]:
        """(events sent, batches sent, batches pending, events after the cursor)."""
        sent, batches = self.db.execute(
            "SELECT coalesce(sum(events), 0), count(*) FROM sync_batches WHERE state = 'sent'"
        ).fetchone()  # type: ignore[misc]
        pending = self.db.execute(
            "SELECT count(*) FROM sync_batches WHERE state = 'pending'").get  # fmt: skip
        cursor = self.db.execute("SELECT value FROM meta WHERE key = 'sync_cursor'").get
        newest = self.db.execute("SELECT max(id) FROM events").get
        left = int(newest or 0) - int(cursor) if isinstance(cursor, int) else 0  # type: ignore[arg-type]
        return int(sent), int(batches), int(pending), left  # type: ignore[arg-type]

    def expired(self) -> int:
        """Events pruned before they were put in a batch."""
        n = self.db.execute("SELECT value FROM meta WHERE key = 'sync_expired_unsynced'").get
        return n if isinstance(n, int) else 0

    def close(self) -> None:
        self.db.close()


class Prober:
    """Latency probes on sockets kept open: a control round trip, and push-to-durable."""

    def __init__(self, sb: Sandbox, db: apsw.Connection) -> None:
        run = sb.settings.runtime_dir
        self.db = db  # read-only
        self.ctx = zmq.Context()
        self.req = self.ctx.socket(zmq.REQ)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.setsockopt(zmq.RCVTIMEO, 30_000)
        self.req.connect(f"ipc://{run / CONTROL_SOCKET}")
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"ipc://{run / EVENTS_SOCKET}")
        self.rtt: list[float] = []
        self.durable: list[float] = []
        self.reflush = 0  # flushes that came before the pushed event: asked again
        self.lost = 0  # pushed events no flush wrote within LOST_SECS

    def ask(self, req: Any) -> Reply:
        self.req.send(msgspec.msgpack.encode(req))
        return msgspec.msgpack.decode(self.req.recv(), type=Reply)

    def probe(self, i: int) -> None:
        """Alternately one control round trip, and one event pushed until durable."""
        if i % 2 == 0:
            t = time.perf_counter()
            self.ask(SyncRequest(token=1))
            self.rtt.append(time.perf_counter() - t)
            return
        before = self.newest()
        t = time.perf_counter()
        self.push.send(frame(PAYLOAD))  # a new event id each time: each is stored
        # Written by this flush, or already by the daemon on its own (it does so when a
        # flush is due anyway): the newest rowid moved past what it was before the push.
        while self.ask(FlushRequest()).flushed < 1 and self.newest() <= before:
            self.reflush += 1
            if time.perf_counter() - t > LOST_SECS:
                self.lost += 1
                return
        self.durable.append(time.perf_counter() - t)

    def newest(self) -> int:
        n = self.db.execute("SELECT max(id) FROM events").get
        return n if isinstance(n, int) else 0

    def close(self) -> None:
        self.req.close(linger=0)
        self.push.close(linger=0)
        self.ctx.term()


def ms(xs: list[float], q: float) -> str:
    return f"{percentile(xs, q) * 1000:.1f}" if xs else "-"


def phase(sb: Sandbox, name: str, seconds: float, drain: bool, patch: str = "",
          uploading: bool = True) -> dict[str, Any]:  # fmt: skip
    """Start the daemon, probe latency and watch the upload for ``seconds`` (or until
    the backlog is gone), stop it; figures of the phase."""
    t_start = time.perf_counter()
    daemon = Daemon(sb, timeout=300, patch=patch)
    up_secs = time.perf_counter() - t_start
    try:
        progress = Progress(sb.settings.db_path)
    except BaseException:
        daemon.stop()
        raise
    prober = Prober(sb, progress.db)
    try:
        sent0, batches0, _, left0 = progress.read()
        t0 = time.perf_counter()
        cpu0 = cpu_secs(daemon.pid)
        last = (t0, sent0, batches0, left0)
        i, next_poll = 0, t0
        done = drained = False
        while not done:
            now = time.perf_counter()
            if now >= next_poll:
                next_poll = now + POLL_EVERY_SECS
                sent, batches, pending, left = progress.read()
                if sent != last[1]:
                    last = (now, sent, batches, left)
                if uploading and left == 0 and pending == 0 and sent > sent0:
                    done = drained = True
                if now - t0 >= seconds and not drain:
                    done = True
            prober.probe(i)
            i += 1
            time.sleep(max(0.0, PROBE_EVERY_SECS - (time.perf_counter() - now)))
        elapsed = time.perf_counter() - t0
        cpu = cpu_secs(daemon.pid) - cpu0
        sent, batches, pending, left = progress.read()
        counters = daemon.status().counters
        expired = progress.expired()
        db_mb = sum(f.stat().st_size for f in sb.settings.db_path.parent.glob("*.db*")) / 2**20
    finally:
        prober.close()
        progress.close()
        daemon.stop()
    active = last[0] - t0  # until the last batch the server took
    events = sent - sent0
    return dict(name=name, up_secs=up_secs, secs=elapsed, events=events,
                batches=batches - batches0, rate=events / active if active > 0 else 0.0,
                batch_rate=(batches - batches0) / active if active > 0 else 0.0,
                left=left, pending=pending, cpu=cpu, rtt=prober.rtt, durable=prober.durable,
                reflush=prober.reflush, lost=prober.lost, sent_total=sent, drained=drained, expired=expired, db_mb=db_mb,
                sync_counters={k: v for k, v in counters.items() if k != "accepted"},
                )  # fmt: skip


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- report -------------------------------------------------------------------------------


def report(phases: list[dict[str, Any]], a: Any, plant_secs: float,
           server: tuple[int, ...]) -> None:  # fmt: skip
    rows = []
    for p in phases:
        if p["name"] == "sync off":
            continue
        eta = p["left"] / p["rate"] if p["rate"] else float("inf")
        rows.append([p["name"], f"{p['events']:,}", f"{p['batches']:,}", f"{p['secs']:.1f}",
                     f"{p['rate']:,.0f}", f"{p['batch_rate']:.2f}",
                     "yes" if p["drained"] else f"{p['left']:,} ({eta / 60:.0f} min more)",
                     f"{p['cpu'] / p['events'] * 1e6:.0f}" if p["events"] else "-"])  # fmt: skip
    table(f"Upload from a {a.events:,}-event backlog to the TLS test server (127.0.0.1, "
          "TLS 1.3, max_batch_events 1000)",
          ["phase", "events sent", "batches", "secs", "events/s", "batches/s",
           "drained / left", "daemon CPU µs/event"], rows)  # fmt: skip
    base = next(p for p in phases if p["name"] == "sync off")
    lat = []
    for p in phases:
        r_rtt = percentile(p["rtt"], 99) / percentile(base["rtt"], 99)
        r_dur = percentile(p["durable"], 99) / percentile(base["durable"], 99)
        lat.append([p["name"], f"{len(p['rtt']) + len(p['durable'])}",
                    ms(p["rtt"], 50), ms(p["rtt"], 99), f"{r_rtt:.2f}",
                    ms(p["rtt"], 100), ms(p["durable"], 50), ms(p["durable"], 99), f"{r_dur:.2f}",
                    f"{p['up_secs']:.1f}"])  # fmt: skip
    table("Daemon socket latency while uploading, ms (probes 20/s; ratio = p99 / p99 with sync off)",
          ["phase", "probes", "ctl p50", "ctl p99", "ratio", "ctl max", "durable p50", "durable p99",
           "ratio", "start s"], lat)  # fmt: skip
    print(f"\nplanting {a.events:,} events with Storage.write took {plant_secs:.1f} s")
    print("test server: {} batches taken, {:,} events, {} requests, {} bad signatures"
          .format(*server))  # fmt: skip
    for p in phases:
        print(f"{p['name']}: daemon counters {p['sync_counters']}; flushes asked again "
              f"{p['reflush']}; probe events never written {p['lost']}; expired unsynced "
              f"{p['expired']}; batches left pending {p['pending']}; events in sent batches "
              f"{p['sent_total']:,}; database "
              f"{p['db_mb']:.0f} MB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="backlog size")
    # Under a minute each: the daemon's minute timers (flush, sessions, dedup) first fire
    # at 60 s of uptime, and the phases should be compared without them.
    ap.add_argument("--seconds", type=float, default=45.0, help="each phase (default 45)")
    ap.add_argument("--drain", action="store_true", help="phase 1 runs until the backlog is gone")
    ap.add_argument("--no-diagnostic", action="store_true", help="skip phase 2")
    a = ap.parse_args()
    print(f"rkd sync benchmark: {machine()}\nbefore the run: {load_note()}")
    with Sandbox() as sb:
        sb.env.update(KEY_ENV)
        server = TestServer(sb)
        try:
            write_config(sb, server, on=True)
            Daemon(sb).stop()  # the consent moment
            on, since, cursor = meta_since(sb.settings.db_path)
            assert on == 1 and isinstance(since, int), (on, since, cursor)
            plant_secs = plant(sb.settings.db_path, a.events)
            phases = [phase(sb, "as shipped", a.seconds, a.drain)]
            if not a.no_diagnostic and not phases[0]["drained"]:
                phases.append(phase(sb, "diagnostic: sync checked every 10 ms", a.seconds,
                                    False, patch=STEP_PATCH))  # fmt: skip
            write_config(sb, server, on=False)
            phases.append(phase(sb, "sync off", a.seconds, False, uploading=False))
            counts = server.counts()
        finally:
            server.close()
    report(phases, a, plant_secs, counts)
    print(f"after the run: {load_note()}")


if __name__ == "__main__":
    main()
