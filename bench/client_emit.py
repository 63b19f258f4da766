"""The client's cost to its host application: per-event hot path, import, one-shot CLI.

    python bench/client_emit.py            # 50k events per hot-path row, 15 runs per startup row
    python bench/client_emit.py --quick    # 10k events, 7 runs

Hot path: with the real daemon running, time ``Telemetry.emit(payload)``,
``tel.thinktool(...)`` and a ``with tel.command(...)`` block in this process, in batches;
report the median and p99 of the per-batch means (µs per event). The raw ceilings are
measured in the same run on the same frame: a bare pyzmq PUSH ``send(NOBLOCK)`` of the
pre-encoded frame, and msgspec's encode of the same envelope alone.

Startup: the extra wall time of ``python -c "<code>"`` over ``python -c pass`` (medians of
interleaved runs) for importing rkd.client and building ``Telemetry`` with a kill switch
set and with telemetry on, and for a one-shot process that emits one event and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import zmq
from _harness import (
    PYTHON,
    Daemon,
    Sandbox,
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
WARMUP = 2  # untimed interpreter runs per startup variant

PAYLOAD = ThinkToolCompleted(
    tool_name="gigathink", step_count=3, duration_ms=1200, tokens_used=900,
    confidence_score=0.8, coherence_score=0.7, depth_score=0.6,
)  # fmt: skip


# -- hot path ------------------------------------------------------------------------------


def batch_means_us(run_batch: Callable[[int], None], events: int, batch: int) -> list[float]:
    """Run ``events`` calls as ``events // batch`` timed batches; µs per call of each batch."""
    means = []
    for _ in range(events // batch):
        t0 = time.perf_counter_ns()
        run_batch(batch)
        means.append((time.perf_counter_ns() - t0) / batch / 1000)
    return means


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


def settle(daemon: Daemon, accepted: int, timeout: float = 30.0) -> None:
    """Wait until the daemon has taken ``accepted`` events, then have them written.

    Each row starts with empty queues, so one row's backlog never slows the next.
    """
    wait_for(lambda: daemon.status().counters.get("accepted", 0) >= accepted, timeout,
             f"the daemon to accept {accepted} events", every=0.05)  # fmt: skip
    daemon.flush()


def hot_path(sb: Sandbox, daemon: Daemon, events: int, batch: int) -> list[list[Any]]:
    """Time the three ways an application records an event, with the daemon running."""
    tel = Telemetry(product="reasonkit-core", version="1.0.0", env=sb.env)
    assert tel.enabled, tel.disabled_reason
    tel.emit(PAYLOAD)  # connects and imports zmq; not part of the hot path
    tel.flush(1.0)
    transport = tel._transport  # private, read only for the delivered/spooled counts
    rows, emitted = [], 1
    for name, make in (("Telemetry.emit(payload)", emit_batch),
                       ("tel.thinktool(...)", thinktool_batch),
                       ("with tel.command(...): cmd.tokens(...)", command_batch)):  # fmt: skip
        sent0, spooled0 = transport.sent, transport.spooled
        means = batch_means_us(make(tel), events, batch)
        emitted += len(means) * batch
        settle(daemon, emitted - transport.spooled)
        note = (f"sent {transport.sent - sent0}, spooled {transport.spooled - spooled0}, "
                f"dropped {sum(transport.drops.values())}")  # fmt: skip
        rows.append([name, median(means), percentile(means, 99), note])
    tel.close()
    return rows


# -- raw ceilings ----------------------------------------------------------------------------


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
n = int(sys.argv[2])
for _ in range(n):
    s.recv()
print(n, flush=True)
"""


def raw_send(sb: Sandbox, frame: bytes, events: int, batch: int) -> tuple[list[float], int]:
    """Bare pyzmq: PUSH ``send(frame, NOBLOCK)`` to a PULL in another process, over ipc.

    The socket options are the client's (IMMEDIATE, SNDHWM 10k, LINGER 0), so the only
    difference from rkd's transport is rkd's own code. Returns batch means and drops.
    """
    endpoint = f"ipc://{sb.root}/raw.sock"
    recv = subprocess.Popen([PYTHON, "-c", RECEIVER, endpoint, str(events + 1)],
                            env=sb.env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
    ctx = zmq.Context(io_threads=1)
    sock = ctx.socket(zmq.PUSH)
    for opt, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.SNDHWM, 10_000)):
        sock.setsockopt(opt, value)
    sock.connect(endpoint)
    wait_for(lambda: _try(sock, frame), 5.0, "the raw PUSH socket to connect", every=0.001)
    dropped = 0

    def run(n: int) -> None:
        nonlocal dropped
        send, noblock = sock.send, zmq.NOBLOCK
        for _ in range(n):
            try:
                send(frame, noblock)
            except zmq.Again:
                dropped += 1

    means = batch_means_us(run, events, batch)
    sock.close(linger=2000)
    ctx.term()
    recv.kill()
    recv.wait()
    return means, dropped


def _try(sock: zmq.Socket[Any], frame: bytes) -> bool:
    try:
        sock.send(frame, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


def encode_only(env: Any, events: int, batch: int) -> list[float]:
    """msgspec MessagePack encode of the same envelope, nothing else."""
    encode = msgspec.msgpack.Encoder().encode

    def run(n: int) -> None:
        for _ in range(n):
            encode(env)

    return batch_means_us(run, events, batch)


def transport_only(sb: Sandbox, daemon: Daemon, frame: bytes, events: int, batch: int) -> Any:
    """rkd's ``Transport.send`` of the pre-encoded frame: the transport's share of emit."""
    t = Transport(sb.settings.runtime_dir, sb.settings.spool_dir)
    t.send(frame)
    t.flush(1.0)
    accepted0 = daemon.status().counters.get("accepted", 0)

    def run(n: int) -> None:
        send = t.send
        for _ in range(n):
            send(frame)

    means = batch_means_us(run, events, batch)
    settle(daemon, accepted0 + events - t.spooled)
    t.close()
    return means


# -- startup ---------------------------------------------------------------------------------

CONSTRUCT = """
import rkd.client
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
assert tel.enabled is {enabled}, tel.disabled_reason
"""
ONE_SHOT = CONSTRUCT.format(enabled=True) + 'tel.thinktool("oneshot", step_count=1)\n'


def startup_runs(sb: Sandbox, runs: int) -> dict[str, list[float]]:
    """Wall ms of fresh interpreters, interleaved so drift hits every variant alike."""
    variants = {
        "bare": ("pass", {}),
        "disabled": (CONSTRUCT.format(enabled=False), {"DO_NOT_TRACK": "1"}),
        "enabled": (CONSTRUCT.format(enabled=True), {}),
        "one-shot": (ONE_SHOT, {}),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(runs + WARMUP):  # warm-up rounds: .pyc files, page cache
        for name, (code, extra) in variants.items():
            t0 = time.perf_counter()
            subprocess.run([PYTHON, "-c", textwrap.dedent(code)], env={**sb.env, **extra},
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            if i >= WARMUP:
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def one_shot_delivered(sb: Sandbox, daemon: Daemon) -> int:
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


def report_hot(rows: list[list[Any]], ceilings: dict[str, list[float]], frame_len: int) -> None:
    send, enc = median(ceilings["send"]), median(ceilings["encode"])
    out = []
    for name, med, p99, note in rows:
        out.append([name, f"{med:.2f}", f"{p99:.2f}", f"≤ {EMIT_TARGET_US:g}",
                    verdict(med, EMIT_TARGET_US), f"{med / (send + enc):.1f}x", note])  # fmt: skip
    for key, label in (("transport", "rkd Transport.send(frame) alone"),
                       ("send", "ceiling: bare pyzmq PUSH send(NOBLOCK)"),
                       ("encode", "ceiling: msgspec encode(envelope) alone")):  # fmt: skip
        m = ceilings[key]
        out.append([label, f"{median(m):.2f}", f"{percentile(m, 99):.2f}", "", "",
                    f"{median(m) / (send + enc):.1f}x", ""])  # fmt: skip
    table(f"Hot path, µs per event (frame {frame_len} bytes; ratio is to send + encode "
          f"= {send + enc:.2f} µs)",
          ["what", "median", "p99", "target", "", "vs raw", "client counts"], out)  # fmt: skip


def report_startup(times: dict[str, list[float]], runs: int, delivered: int) -> None:
    bare = median(times["bare"])
    rows = [["bare python -c pass (absolute)", f"{bare:.1f}", "", "", ""]]
    for name, label, target in (
        ("disabled", "import + Telemetry(), DO_NOT_TRACK=1", IMPORT_DISABLED_TARGET_MS),
        ("enabled", "import + Telemetry(), enabled", IMPORT_ENABLED_TARGET_MS),
        ("one-shot", f"one-shot: emit 1 event, exit ({delivered}/{runs + WARMUP} stored)",
         ONE_SHOT_TARGET_MS),
    ):  # fmt: skip
        extra = median(times[name]) - bare
        rows.append([label, f"{extra:.1f}", f"{median(times[name]):.1f}", f"≤ {target:g}",
                     verdict(extra, target)])  # fmt: skip
    table(f"Startup, ms over bare Python (median of {runs} interleaved runs each)",
          ["what", "extra ms", "absolute ms", "target", ""], rows)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="events per hot-path row")
    ap.add_argument("--batch", type=int, default=500, help="events per timed batch")
    ap.add_argument("--runs", type=int, default=15, help="interpreter runs per startup row")
    ap.add_argument("--quick", action="store_true", help="10k events, 7 runs")
    a = ap.parse_args()
    if a.quick:
        a.events, a.runs = 10_000, 7
    print(f"rkd client benchmark: {machine()}")
    env = envelope()
    frame = msgspec.msgpack.encode(env)
    with Sandbox() as sb, Daemon(sb) as daemon:
        rows = hot_path(sb, daemon, a.events, a.batch)
        ceilings = {
            "transport": transport_only(sb, daemon, frame, a.events, a.batch),
            "send": raw_send(sb, frame, a.events, a.batch)[0],
            "encode": encode_only(env, a.events, a.batch),
        }
        times = startup_runs(sb, a.runs)
        delivered = one_shot_delivered(sb, daemon)
    report_hot(rows, ceilings, len(frame))
    report_startup(times, a.runs, delivered)


if __name__ == "__main__":
    main()
