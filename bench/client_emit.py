"""The client's cost to its host application: per-event hot path, import, one-shot CLI.

    python bench/client_emit.py            # 50k events per hot-path row, 15 runs per startup row
    python bench/client_emit.py --quick    # 10k events, 7 runs

Hot path: with the real daemon running, time ``Telemetry.emit(payload)``,
``tel.thinktool(...)`` and a ``with tel.command(...)`` block in this process, in batches
of 500; report the median and p99 of the per-batch means in µs per event, as wall time
(what the application feels) and as this thread's CPU time (the code's own cost, even when
other processes load the machine). The raw ceilings use the same frame: a bare pyzmq PUSH
``send(NOBLOCK)`` to a bare PULL process, and msgspec's encode of the same envelope alone.
rkd's ``Transport.send`` of the pre-encoded frame is timed too, to split emit into its
encoding and its transport share. All rows are interleaved batch by batch, so a noisy
neighbour or CPU drift slows every row alike instead of one row's whole run.

Startup: the extra wall time of ``python -c "<code>"`` over ``python -c pass`` (medians of
interleaved runs) for importing rkd.client and building ``Telemetry`` with a kill switch
set and with telemetry on, and for a one-shot process that emits one event and exits.
Two floor rows time the imports rkd cannot do without, with no rkd code at all:
``import msgspec`` (the schema's types; it loads typing, inspect, uuid, datetime and
decimal) and ``import msgspec, zmq`` (the transport). The enabled and one-shot rows
cannot go below them; the difference is rkd's own cost.

Measured twice: with this interpreter (where rkd may be an editable install, whose import
hook already loads pathlib, re and importlib.util into *bare* Python), and with a
throwaway venv that sees rkd as a plain folder on sys.path, as after ``pip install .``.
Bytecode is cached in the sandbox (PYTHONPYCACHEPREFIX) as for any installed package,
even where the environment sets PYTHONDONTWRITEBYTECODE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import resource
import site
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import rkd.cli
import rkd.client
import rkd.daemon
import zmq
from _harness import (
    PYTHON,
    Daemon,
    Sandbox,
    load_note,
    machine,
    median,
    percentile,
    table,
    verdict,
    wait_for,
)
from rkd.client import Telemetry
from rkd.client.schema import ENVELOPES, Source, ThinkToolCompleted
from rkd.client.transport import Transport

EMIT_TARGET_US = 5.0
IMPORT_DISABLED_TARGET_MS = 5.0
IMPORT_ENABLED_TARGET_MS = 40.0
ONE_SHOT_TARGET_MS = 60.0
SETTLE_ROUNDS = 2  # rounds (one batch per row) between waits for the daemon to catch up:
# 4 rows x 500 x 2 = 4,000 frames, well inside what the queues hold (SNDHWM 10k + RCVHWM 1k)
SEND_ROW = "ceiling: bare pyzmq PUSH send(NOBLOCK)"
ENCODE_ROW = "ceiling: msgspec encode(envelope) alone"
WARMUP = 2  # untimed interpreter runs per startup variant (they fill the bytecode cache)

PAYLOAD = ThinkToolCompleted(
    tool_name="gigathink", step_count=3, duration_ms=1200, tokens_used=900,
    confidence_score=0.8, coherence_score=0.7, depth_score=0.6,
)  # fmt: skip


# -- timing ----------------------------------------------------------------------------------


class Means:
    """Per-batch means in µs per call: wall clock, and this thread's CPU time."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []


