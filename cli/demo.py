"""`rkd demo`: the whole pipeline in a throwaway sandbox.

The sandbox is a temporary folder with its own XDG dirs and a daemon of its own; the
user's real config, database and daemon are never touched. The child processes get a
fresh environment in which telemetry is switched on for the sandbox only.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rkd.client.config import load_settings
from rkd.client.control import DaemonUnavailable, request
from rkd.client.wire import FlushRequest, StatusRequest

PROFILES = {  # profile -> (weight, ThinkTool chain)
    "quick": (28, ["gigathink", "laserlogic"]),
    "balanced": (50, ["gigathink", "laserlogic", "bedrock", "proofguard"]),
    "deep": (15, ["gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty"]),
    "paranoid": (7, ["gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty"]),
}
COMMANDS = (("think", 70), ("compare", 25), ("metrics", 5))
MODELS = ("claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "claude-3-5-haiku-20241022")
SCRUBBED = ("DO_NOT_TRACK", "RK_TELEMETRY_ENABLED", "REASONKIT_TELEMETRY", "RK_TELEMETRY_PATH",
            "RK_CONFIG", "RK_TELEMETRY_CLOUD_SYNC", "RK_TELEMETRY_COMMUNITY")  # fmt: skip


class DemoError(Exception):
    """The demo could not run. The message is one line."""


def sandbox_env(root: Path) -> dict[str, str]:
    """A copy of the environment pointing every rkd path into ``root``, telemetry on."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("XDG_")}
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_DATA_HOME=str(root / "data"),
        XDG_RUNTIME_DIR=str(root / "run"),
        RK_TELEMETRY_ENABLED="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def _wait_for_daemon(runtime: Path, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise DemoError(f"the demo daemon exited at start: {err.strip()[-300:]}")
        try:
            request(runtime, StatusRequest(), timeout_ms=500)
            return
        except DaemonUnavailable:
            time.sleep(0.05)
    raise DemoError("the demo daemon did not start within 15 s")


