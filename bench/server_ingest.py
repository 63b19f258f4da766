"""The ingestion server's sustained throughput: TLS 1.3, 8 concurrent senders, embedded
warehouse, against the ceiling of msgspec validation alone, in the same run.

    python bench/server_ingest.py [--seconds 20] [--senders 8] [--batch 1000]

1. Ceiling: ``decode_batch`` (the server's schema validation) on the same batches, one
   core, events/s.
2. End to end: a real `rkd-server run` (TLS 1.3, test CA, chdb in its data folder),
   8 threads each on its own keep-alive connection posting pre-built, signed, gzipped
   batches of upload-filtered ReasonKit events for ``--seconds``. Events/s counted from
   the 202 answers, then checked against the warehouse after the server stopped.
   Request latency p50/p99, the server's peak RSS (VmHWM).
Target (issue 13): >= 50k events/s on this 2-core machine, p99 < 500 ms.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rkd.client import cloud  # noqa: E402
from rkd.client.schema import PAYLOAD_TYPES  # noqa: E402
from rkd.client.upload import upload_filter  # noqa: E402
from rkd.client.vocabulary import reasonkit_vocabulary  # noqa: E402

from tests.samples import envelope, sample_payload  # noqa: E402
from tests.server_harness import RunningServer, signed_headers, start_server  # noqa: E402

MIX = ("command_executed", "thinktool_completed", "thinktool_step_executed", "profile_used",
       "error_occurred", "feature_first_use")  # fmt: skip
TYPES = {p.event_type: p for p in PAYLOAD_TYPES}


def batches(n: int, size: int) -> list[tuple[str, bytes, bytes]]:
    """``n`` batches of ``size`` events: (batch id, msgpack, gzip body)."""
    vocab = reasonkit_vocabulary()
    rng = random.Random(7)
    out = []
    for _ in range(n):
        events = [upload_filter(envelope(sample_payload(TYPES[rng.choice(MIX)])), vocab)
                  for _ in range(size)]  # fmt: skip
        batch_id = uuid.uuid4().hex
        raw = msgspec.msgpack.encode({"batch_id": batch_id, "events": events})
        out.append((batch_id, raw, gzip.compress(raw, 6)))
    return out


def ceiling(prepared: list[tuple[str, bytes, bytes]], size: int) -> float:
    """Events/s of schema validation alone (decode_batch), best of 3 passes."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _, raw, _ in prepared:
            cloud.decode_batch(raw)
        best = max(best, len(prepared) * size / (time.perf_counter() - start))
    return best


def sender(server: RunningServer, work: list[tuple[str, bytes, bytes]], stop: float,
           latencies: list[float], accepted: list[int], errors: list[int]) -> None:  # fmt: skip
    conn = server.connection(timeout=60)
    i = 0
    while time.monotonic() < stop and i < len(work):
        batch_id, _, body = work[i]
        i += 1
        headers = signed_headers(cloud.EVENTS_PATH, body, batch_id)
        t0 = time.perf_counter()
        conn.request("POST", cloud.EVENTS_PATH, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status == 202:
            accepted.append(json.loads(data)["accepted"])
        else:
            errors.append(resp.status)
    conn.close()


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_secs(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread name (digits dropped: a pool's threads add up), the server's
    threads and its worker processes (as ``worker:<name>``)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    pids = [(pid, "")] + [(c, "worker:") for c in _children(pid)]
    for p, prefix in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = prefix + stat[stat.index("(") + 1 : stat.rindex(")")].rstrip("0123456789_-")
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found += [int(c) for c in children]
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window-ms", default="20")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    per_sender = int(args.seconds * 12) + 4  # more than a sender can post in the time
    print(f"building {args.senders * per_sender} batches of {args.batch} events ...", flush=True)
    template = batches(16, args.batch)
    work = [[(uuid.uuid4().hex, raw, b"") for _, raw, _ in template] for _ in range(args.senders)]
    # Distinct batch ids (else every batch after the first would be a duplicate).
    work = [[_rebatch(raw, bid) for bid, raw, _ in (w * (per_sender // 16 + 1))[:per_sender]]
            for w in work]  # fmt: skip
    print(f"msgspec validation alone: {ceiling(template, args.batch):,.0f} events/s (1 core)")
    with tempfile.TemporaryDirectory(prefix="rkd-bench-server-") as tmp:
        server = start_server(
            Path(tmp),
            "--key-rate",
            "100000",
            "--key-burst",
            "100000",
            "--commit-window-ms",
            args.window_ms,
        )
        try:
            latencies: list[float] = []
            accepted: list[int] = []
            errors: list[int] = []
            start = time.monotonic()
            client_cpu0 = time.process_time()
            threads0, busy0 = thread_cpu(server.proc.pid), machine_busy()
            stop = start + args.seconds
            threads = [threading.Thread(target=sender, args=(server, w, stop, latencies,
                                                             accepted, errors)) for w in work]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - start
            peak = rss_peak_mb(server.proc.pid)
            threads1, busy1 = thread_cpu(server.proc.pid), machine_busy()
            server_cpu = cpu_secs(server.proc.pid)
            client_cpu = time.process_time() - client_cpu0
            groups = server.metric("rkd_server_commit_batches_count")
            commit_secs = server.metric("rkd_server_commit_seconds_sum")
        finally:
            server.stop()
        stored = _stored(server)
    total = sum(accepted)
    print(f"senders: {args.senders}, batch: {args.batch} events, {elapsed:.1f} s")
    print(
        f"accepted: {total:,} events in {len(accepted)} batches; errors: {len(errors)} {sorted(set(errors))}"
    )
    print(f"stored (checked after stop): {stored:,}")
    print(f"throughput: {total / elapsed:,.0f} events/s")
    print(f"request latency: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.0f} ms")  # fmt: skip
    print(f"server peak RSS: {peak:.0f} MB")
    print(
        f"CPU: server {server_cpu:.1f} s (startup included), senders {client_cpu:.1f} s, "
        f"over {elapsed:.1f} s wall on {os.cpu_count()} cores"
    )
    used = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}
    top = sorted(used.items(), key=lambda kv: -kv[1])[:8]
    print("server CPU in the run by thread, s: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    print(
        f"CPU per accepted event (server threads + workers): "
        f"{sum(used.values()) / max(total, 1) * 1e6:.1f} µs"
    )
    busy = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1)
    print(f"machine busy during the run: {busy * 100:.0f}% of {os.cpu_count()} cores")
    print(
        f"group commits: {groups:.0f} ({len(accepted) / max(groups, 1):.1f} batches each, "
        f"{commit_secs / max(groups, 1) * 1000:.0f} ms each)"
    )
    print(f"cpus: {os.cpu_count()}, date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def _rebatch(raw: bytes, _: str) -> tuple[str, bytes, bytes]:
    doc: dict[str, Any] = msgspec.msgpack.decode(raw)
    doc["batch_id"] = uuid.uuid4().hex
    for e in doc["events"]:
        e["event_id"] = str(uuid.uuid4())
    body = msgspec.msgpack.encode(doc)
    return doc["batch_id"], body, gzip.compress(body, 6)


def _stored(server: RunningServer) -> int:
    from rkd.server.warehouse import Warehouse, connect

    wh = Warehouse(connect(f"chdb://{(server.data_dir / 'warehouse').resolve()}"))
    try:
        return int(wh.scalar("SELECT count() FROM {db}.events"))
    finally:
        wh.close()


if __name__ == "__main__":
    main()