def batch_means_us(run_batch: Callable[[int], None], events: int, batch: int) -> Means:
    """Run ``events`` calls as ``events // batch`` timed batches."""
    m = Means()
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for _ in range(events // batch):
        w0, c0 = wall(), cpu()
        run_batch(batch)
        w1, c1 = wall(), cpu()
        m.wall.append((w1 - w0) / batch / 1000)
        m.cpu.append((c1 - c0) / batch / 1000)
    return m


def daemon_settler(daemon: Daemon, clients: Sequence[Any] = ()) -> Callable[[int], None]:
    """``settle(n)`` waits until the daemon has accepted ``n`` more events in all.

    Run every few rounds, so the daemon's backlog stays far below the queue limits and
    nothing spills to the spool. The FlushRequest also stores anything that did spill.
    The ``clients`` (Telemetry or Transport objects) are flushed first: frames the
    daemon's queue did not take wait in their backlog, and the client has no thread to
    send them while this one waits.
    """

    def received() -> int:  # taken (from the socket or the spool), or dropped as a copy
        c = daemon.status().counters
        # The transport rows send one frame again and again: the daemon keeps the first
        # and counts the rest as duplicates (exact dedup), which is still a frame taken.
        return int(c.get("accepted", 0) + c.get("socket.duplicates", 0)
                   + c.get("spool.duplicates", 0))  # fmt: skip

    state = {"expected": received()}

    def caught_up() -> bool:
        daemon.flush()
        return received() >= state["expected"]

    def settle(n: int) -> None:
        state["expected"] += n
        for c in clients:
            c.flush(1.0)
        wait_for(caught_up, 60, f"the daemon to accept {state['expected']} events", every=0.05)

    return settle


class Row:
    """One hot-path variant: a callable running ``n`` calls, and its measurements.

    ``to_daemon``: its events go to the daemon (counted for settling); ``judged``: the
    emit target applies to it (the ceilings and the transport alone are for comparison).
    """

    def __init__(
        self, name: str, run: Callable[[int], None], to_daemon: bool, judged: bool = False
    ) -> None:
        self.name, self.run, self.to_daemon, self.judged = name, run, to_daemon, judged
        self.means = Means()


def interleave(rows: list[Row], events: int, batch: int, settle: Callable[[int], None]) -> None:
    """One batch of each row per round, so drift on a shared machine hits all rows alike.

    Every ``SETTLE_ROUNDS`` rounds the daemon is given time to catch up (untimed).
    """
    sent = 0
    rounds = events // batch
    for r in range(rounds):
        for row in rows:
            m = batch_means_us(row.run, batch, batch)
            row.means.wall += m.wall
            row.means.cpu += m.cpu
            sent += batch if row.to_daemon else 0
        if (r + 1) % SETTLE_ROUNDS == 0 or r + 1 == rounds:
            settle(sent)
            sent = 0


# -- hot path --------------------------------------------------------------------------------


def emit_batch(tel: Telemetry) -> Callable[[int], None]:
    """``tel.emit`` of a pre-built payload: the generic entry point."""
    emit, p = tel.emit, PAYLOAD

    def run(n: int) -> None:
        for _ in range(n):
            emit(p)

    return run


def thinktool_batch(tel: Telemetry) -> Callable[[int], None]:
    """``tel.thinktool(...)``: builds the payload Struct, then emits."""
    thinktool = tel.thinktool

    def run(n: int) -> None:
        for i in range(n):
            thinktool("gigathink", step_count=3, duration_ms=i, tokens_used=900,
                      confidence_score=0.8)  # fmt: skip

    return run


def command_batch(tel: Telemetry) -> Callable[[int], None]:
    """A ``with tel.command(...)`` block recording tokens: what a CLI command pays."""
    command = tel.command

    def run(n: int) -> None:
        for _ in range(n):
            with command("think", profile="balanced") as cmd:
                cmd.tokens(input=1500, output=800, model="claude-3-5-sonnet-20241022")

    return run


def transport_batch(t: Transport, frame: bytes) -> Callable[[int], None]:
    """rkd's ``Transport.send`` of a pre-encoded frame: the transport's share of emit."""

    def run(n: int) -> None:
        send = t.send
        for _ in range(n):
            send(frame)

    return run


def encode_batch(env: Any) -> Callable[[int], None]:
    """Ceiling: msgspec MessagePack encode of the same envelope, nothing else."""
    encode = msgspec.msgpack.Encoder().encode

    def run(n: int) -> None:
        for _ in range(n):
            encode(env)

    return run


def hot_path(sb: Sandbox, daemon: Daemon, events: int, batch: int) -> tuple[list[Row], str]:
    """Time every way of sending an event, and the raw ceilings, interleaved."""
    env = envelope()
    frame = msgspec.msgpack.encode(env)
    tel = Telemetry(product="reasonkit-core", version="1.0.0", env=sb.env)
    assert tel.enabled, tel.disabled_reason
    transport = Transport(sb.settings.runtime_dir, sb.settings.spool_dir)
    settle = daemon_settler(daemon, (tel, transport))
    tel.emit(PAYLOAD)  # connects and imports zmq: a one-off, not the hot path
    transport.send(frame)
    tel.flush(1.0)  # the very first frame waits in the backlog until the pipe is up
    transport.flush(1.0)
    settle(2)
    with RawPush(sb, frame) as raw:
        rows = [
            Row("Telemetry.emit(payload)", emit_batch(tel), True, judged=True),
            Row("tel.thinktool(...)", thinktool_batch(tel), True, judged=True),
            Row("with tel.command(...): cmd.tokens(...)", command_batch(tel), True, judged=True),
            Row("  rkd Transport.send(frame) alone", transport_batch(transport, frame), True),
            Row(SEND_ROW, raw.run, False),
            Row(ENCODE_ROW, encode_batch(env), False),
        ]
        interleave(rows, events, batch, settle)
    t = tel._transport  # a read-only peek at the delivery counts: did anything spill?
    note = (f"rkd client: sent {t.sent + transport.sent:,}, spooled {t.spooled + transport.spooled}"
            f", dropped {sum(t.drops.values()) + sum(transport.drops.values())}; "
            f"raw receiver: {raw.note}")  # fmt: skip
    tel.close()
    transport.close()
    return rows, note


# -- raw ceiling: bare pyzmq -----------------------------------------------------------------


def envelope() -> Any:
    """The envelope rkd builds for PAYLOAD, with the same source fields."""
    source = Source(product="reasonkit-core", version="1.0.0", os="linux",
                    arch=platform.machine(), python_version=platform.python_version())  # fmt: skip
    return ENVELOPES[ThinkToolCompleted](
        event_id=uuid.uuid4(), timestamp=dt.datetime.now(dt.UTC), source=source, payload=PAYLOAD
    )


RECEIVER = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PULL)
s.setsockopt(zmq.RCVHWM, 100_000)
s.bind(sys.argv[1])
print("ready", flush=True)
n = 0
while s.recv() != b"END":
    n += 1