def run_demo(events: int, processes: int, keep: bool, echo: Callable[[str], Any]) -> None:
    root = Path(tempfile.mkdtemp(prefix="rkd-demo-"))
    env = sandbox_env(root)
    settings = load_settings(env)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        echo(f"rkd demo: sandbox {root} (your own telemetry is not touched)")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rkd.cli", "run", "--log-format", "json"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _wait_for_daemon(settings.runtime_dir, daemon, time.monotonic() + 15)
        echo(
            f"  daemon started (pid {daemon.pid}); {processes} client processes emit ~{events:,} events"
        )
        t0 = time.perf_counter()
        share = [events // processes + (i < events % processes) for i in range(processes)]
        workers = [
            subprocess.Popen([sys.executable, "-m", "rkd.cli.demo", str(i), str(n)], env=env)
            for i, n in enumerate(share)
        ]
        if any(w.wait(timeout=300) != 0 for w in workers):
            raise DemoError("a demo client process failed")
        reply = request(settings.runtime_dir, FlushRequest(), timeout_ms=30_000)
        elapsed = time.perf_counter() - t0
        echo(f"  emitted and stored in {elapsed:.2f} s; flushed {reply.flushed:,} pending events")
        echo(_firewall_line(request(settings.runtime_dir, StatusRequest()).status))
        daemon.send_signal(signal.SIGTERM)
        if daemon.wait(timeout=30) != 0:
            raise DemoError("the demo daemon did not stop cleanly")
        echo("  daemon stopped gracefully (SIGTERM)\n")
        echo(summarise(settings.db_path))
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if keep:
            echo(f"\nSandbox kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _firewall_line(status: Any) -> str:
    found = {k.split(".", 1)[1]: v for k, v in (status.counters if status else {}).items()
             if k.startswith("firewall.")}  # fmt: skip
    if not found:
        return "  privacy firewall: nothing private in this run"
    what = ", ".join(f"{k} {v:,}" for k, v in sorted(found.items()))
    return f"  privacy firewall: replaced {what} before anything was stored"


def summarise(db_path: Path) -> str:
    """A short report of what the sandbox database holds."""
    from rkd.daemon.derived import DERIVED_TYPES
    from rkd.daemon.storage import iter_envelopes, open_read_only

    db = open_read_only(db_path)
    if db is None:
        return "Nothing was stored."
    q = db.execute
    total = q("SELECT count(*) FROM events").get
    derived = q(f"SELECT count(*) FROM events WHERE event_type IN {DERIVED_TYPES!r}").get
    sessions = q("SELECT count(*) FROM sessions").get
    by_type = q(f"""SELECT event_type, count(*) FROM events WHERE event_type NOT IN
                    {DERIVED_TYPES!r} GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    by_derived = q(f"""SELECT event_type, count(*) FROM events WHERE event_type IN
                       {DERIVED_TYPES!r} GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    cmds = q("""SELECT json_extract(payload, '$.command') c, count(*) FROM events
                WHERE event_type LIKE 'command_%' GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    profiles = q("""SELECT json_extract(payload, '$.profile') p, count(*) FROM events
                    WHERE event_type LIKE 'command_%' AND p IS NOT NULL
                    GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    totals = q("""SELECT
        sum(json_extract(payload, '$.tokens.input')), sum(json_extract(payload, '$.tokens.output')),
        sum(json_extract(payload, '$.cache_hit')), sum(json_extract(payload, '$.execution.success')),
        count(*) FROM events WHERE event_type LIKE 'command_%'""").fetchone()
    assert totals is not None
    tok_in, tok_out, hits, ok, n_cmd = totals
    undeclared = q("""SELECT undeclared, count(*) FROM events WHERE undeclared IS NOT NULL
                      GROUP BY 1 ORDER BY 2 DESC""").fetchall()
    db.close()
    assert isinstance(total, int) and isinstance(derived, int)
    lines = ["What was stored", "===============",
             f"Events:        {total - derived:,} in {sessions:,} session{'' if sessions == 1 else 's'}",
             f"Derived:       {derived:,} by the daemon (session start, first uses, milestones)"]  # fmt: skip
    # The by-type lines add up to the line they detail: events, then derived.
    lines += ["By type:"] + [f"  {t:<24} {n:,}" for t, n in by_type]
    lines += ["Derived by type:"] + [f"  {t:<24} {n:,}" for t, n in by_derived]
    lines += ["Commands:"] + [f"  {c:<24} {n:,}" for c, n in cmds]
    lines += ["Profiles:"] + [f"  {p:<24} {n:,}" for p, n in profiles]
    if n_cmd:
        lines += [
            f"Success rate:  {100 * ok / n_cmd:.1f}%",
            f"Cache hits:    {100 * hits / n_cmd:.1f}%",
            f"Tokens:        {tok_in:,} in / {tok_out:,} out",
        ]
    n_und: int = sum(int(n) for _, n in undeclared)  # type: ignore[misc, arg-type]
    lines.append(
        f"Upload check:  {total - n_und:,} of {total:,} events hold only values ReasonKit's"
        " vocabulary declares"
    )
    lines += [f"  undeclared {fields:<13} {n:,} (would be uploaded as __other__)"
              for fields, n in undeclared]  # fmt: skip
    sample = next(
        (e for e in iter_envelopes(db_path) if e["event_type"] not in DERIVED_TYPES), None
    )
    if sample is not None:
        lines += ["", "One stored event, as `rkd export` will show it:",
                  json.dumps(sample, indent=2)]  # fmt: skip
    return "\n".join(lines)


def _pick(rng: random.Random, weighted: Any) -> Any:
    items, weights = zip(*weighted, strict=True)
    return rng.choices(items, weights)[0]


class DemoFailure(RuntimeError):
    """A simulated provider error, raised inside a command to show error capture."""

    rk_error_category = "api_error"


def worker(seed: int, events: int) -> None:
    """Emit about ``events`` realistic ReasonKit events through the real client."""
    from rkd.client import Telemetry
    from rkd.client import schema as s

    rng = random.Random(seed)
    from importlib.resources import files

    # The demo declares ReasonKit's vocabulary as a product would (see the README).
    tel = Telemetry(product="reasonkit-core", version="1.0.0",
                    vocabulary=files("rkd.client") / "reasonkit.toml")  # fmt: skip
    if not tel.enabled:
        sys.exit(f"telemetry is not enabled in the sandbox: {tel.disabled_reason}")
    sent = 0
    if seed == 0 and events > 1:
        # An AWS key where an error code belongs, as a careless integration might send:
        # the daemon's privacy firewall must replace it before anything is stored.
        tel.error("auth_error", code="AKIAIOSFODNN7EXAMPLE", command="think")
        sent += 1
    while sent < events:
        command = _pick(rng, COMMANDS)
        profile = _pick(rng, [(p, w) for p, (w, _) in PROFILES.items()])
        chain = PROFILES[profile][1] if command != "metrics" else []
        for tool in chain[: max(0, events - sent - 1)]:
            tel.thinktool(tool, step_count=rng.randint(2, 6), duration_ms=rng.randint(150, 900),
                          tokens_used=rng.randint(200, 1500),
                          confidence_score=round(rng.uniform(0.6, 0.98), 2))  # fmt: skip
            sent += 1
        if rng.random() < 0.03 and events - sent >= 2:  # a failure: command + error event
            try:
                with tel.command(command, profile=profile) as cmd:
                    cmd.thinktools(chain)
                    raise DemoFailure("simulated provider error")
            except DemoFailure:
                tel.error("api_error", code="rate_limit_exceeded", recoverable=True,
                          retry_count=2, command=command, profile=profile)  # fmt: skip
                sent += 1
        else:
            llm = rng.randint(300, 4000)
            tel.emit(s.CommandExecuted(
                command=command, profile=profile, thinktool_chain=tuple(chain),
                thinktool_count=len(chain),
                execution=s.Execution(duration_ms=llm + rng.randint(50, 600), llm_latency_ms=llm),
                tokens=s.Tokens(input=rng.randint(300, 3000), output=rng.randint(100, 1500),
                                cached=rng.choice((0, 0, 200)), model=rng.choice(MODELS)),
                cache_hit=rng.random() < 0.3,
            ))  # fmt: skip
        sent += 1
    tel.close()


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]))
