"""What the privacy firewall costs: per event, on hostile strings, and end to end.

    python bench/firewall.py [--events 40000]

1. Per event (µs, median of batch means) on a realistic ReasonKit mix, decoded as the
   daemon decodes it: with the clean-string cache warm (the steady state: command, tool
   and model names repeat), cold (every string new), and with a secret in every event.
2. Hostile strings at the maximum identifier length (64) and as 4 KiB / 40 KiB free
   text: µs per string. Linear time is what matters here.
3. End to end: pre-encoded frames from 4 processes into the real daemon until they are
   durable rows, once as shipped and once with the firewall replaced by a pass-through
   (benchmark-only launcher; the product has no switch to turn it off). Target: the
   filter costs <= 10 µs per typical event and is not the pipeline's bottleneck.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Daemon, Sandbox, machine, median, push_until_durable, table, verdict
from rkd.client import schema as s
from rkd.client.config import PrivacyConfig
from rkd.daemon.firewall import Firewall
from rkd.daemon.pipeline import decode
from rkd.daemon.redact import Scanner

SOURCE = s.Source(product="reasonkit-core", version="1.0.0", os="linux", arch="x86_64",
                  python_version="3.11.7")  # fmt: skip
TOOLS = ["gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty"]
MODELS = ["claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022"]


def payload(rng: random.Random, model: str | None = None) -> s.Payload:
    """One event of the demo's mix: commands, ThinkTools, the odd error."""
    r = rng.random()
    if r < 0.25:
        return s.CommandExecuted(
            command=rng.choice(["think", "compare"]), profile="balanced",
            thinktool_chain=tuple(TOOLS[:4]), thinktool_count=4,
            execution=s.Execution(duration_ms=2500, llm_latency_ms=2100),
            tokens=s.Tokens(input=1500, output=800, model=model or rng.choice(MODELS)),
        )  # fmt: skip
    if r < 0.97:
        return s.ThinkToolCompleted(tool_name=rng.choice(TOOLS), step_count=4, duration_ms=650)
    return s.ErrorOccurred(error_category="api_error", error_code="rate_limit_exceeded",
                           context=s.ErrorContext(command="think", profile="deep"))  # fmt: skip


def frame(p: s.Payload) -> bytes:
    import datetime as dt
    import uuid

    env = s.ENVELOPES[type(p)](event_id=uuid.uuid4(), timestamp=dt.datetime.now(dt.UTC),
                               source=SOURCE, payload=p)  # fmt: skip
    return msgspec.msgpack.encode(env)


def per_event_us(envelopes: list[s.Envelope], fw: Firewall, batch: int = 1000) -> float:
    means = []
    for i in range(0, len(envelopes) - batch + 1, batch):
        chunk = envelopes[i : i + batch]
        t = time.perf_counter()
        for e in chunk:
            fw(e)
        means.append((time.perf_counter() - t) / batch * 1e6)
    return median(means)


def bench_per_event(n: int) -> list[list[str]]:
    rng = random.Random(1)
    typical = [decode(frame(payload(rng))) for _ in range(n)]
    cold = [decode(frame(payload(rng, model="m-" + "".join(rng.choices(string.ascii_lowercase, k=12)))))
            for _ in range(n)]  # fmt: skip
    secret = [decode(frame(s.HelpViewed(topic="ghp_" + "".join(rng.choices(string.ascii_letters, k=36)))))
              for _ in range(n)]  # fmt: skip
    rows = []
    for name, envs in (("typical mix, warm cache", typical), ("typical mix, every model id new", cold),
                       ("a GitHub token in every event", secret)):  # fmt: skip
        fw = Firewall(PrivacyConfig(), b"s" * 32)
        fw(envs[0])
        us = per_event_us(envs, fw)
        rows.append([name, f"{us:.2f}", "10", verdict(us, 10) if "typical" in name else "-"])
    return rows


