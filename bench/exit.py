"""What telemetry adds to a process's exit: ``tel.close()`` wall time, by situation.

    python bench/exit.py            # 5 rounds per situation
    python bench/exit.py --rounds 3

Each round starts N client processes (1 or 4) that connect, have a warm-up event
confirmed, wait, then send 5,000 events (ReasonKit ThinkTool events, one burst) and time
``tel.close()`` with ``time.perf_counter`` around it: everything telemetry does at exit,
the last batch, the confirmation, spooling copies, writing claims and tearing down the
zmq context. The clients are told to go at the same moment, so four of them leave
together. Situations:

- live: the daemon runs and takes everything (the common case);
- frozen: the daemon is stopped (SIGSTOP) just before the burst: nothing can be
  confirmed, so the copies are spooled;
- frozen, spool full: the same with the spool at its cap: copies are claimed instead;
- gone: the daemon was killed (no process holds its lock) just before the burst.

Target (issue 15): every close() within 200 ms, and immediate when the daemon is gone.
After each round the events are accounted for: stored + counted as lost = sent (the
daemon is resumed or restarted and given time to settle).
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import apsw
from _harness import Daemon, Sandbox, load_note, machine, median, table, verdict, wait_for

EVENTS = 5_000
TARGET_MS = 200.0

CLIENT = """
import sys, time
from rkd.client import Telemetry
from rkd.client import spool
tel = Telemetry(product="reasonkit-core", version="1.0.0")
tel.thinktool("warmup")
tel.flush()
print("ready", flush=True)
full = sys.stdin.readline().strip() == "full"
if full:
    spool.write_spool.__defaults__ = (0,)
for i in range(EVENTS):
    tel.thinktool("leaving", duration_ms=i)
t = time.perf_counter(); tel.close(); took = time.perf_counter() - t
print(took, flush=True)
""".replace("EVENTS", str(EVENTS))


def accounted(sb: Sandbox, daemon: Daemon, sent: int) -> bool:
    daemon.flush()
    c = daemon.status().counters
    lost = sum(v for k, v in c.items() if k.startswith("client_drop."))
    db = apsw.Connection(str(sb.settings.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        (stored,) = db.execute(
            "SELECT count(*) FROM events WHERE event_type = 'thinktool_completed'"
        ).fetchone()
    finally:
        db.close()
    return int(stored) + lost == sent


def one_round(situation: str, clients: int) -> list[float]:
    with Sandbox() as sb:
        daemon = Daemon(sb)
        try:
            procs = [sb.popen(CLIENT) for _ in range(clients)]
            for p in procs:
                assert p.stdout is not None and "ready\n" == p.stdout.readline()
            if situation.startswith("frozen"):
                os.kill(daemon.proc.pid, signal.SIGSTOP)
            elif situation == "gone":
                daemon.proc.kill()
                daemon.proc.wait()
            word = "full\n" if situation.endswith("full") else "go\n"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(word)
            for p in procs:
                p.stdin.flush()  # type: ignore[union-attr]
            took = []
            for p in procs:
                out, err = p.communicate(timeout=60)
                assert p.returncode == 0, err
                took.append(float(out) * 1000)
            if situation.startswith("frozen"):
                os.kill(daemon.proc.pid, signal.SIGCONT)
            elif situation == "gone":
                daemon = Daemon(sb)
            sent = clients * (EVENTS + 1)
            wait_for(lambda: accounted(sb, daemon, sent), 60, f"{situation}: all accounted for")
            return took
        finally:
            daemon.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"rkd exit benchmark: {machine()}\nbefore the run: {load_note()}")
    rows: list[list[Any]] = []
    for situation in ("live", "frozen", "frozen, spool full", "gone"):
        for clients in (1, 4):
            took: list[float] = []
            for _ in range(a.rounds):
                took += one_round(situation, clients)
            worst = max(took)
            rows.append([situation, clients, f"{median(took):.1f}", f"{worst:.1f}",
                         f"≤ {TARGET_MS:.0f}", verdict(worst, TARGET_MS)])  # fmt: skip
    table(f"tel.close() wall time, ms ({EVENTS:,} events sent just before; {a.rounds} rounds;"
          " every event accounted for after each round)",
          ["situation", "clients", "median", "worst", "target", ""], rows)  # fmt: skip
    print(f"\nafter the run: {load_note()}")


if __name__ == "__main__":
    main()