print(n, flush=True)
"""


class RawPush:
    """Bare pyzmq: PUSH ``send(frame, NOBLOCK)`` to a bare PULL in another process, over ipc.

    The socket options are the client's (IMMEDIATE, SNDHWM 10k, LINGER 0), so the only
    difference from rkd's transport is rkd's own code. The receiver counts what arrived.
    """

    def __init__(self, sb: Sandbox, frame: bytes) -> None:
        endpoint = f"ipc://{sb.root}/raw.sock"
        self.frame, self.dropped, self.note = frame, 0, ""
        self.recv = sb.popen(RECEIVER, endpoint)
        assert self.recv.stdout is not None and self.recv.stdout.readline().strip() == "ready"
        self.ctx = zmq.Context(io_threads=1)
        self.sock = self.ctx.socket(zmq.PUSH)
        for opt, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.SNDHWM, 10_000)):
            self.sock.setsockopt(opt, value)
        self.sock.connect(endpoint)
        wait_for(self._try, 5.0, "the raw PUSH socket to connect", every=0.001)

    def _try(self) -> bool:
        try:
            self.sock.send(self.frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def run(self, n: int) -> None:
        send, frame, noblock, again = self.sock.send, self.frame, zmq.NOBLOCK, zmq.Again
        for _ in range(n):
            try:
                send(frame, noblock)
            except again:
                self.dropped += 1

    def __enter__(self) -> RawPush:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.sock.setsockopt(zmq.SNDTIMEO, 10_000)  # the receiver drains; never hang
            self.sock.send(b"END")
            out = self.recv.communicate(timeout=30)[0].strip()
            self.note = f"received {int(out or 0):,}, dropped {self.dropped}"
        finally:
            if self.recv.poll() is None:
                self.recv.kill()
                self.recv.wait()
            self.sock.close(linger=0)
            self.ctx.term()


# -- startup ---------------------------------------------------------------------------------

CONSTRUCT = """
import rkd.client
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
assert tel.enabled is {enabled}, tel.disabled_reason
"""
ONE_SHOT = CONSTRUCT.format(enabled=True) + 'tel.thinktool("oneshot", step_count=1)\n'
VARIANTS = {
    "bare": ("pass", {}),
    "disabled": (CONSTRUCT.format(enabled=False), {"DO_NOT_TRACK": "1"}),
    "enabled": (CONSTRUCT.format(enabled=True), {}),
    "one-shot": (ONE_SHOT, {}),
    "floor-msgspec": ("import msgspec", {}),
    "floor-zmq": ("import msgspec, zmq", {}),
}
FLOORS = {  # untargeted rows: what the mandatory third-party imports cost alone
    "floor-msgspec": "  floor: import msgspec (no rkd code)",
    "floor-zmq": "  floor: import msgspec, zmq (no rkd code)",
}


def installed_python(sb: Sandbox) -> str:
    """A venv seeing rkd as plain folders on sys.path (no editable-install import hook).

    Symlinks ``rkd/client`` etc. to the source folders, as scripts/lint does, and puts
    this interpreter's site-packages (msgspec, pyzmq, ...) after them.
    """
    tree = sb.root / "tree" / "rkd"
    tree.mkdir(parents=True)
    for pkg in (rkd.client, rkd.daemon, rkd.cli):
        (tree / pkg.__name__.split(".")[1]).symlink_to(next(iter(pkg.__path__)))
    venv = sb.root / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "rkd.pth").write_text("\n".join([str(tree.parent), *site.getsitepackages()]))
    return str(venv / "bin" / "python")


def child_cpu_ms() -> float:
    """User + system CPU of all waited-for children so far, in ms."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def startup_runs(sb: Sandbox, python: str, runs: int) -> dict[str, Means]:
    """Wall and CPU ms of fresh interpreters, interleaved so drift hits every variant alike."""
    env = {k: v for k, v in sb.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(sb.root / "pycache")
    times = {k: Means() for k in VARIANTS}
    for i in range(runs + WARMUP):
        for name, (code, extra) in VARIANTS.items():
            c0, t0 = child_cpu_ms(), time.perf_counter()
            subprocess.run([python, "-c", textwrap.dedent(code)], env={**env, **extra},
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            if i >= WARMUP:
                times[name].wall.append((time.perf_counter() - t0) * 1000)
                times[name].cpu.append(child_cpu_ms() - c0)
    return times


def one_shot_stored(sb: Sandbox, daemon: Daemon) -> int:
    """How many one-shot events reached the database (each run sends exactly one)."""
    import apsw

    daemon.flush()
    db = apsw.Connection(str(sb.settings.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        sql = "SELECT count(*) FROM events WHERE json_extract(payload, '$.tool_name') = 'oneshot'"
        return int(db.execute(sql).get)  # type: ignore[arg-type]
    finally:
        db.close()


# -- report ----------------------------------------------------------------------------------


def report_hot(rows: list[Row], frame_len: int, note: str) -> None:
    by = {r.name: r.means for r in rows}
    send, enc = by[SEND_ROW], by[ENCODE_ROW]
    raw, raw_cpu = median(send.wall) + median(enc.wall), median(send.cpu) + median(enc.cpu)
    out = []
    for r in rows:
        med, cpu = median(r.means.wall), median(r.means.cpu)
        judged = r.judged
        out.append([r.name, f"{med:.2f}", f"{percentile(r.means.wall, 99):.2f}", f"{cpu:.2f}",
                    f"≤ {EMIT_TARGET_US:g}" if judged else "",
                    verdict(med, EMIT_TARGET_US) if judged else "",
                    f"{med / raw:.1f}x", f"{cpu / raw_cpu:.1f}x"])  # fmt: skip
    table(f"Hot path, µs per event (frame {frame_len} bytes; 'vs raw' divides by bare send + "
          f"encode = {raw:.2f} µs wall, {raw_cpu:.2f} µs CPU)",
          ["what", "median", "p99", "CPU median", "target", "", "vs raw", "CPU vs raw"],
          out)  # fmt: skip
    print(note)


def report_startup(label: str, times: dict[str, Means], runs: int, stored: str) -> None:
    bare, bare_cpu = median(times["bare"].wall), median(times["bare"].cpu)
    rows = [["bare python -c pass (absolute)", f"{bare:.1f}", f"{bare_cpu:.1f}", "", ""]]
    for name, what, target in (
        ("disabled", "import + Telemetry(), DO_NOT_TRACK=1", IMPORT_DISABLED_TARGET_MS),
        ("enabled", "import + Telemetry(), enabled", IMPORT_ENABLED_TARGET_MS),
        ("one-shot", f"one-shot: emit 1 event, exit ({stored} stored)", ONE_SHOT_TARGET_MS),
    ):
        extra = median(times[name].wall) - bare
        cpu = median(times[name].cpu) - bare_cpu
        rows.append([what, f"{extra:.1f}", f"{cpu:.1f}", f"≤ {target:g}", verdict(extra, target)])
    for name, what in FLOORS.items():
        extra = median(times[name].wall) - bare
        rows.append([what, f"{extra:.1f}", f"{median(times[name].cpu) - bare_cpu:.1f}", "", ""])
    table(f"Startup, {label}: ms over bare Python (medians of {runs} interleaved runs)",
          ["what", "extra wall ms", "extra CPU ms", "target", ""], rows)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="events per hot-path row")
    ap.add_argument("--batch", type=int, default=500, help="events per timed batch")
    ap.add_argument("--runs", type=int, default=15, help="interpreter runs per startup row")
    ap.add_argument("--quick", action="store_true", help="10k events, 7 runs")
    a = ap.parse_args()
    if a.quick:
        a.events, a.runs = 10_000, 7
    print(f"rkd client benchmark: {machine()}\nbefore the run: {load_note()}")
    with Sandbox() as sb, Daemon(sb) as daemon:
        rows, note = hot_path(sb, daemon, a.events, a.batch)
        startups = []
        for label, python in (("this interpreter", PYTHON),
                              ("installed layout", installed_python(sb))):  # fmt: skip
            before = one_shot_stored(sb, daemon)
            times = startup_runs(sb, python, a.runs)
            stored = f"{one_shot_stored(sb, daemon) - before}/{a.runs + WARMUP}"
            startups.append((label, times, stored))
    report_hot(rows, len(msgspec.msgpack.encode(envelope())), note)
    for label, times, stored in startups:
        report_startup(label, times, a.runs, stored)
    print(f"\nafter the run: {load_note()}")


if __name__ == "__main__":
    main()