def bench_vocabulary(n: int) -> list[list[str]]:
    """Issue 11: the vocabulary lookup (declared or not) per string, the undeclared-field
    tag per event (what the daemon stores with each event) and the upload filter per
    event, against the firewall alone in the same run."""
    from rkd.client.upload import undeclared_fields, upload_filter
    from rkd.client.vocabulary import reasonkit_vocabulary

    rng = random.Random(3)
    vocab = reasonkit_vocabulary()
    envs = [decode(frame(payload(rng))) for _ in range(n)]
    fw = Firewall(PrivacyConfig(), b"s" * 32)
    fw(envs[0])
    base = per_event_us(envs, fw)
    lookups = [("command", "think"), ("tokens.model", rng.choice(MODELS)),
               ("command", "my-typo"), ("tool_name", "gigathink")] * (n // 4)  # fmt: skip
    declared = vocab.declared
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for field, value in lookups:
            declared(field, value)
        best.append((time.perf_counter() - t) / len(lookups) * 1e6)
    rows = [
        [
            "one lookup (set, or a pattern's cached match)",
            f"{min(best):.3f}",
            "1",
            verdict(min(best), 1),
        ]
    ]
    for name, fn in (("tag: undeclared fields of an event", undeclared_fields),
                     ("upload filter of an event", upload_filter)):  # fmt: skip
        means = []
        for i in range(0, n - 1000 + 1, 1000):
            t = time.perf_counter()
            for e in envs[i : i + 1000]:
                fn(e, vocab)
            means.append((time.perf_counter() - t) / 1000 * 1e6)
        us = median(means)
        rows.append(
            [
                name,
                f"{us:.2f}",
                "10",
                f"{verdict(us, 10)}; {us / base:.2f}x the firewall ({base:.2f})",
            ]
        )
    return rows


HOSTILE = ["a", "@", ".", "/", "1", "a@", "1.", "1-", ":", "eyJ", "\\", "~/", "sk-", "+1 ",
           "AKIA", "https://", "a=", "A1b", "C:\\", "Bearer "]  # fmt: skip


def bench_hostile() -> list[list[str]]:
    scanner = Scanner()
    rows = []
    for size in (64, 4096, 40960):
        worst, worst_unit = 0.0, ""
        for unit in HOSTILE:
            text = (unit * (size // len(unit) + 1))[:size]
            best = min(_timed(scanner, text) for _ in range(3))
            if best > worst:
                worst, worst_unit = best, unit
        rows.append(
            [
                f"{size:,} chars",
                f"{worst * 1e6:,.0f}",
                f"{worst * 1e9 / size:,.0f}",
                repr(worst_unit),
            ]
        )
    return rows


def _timed(scanner: Scanner, text: str) -> float:
    t = time.perf_counter()
    scanner.redact(text)
    return time.perf_counter() - t


NO_FIREWALL = """
import rkd.daemon.service as service

class NoFirewall:
    def __init__(self, *a, **k):
        self.salt = b""
    def __call__(self, envelope):
        return envelope

service.Firewall = NoFirewall  # benchmark only: measure the pipeline without the filter
"""


def end_to_end(frames: list[bytes], firewall: bool, processes: int = 4) -> float:
    """Events/s from ``processes`` raw senders to durable rows, with or without the filter."""
    with Sandbox() as sb:
        cfg = sb.root / "config" / "reasonkit"
        cfg.mkdir(parents=True)
        (cfg / "config.toml").write_text("[telemetry]\nbatch_size = 1000\n")
        with Daemon(sb, patch="" if firewall else NO_FIREWALL) as daemon:
            return len(frames) / push_until_durable(sb, daemon, frames, processes)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=40_000)
    args = ap.parse_args()
    print(f"rkd firewall benchmark — {machine()}")
    table("1. Firewall cost per event (median of 1,000-event batch means)",
          ["event mix", "µs/event", "target", "verdict"], bench_per_event(20_000))  # fmt: skip
    table("1b. Declared vocabulary (median of 1,000-event batch means)",
          ["operation", "µs", "target", "verdict"], bench_vocabulary(20_000))  # fmt: skip
    table("2. Hostile strings (worst of 20 hostile patterns, best of 3 runs)",
          ["input", "µs/string", "ns/char", "worst pattern"], bench_hostile())  # fmt: skip
    rng = random.Random(2)
    frames = [frame(payload(rng)) for _ in range(args.events)]
    on = end_to_end(frames, firewall=True)
    off = end_to_end(frames, firewall=False)
    table(f"3. End to end, {args.events:,} events from 4 processes to durable rows",
          ["pipeline", "events/s", "ratio"],
          [["with the firewall", f"{on:,.0f}", f"{on / off:.2f}"],
           ["firewall replaced by a pass-through", f"{off:,.0f}", "1.00"]])  # fmt: skip


if __name__ == "__main__":
    main()
