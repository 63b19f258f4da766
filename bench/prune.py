"""How long the daemon stops serving while it prunes 1,000,000 expired events.

    python bench/prune.py [--events 1000000]

A database is filled with events older than the retention, then the real daemon starts
and prunes them on its maintenance timer, in bounded steps. Meanwhile a probe asks the
daemon for its status every 5 ms: the slowest answer is the longest pause of the loop
that also ingests events. Target: under 100 ms. Also: the time the whole prune takes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Daemon, Sandbox, machine, median, percentile, table, verdict
from rkd.client.clock import now_ms
from rkd.client.control import request
from rkd.client.wire import StatusRequest
from rkd.daemon.storage import Storage, read_only_count

PAYLOAD = json.dumps({"tool_name": "gigathink", "step_count": 4, "duration_ms": 650,
                      "coherence_score": None, "depth_score": None, "confidence_score": 0.8,
                      "tokens_used": 900, "completed": True})  # fmt: skip


def fill(db_path: Path, n: int) -> None:
    """``n`` events 10 days old, written straight into the schema (fast, no daemon)."""
    storage = Storage(db_path)
    db, old = storage.db, now_ms() - 10 * 86_400_000
    with db:
        db.execute("INSERT INTO sources(product, version, tier, os, arch, python_version)"
                   " VALUES ('reasonkit-core', '1.0.0', 'oss', 'linux', 'x86_64', '3.11.7')")  # fmt: skip
        db.execute("INSERT INTO sessions(uuid, started_ms, last_ms, events) VALUES ('s', ?, ?, 0)",
                   (old, old))  # fmt: skip
    rows = ((uuid.uuid4().bytes, "thinktool_completed", "1.0.0", old + i, 1, i, 1, PAYLOAD)
            for i in range(n))  # fmt: skip
    batch: list[tuple[object, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 20_000:
            with db:
                db.executemany("INSERT INTO events(event_id, event_type, schema_version, ts_ms,"
                               " session_id, sequence, source_id, payload) VALUES (?,?,?,?,?,?,?,?)",
                               batch)  # fmt: skip
            batch.clear()
    if batch:
        with db:
            db.executemany("INSERT INTO events(event_id, event_type, schema_version, ts_ms,"
                           " session_id, sequence, source_id, payload) VALUES (?,?,?,?,?,?,?,?)",
                           batch)  # fmt: skip
    storage.close()


def probe(sb: Sandbox, deadline: float) -> tuple[list[float], float]:
    """Status round trips (ms) every 5 ms until the database is empty; and the prune time."""
    rtts, t0 = [], time.perf_counter()
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        request(sb.settings.runtime_dir, StatusRequest(), timeout_ms=10_000)
        rtts.append((time.perf_counter() - t) * 1000)
        if len(rtts) % 20 == 0 and read_only_count(sb.settings.db_path) == 0:
            break
        time.sleep(0.005)
    return rtts, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"rkd prune benchmark: {machine()}")
    with Sandbox() as sb:
        cfg = sb.root / "config" / "reasonkit"
        cfg.mkdir(parents=True)
        (cfg / "config.toml").write_text("[telemetry]\nretention_days = 1\n")
        t = time.perf_counter()
        fill(sb.settings.db_path, args.events)
        print(f"filled {args.events:,} expired events in {time.perf_counter() - t:.1f} s")
        with Daemon(sb):
            rtts, took = probe(sb, time.perf_counter() + 600)
            left = read_only_count(sb.settings.db_path)
    worst = max(rtts)
    table(
        f"Daemon responsiveness while pruning {args.events:,} events ({len(rtts):,} probes)",
        ["figure", "value", "target", "verdict"],
        [
            ["longest status round trip (ms)", f"{worst:.1f}", "< 100", verdict(worst, 100)],
            ["p99 round trip (ms)", f"{percentile(rtts, 99):.1f}", "", ""],
            ["median round trip (ms)", f"{median(rtts):.2f}", "", ""],
            ["whole prune (s)", f"{took:.1f}", "", ""],
            ["events left", f"{left:,}", "0", verdict(left, 0)],
        ],
    )


if __name__ == "__main__":
    main()
