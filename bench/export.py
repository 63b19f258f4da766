"""How fast `rkd export` is, and that its memory stays flat, on a generated database.

    python bench/export.py [--events 1000000] [--small 100000] [--formats json,ndjson,csv]

1. Generate a database of ``--events`` events (and one of ``--small`` events) straight
   into the daemon's schema: ``Storage(path)`` creates it, then apsw ``executemany`` in
   10,000-row transactions. Payloads are encoded from the real schema Structs, in the
   demo's mix (ThinkTools, commands with token counts and chains, the odd failure with
   its error event, feature and help events), sessions of about 500 events.
2. For each size and format, run the real CLI (``python -m rkd.cli export --format F
   --output FILE``) as a subprocess with the daemon down, as a user would, and report
   wall time, CPU time, events/s, the output size and the peak RSS of that process
   (from ``os.wait4``: the rusage of exactly that child). Flat memory means the 1M peak
   is about the 100k peak. Target: 1,000,000 events in under 10 s.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import PYTHON, Sandbox, load_note, machine, table, verdict
from rkd.client import schema as s
from rkd.daemon.storage import Storage

TARGET_SECS = 10.0
CHUNK = 10_000  # rows per transaction
SESSION_EVENTS = 500
TOOLS = ("gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty")
MODELS = ("claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022")
PROFILES: tuple[s.Profile, ...] = ("quick", "balanced", "deep", "paranoid")
SOURCES = (
    ("reasonkit-core", "1.0.0", "oss", "linux", "x86_64", "3.11.7"),
    ("reasonkit-core", "1.0.1", "oss", "linux", "x86_64", "3.11.9"),
    ("reasonkit-pro", "1.0.1", "pro", "macos", "arm64", "3.12.2"),
)


def command_events(rng: random.Random) -> list[s.Payload]:
    """One ReasonKit command as the demo emits it: its ThinkTools, then the command."""
    profile = rng.choice(PROFILES)
    chain = TOOLS[: rng.randint(2, 5)]
    out: list[s.Payload] = [
        s.ThinkToolCompleted(
            tool_name=t,
            step_count=rng.randint(2, 6),
            duration_ms=rng.randint(150, 900),
            tokens_used=rng.randint(200, 1500),
            confidence_score=round(rng.uniform(0.6, 0.98), 2),
        )
        for t in chain
    ]
    llm = rng.randint(300, 4000)
    common = dict(
        command=rng.choice(("think", "think", "compare")), profile=profile,
        thinktool_chain=chain, thinktool_count=len(chain),
        execution=s.Execution(duration_ms=llm + rng.randint(50, 600), llm_latency_ms=llm,
                              processing_ms=rng.randint(5, 90)),
        tokens=s.Tokens(input=rng.randint(300, 3000), output=rng.randint(100, 1500),
                        cached=rng.choice((0, 0, 200)), model=rng.choice(MODELS)),
        quality=s.Quality(confidence_score=round(rng.uniform(0.6, 0.98), 2),
                          coherence_score=round(rng.uniform(0.6, 0.98), 2)),
        query_hash=rng.randbytes(32).hex(),
    )  # fmt: skip
    if rng.random() < 0.03:
        out.append(s.CommandFailed(**common, error_category="api_error", cache_hit=False))
        out.append(s.ErrorOccurred(
            error_category="api_error", error_code="rate_limit_exceeded", recoverable=True,
            retry_count=2, context=s.ErrorContext(command="think", profile=profile, step=3),
        ))  # fmt: skip
    else:
        out.append(s.CommandExecuted(**common, cache_hit=rng.random() < 0.3))
    if rng.random() < 0.05:
        out.append(s.FeatureFirstUse(feature_id="web_search", discovery_source="help"))
    if rng.random() < 0.02:
        out.append(s.HelpViewed(topic="think"))
    return out


def payload_pool(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """About ``n`` realistic (event_type, payload JSON) pairs, in the order emitted."""
    rng = random.Random(seed)
    pool: list[tuple[str, str]] = []
    while len(pool) < n:
        for p in command_events(rng):
            pool.append((p.event_type, msgspec.json.encode(p).decode()))
    return pool


def generate(path: Path, events: int) -> None:
    """A database of ``events`` events in the daemon's schema, written as fast as apsw can."""
    storage = Storage(path)
    db = storage.db
    pool = payload_pool(4096)
    rng = random.Random(1)
    ts = int(time.time() * 1000) - events * 250
    with db:
        db.executemany(
            "INSERT INTO sources(product, version, tier, os, arch, python_version)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            SOURCES,
        )
    session, seq = 0, 0
    for start in range(0, events, CHUNK):
        rows, sessions = [], []
        for i in range(start, min(events, start + CHUNK)):
            if i % SESSION_EVENTS == 0:
                session, seq = session + 1, 0
                sessions.append((session, str(uuid.uuid4()), ts, ts + SESSION_EVENTS * 250))
            ts += rng.randint(1, 500)
            seq += 1
            etype, payload = pool[i % len(pool)]
            src = 1 + (session % len(SOURCES))
            rows.append((uuid.uuid4().bytes, etype, "1.0.0", ts, session, seq, src, payload))
        with db:
            db.executemany(
                "INSERT INTO sessions(id, uuid, started_ms, last_ms) VALUES (?, ?, ?, ?)", sessions
            )
            db.executemany(
                "INSERT INTO events(event_id, event_type, schema_version, ts_ms, session_id,"
                " sequence, source_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    storage.close()


def run_export(env: dict[str, str], fmt: str, out: Path) -> tuple[float, float, int]:
    """Run `rkd export` as a user would; return (wall s, CPU s, peak RSS KiB) of that process."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-m", "rkd.cli", "export", "--format", fmt, "--output", str(out)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)  # the rusage of exactly this child
    elapsed = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"rkd export --format {fmt} failed: {err.strip()}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def baseline_rss(env: dict[str, str]) -> int:
    """Peak RSS (KiB) of `rkd export --help`: the interpreter and imports, no data."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "rkd.cli", "export", "--help"], env=env, stdout=subprocess.DEVNULL
    )
    return os.wait4(proc.pid, 0)[2].ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--formats", default="json,ndjson,csv")
    ap.add_argument("--repeat", type=int, default=2, help="runs per cell; the fastest is shown")
    args = ap.parse_args()
    formats = args.formats.split(",")
    print(f"rkd export benchmark: {machine()}")
    print(load_note())
    rows = []
    with Sandbox() as box:
        base = baseline_rss(box.env)
        for n in sorted({args.small, args.events}):
            db = box.root / f"events-{n}.db"
            t = time.perf_counter()
            generate(db, n)
            print(f"generated {n:,} events in {time.perf_counter() - t:.1f} s "
                  f"({db.stat().st_size / 2**20:,.0f} MiB)")  # fmt: skip
            env = {**box.env, "RK_TELEMETRY_PATH": str(db)}
            for fmt in formats:
                out = box.root / f"export.{fmt}"
                secs, cpu, rss = min(run_export(env, fmt, out) for _ in range(args.repeat))
                size = out.stat().st_size
                out.unlink(missing_ok=True)
                Path(f"{out}.consent.json").unlink(missing_ok=True)
                ok = verdict(secs, TARGET_SECS) if n == 1_000_000 else "-"
                rows.append([f"{n:,} events, {fmt}", f"{secs:.2f}", f"{cpu:.2f}",
                             f"{n / secs:,.0f}", f"{size / 2**20:,.0f}", f"{rss / 1024:.1f}",
                             ok])  # fmt: skip
            db.unlink()
    table(
        f"rkd export, daemon down, writing a file (baseline RSS of `rkd export --help`: "
        f"{base / 1024:.1f} MiB; target {TARGET_SECS:g} s per 1M events)",
        ["run", "seconds", "CPU s", "events/s", "output MiB", "peak RSS MiB", "target"],
        rows,
    )


if __name__ == "__main__":
    main()
