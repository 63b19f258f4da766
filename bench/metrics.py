"""What `rkd metrics` costs over a big database, and what its write-time hook costs.

    python bench/metrics.py [--events 1000000] [--days 45]

1. Builds a database of ``--events`` events spread over ``--days`` UTC days (a
   ReasonKit mix: 25 % commands with log-normal latencies and four models, 72 %
   ThinkTools, 3 % errors), written through ``Storage.write`` in batches of 10,000, so
   the daily aggregates are kept by the same hook the daemon runs.
2. Times ``rkd metrics --days 30 --json`` and ``rkd metrics --days 30`` as real
   subprocesses against it (the daemon is not needed: the CLI reads the database
   read-only), median of 5 after one warm-up, next to ``rkd --help`` (interpreter and
   import cost alone). Target: < 1 s.
3. Times ``Storage.write`` of 100,000 records in batches of 100 (the daemon's default
   batch_size) and 1,000, with the aggregation hook and with it replaced by a no-op.
4. End to end: 40,000 pre-encoded events from 2 processes into the real daemon until
   they are rows, with the hook and with a daemon whose hook is a no-op (benchmark-only
   launcher), 3 alternating runs each: events/s, and the daemon's CPU per event
   (steadier on a busy machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import apsw
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    PYTHON,
    Daemon,
    Sandbox,
    load_note,
    machine,
    median,
    push_until_durable,
    table,
    verdict,
)
from rkd.client import schema as s
from rkd.client.clock import now_ms
from rkd.daemon import aggregates
from rkd.daemon.storage import Record, SessionRow, Storage

SOURCE = s.Source(product="reasonkit-core", version="1.0.0", os="linux", arch="x86_64",
                  python_version="3.11.7")  # fmt: skip
TOOLS = ["gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty"]
MODELS = ["claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022",
          "gpt-4o-mini-2024-07-18"]  # fmt: skip
COMMANDS = ["think"] * 7 + ["compare"] * 2 + ["metrics"]
PROFILES: list[s.Profile] = ["balanced"] * 5 + ["quick"] * 3 + ["deep", "paranoid"]
CATEGORIES: list[s.ErrorCategory] = ["timeout", "api_error", "rate_limited", "network_error"]
from rkd.client.clock import DAY_MS  # noqa: E402


def payload(rng: random.Random) -> s.Payload:
    """One event of the mix; command latencies are log-normal around 2 s (up to minutes)."""
    r = rng.random()
    if r < 0.25:
        failed = rng.random() < 0.02
        kind = s.CommandFailed if failed else s.CommandExecuted
        return kind(
            command=rng.choice(COMMANDS), profile=rng.choice(PROFILES),
            thinktool_chain=tuple(TOOLS[:4]), thinktool_count=4, cache_hit=rng.random() < 0.3,
            execution=s.Execution(duration_ms=int(rng.lognormvariate(7.6, 0.8)), success=not failed),
            tokens=s.Tokens(input=rng.randrange(200, 4000), output=rng.randrange(50, 2000),
                            model=rng.choice(MODELS)),
            error_category=rng.choice(CATEGORIES) if failed else None,
        )  # fmt: skip
    if r < 0.97:
        return s.ThinkToolCompleted(tool_name=rng.choice(TOOLS), step_count=4, duration_ms=650)
    return s.ErrorOccurred(error_category=rng.choice(CATEGORIES), error_code="rate_limit_exceeded",
                           context=s.ErrorContext(command="think", profile="deep"))  # fmt: skip


def generate(n: int, days: int, rng: random.Random) -> list[Record]:
    """``n`` records, oldest first, evenly over ``days`` days up to now; a session per 5,000."""
    now, span = now_ms(), days * DAY_MS
    out: list[Record] = []
    session = None
    for i in range(n):
        ts = now - span + span * i // n
        if i % 5000 == 0:
            session = SessionRow(rowid=None, uuid=str(uuid.uuid4()), started_ms=ts, last_ms=ts, events=0)  # fmt: skip
        p = payload(rng)
        env = s.ENVELOPES[type(p)](event_id=uuid.uuid4(), timestamp=dt.datetime.now(dt.UTC),
                                   source=SOURCE, payload=p)  # fmt: skip
        assert session is not None
        out.append(Record(env, session, i % 5000 + 1, ts))
    return out


def build(path: Path, n: int, days: int) -> float:
    """Write ``n`` generated events through Storage.write in batches of 10,000; seconds taken."""
    rng = random.Random(1)
    storage = Storage(path)
    t = time.perf_counter()
    for start in range(0, n, 100_000):
        recs = generate(min(100_000, n - start), days, rng)
        for i in range(0, len(recs), 10_000):
            storage.write(recs[i : i + 10_000], {}, now_ms())
    storage.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    storage.close()
    return time.perf_counter() - t


def _frame(p: s.Payload) -> bytes:
    env = s.ENVELOPES[type(p)](event_id=uuid.uuid4(), timestamp=dt.datetime.now(dt.UTC),
                               source=SOURCE, payload=p)  # fmt: skip
    return msgspec.msgpack.encode(env)


def timed_cli(sb: Sandbox, *args: str, runs: int = 5) -> tuple[float, str]:
    """Median wall time of ``python -m rkd.cli *args`` over ``runs`` runs, after a warm-up."""
    cmd = [PYTHON, "-m", "rkd.cli", *args]
    out = subprocess.run(cmd, env=sb.env, capture_output=True, text=True, check=True).stdout
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=sb.env, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return median(times), out


def write_cost(n: int, batch: int, hook: bool, runs: int = 3) -> float:
    """Median µs per event of Storage.write over ``n`` records in batches of ``batch``."""
    recs = generate(n, 30, random.Random(2))
    real = aggregates.add_records
    results = []
    try:
        if not hook:
            aggregates.add_records = lambda db, records: None  # benchmark only
        for _ in range(runs):
            with tempfile.TemporaryDirectory(dir="/tmp") as d:
                storage = Storage(Path(d) / "w.db")
                t = time.perf_counter()
                for i in range(0, n, batch):
                    storage.write(recs[i : i + batch], {}, now_ms())
                results.append((time.perf_counter() - t) / n * 1e6)
                storage.close()
    finally:
        aggregates.add_records = real
    return median(results)


NO_HOOK = """
import rkd.daemon.aggregates as aggregates
aggregates.add_records = lambda db, records: None  # benchmark only: the hook as a no-op
"""


def _cpu_secs(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(frames: list[bytes], hook: bool, senders: int = 2) -> tuple[float, float]:
    """Events/s and daemon CPU µs per event, from ``senders`` processes to durable rows."""
    with Sandbox() as sb, Daemon(sb, patch="" if hook else NO_HOOK) as daemon:
        cpu0 = _cpu_secs(daemon.pid)
        elapsed = push_until_durable(sb, daemon, frames, senders)
        cpu = _cpu_secs(daemon.pid) - cpu0
    return len(frames) / elapsed, cpu / len(frames) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--write-events", type=int, default=100_000)
    ap.add_argument("--ingest-events", type=int, default=40_000)
    args = ap.parse_args()
    print(f"rkd metrics benchmark — {machine()}\n{load_note()}")
    with Sandbox() as sb:
        db = sb.settings.db_path
        secs = build(db, args.events, args.days)
        con = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").get for t in aggregates.TABLES}
        con.close()
        print(f"\nBuilt {args.events:,} events over {args.days} days in {secs:.1f} s "
              f"({db.stat().st_size / 2**20:,.0f} MiB); aggregate rows: "
              + ", ".join(f"{t} {n:,}" for t, n in rows.items()))  # fmt: skip
        base, _ = timed_cli(sb, "--help")
        js, out = timed_cli(sb, "metrics", "--days", "30", "--json")
        human, text = timed_cli(sb, "metrics", "--days", "30")
        report = json.loads(out)
        table(f"2. `rkd metrics` over {args.events:,} events, as a subprocess (median of 5)",
              ["command", "seconds", "target", "verdict"],
              [["rkd metrics --days 30 --json", f"{js:.3f}", "1", verdict(js, 1)],
               ["rkd metrics --days 30", f"{human:.3f}", "1", verdict(human, 1)],
               ["rkd --help (startup alone)", f"{base:.3f}", "-", "-"]])  # fmt: skip
        print(f"\nIn the window: {report['queries']:,} queries, {report['sessions']:,} sessions, "
              f"{sum(report['events'].values()):,} events; p50/p95/p99 "
              + "/".join(str(report["performance"]["latency_ms"][f"p{q}"]) for q in (50, 95, 99))
              + " ms\n\n" + "\n".join(text.splitlines()[:12]) + "\n...")  # fmt: skip
    n = args.write_events
    rows = []
    for batch in (100, 1000):
        on, off = write_cost(n, batch, True), write_cost(n, batch, False)
        rows += [[f"batches of {batch:,}, hook on (as shipped)", f"{on:.2f}", f"{on / off:.2f}"],
                 [f"batches of {batch:,}, hook replaced by a no-op", f"{off:.2f}", "1.00"]]  # fmt: skip
    table(f"3. Storage.write of {n:,} records (median of 3)", ["write", "µs/event", "ratio"], rows)
    rng = random.Random(3)
    frames = [_frame(payload(rng)) for _ in range(args.ingest_events)]
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(3):  # alternating, so drift in the machine's load hits both alike
        for hook in (True, False):
            runs[hook].append(ingest(frames, hook))
    (r_on, c_on), (r_off, c_off) = (
        (median([r for r, _ in runs[h]]), median([c for _, c in runs[h]])) for h in (True, False)
    )
    table(f"4. End to end: {len(frames):,} events from 2 processes into the real daemon "
          "until durable (default batch_size 100; median of 3 alternating runs)",
          ["daemon", "events/s", "daemon CPU µs/event", "CPU ratio"],
          [["aggregation hook on (as shipped)", f"{r_on:,.0f}", f"{c_on:.1f}", f"{c_on / c_off:.2f}"],
           ["hook replaced by a no-op", f"{r_off:,.0f}", f"{c_off:.1f}", "1.00"]])  # fmt: skip


if __name__ == "__main__":
    main()
