"""Shared by the benchmarks: a throwaway sandbox, the real daemon, statistics, tables.

Nothing here measures anything. A benchmark builds a :class:`Sandbox` (temporary HOME and
XDG dirs, telemetry on, kill switches removed), starts the real ``rkd run`` in it with
:class:`Daemon`, and prints its figures with :func:`table`.

bench/firewall.py builds a Daemon by hand (``Daemon.__new__`` then ``runtime``,
``log_path``, ``_log``, ``proc``, ``pid``): keep those attribute names.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rkd.client.config import Settings, load_settings
from rkd.client.control import DaemonUnavailable, request
from rkd.client.wire import FlushRequest, StatusRequest

PYTHON = sys.executable
# Kill switches and every variable that could point rkd outside the sandbox.
SCRUB = (
    "DO_NOT_TRACK", "RK_TELEMETRY_ENABLED", "REASONKIT_TELEMETRY", "RK_TELEMETRY_PATH",
    "RK_CONFIG", "RK_TELEMETRY_COMMUNITY", "RK_TELEMETRY_CLOUD_SYNC",
)  # fmt: skip


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Sandbox:
    """A temp dir holding HOME and the XDG dirs; ``env`` is what every process gets.

    The root lives directly under /tmp with a short prefix: a unix socket path must stay
    under ~104 bytes, and the events socket is ``<root>/run/rkd/events.sock``.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rkd-b-", dir="/tmp"))
        env = {k: v for k, v in os.environ.items() if k not in SCRUB and not k.startswith("XDG_")}
        env.update(
            HOME=str(self.root / "home"),
            XDG_CONFIG_HOME=str(self.root / "config"),
            XDG_DATA_HOME=str(self.root / "data"),
            XDG_RUNTIME_DIR=str(self.root / "run"),
            RK_TELEMETRY_ENABLED="true",
        )
        self.env = env
        (self.root / "home").mkdir()
        self.settings: Settings = load_settings(env)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def popen(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Start ``python -c code args...`` in the sandbox; stdin and stdout are text pipes."""
        return subprocess.Popen(
            [PYTHON, "-c", textwrap.dedent(code), *args], env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip


class Daemon:
    """The real daemon, ``python -m rkd.cli run --log-format json``, as a subprocess.

    Its log goes to a file in the sandbox, not a pipe: a pipe nobody reads would fill up
    and block the daemon in the middle of a measurement.
    """

    def __init__(self, sandbox: Sandbox, timeout: float = 20.0, patch: str = "") -> None:
        """``patch``: Python run in the daemon's process before it starts (benchmarks
        use it to swap one stage for a no-op and measure what that stage costs)."""
        self.runtime = sandbox.settings.runtime_dir
        self.log_path = sandbox.root / "daemon.log"
        self._log = self.log_path.open("w")
        cmd = [PYTHON, "-m", "rkd.cli", "run", "--log-format", "json"]
        if patch:
            cmd = [PYTHON, "-c", f"{patch}\nfrom rkd.cli.main import main\nimport sys\n"
                   "sys.argv = ['rkd', 'run', '--log-format', 'json']\nmain()\n"]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=sandbox.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        self.pid = self.proc.pid
        wait_for(self._up, timeout, "the daemon to answer a status request")

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log_path.read_text()}")
        try:
            request(self.runtime, StatusRequest(), timeout_ms=500)
        except DaemonUnavailable:
            return False
        return True

    def status(self) -> Any:
        return request(self.runtime, StatusRequest(), timeout_ms=5000).status

    def flush(self) -> int:
        """Ask the daemon to drain, ingest the spool and write everything pending now."""
        return request(self.runtime, FlushRequest(), timeout_ms=10_000).flushed

    def rss_kb(self, field: str = "VmRSS") -> int:
        """Resident memory of the daemon in KiB (``VmHWM`` gives the peak so far)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait; SIGKILL only if it does not stop in ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)  # in case a benchmark left it paused
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


PUSHER = """
import sys, zmq, msgspec
frames = msgspec.msgpack.decode(sys.stdin.buffer.read())
ctx = zmq.Context(); sock = ctx.socket(zmq.PUSH); sock.setsockopt(zmq.SNDHWM, 0)
sock.connect(sys.argv[1])
for f in frames:
    sock.send(f)
sock.close(linger=60000); ctx.term()
"""


def push_until_durable(sb: Sandbox, daemon: Daemon, frames: list[bytes], senders: int) -> float:
    """Send pre-encoded ``frames`` from ``senders`` raw PUSH processes; seconds until every
    one is written to the database (the daemon flushed on request while we wait)."""

    def durable() -> bool:  # all accepted, and nothing pending after a flush
        daemon.flush()
        st = daemon.status()
        return int(st.counters.get("accepted", 0)) >= before + len(frames) and not st.pending

    before = int(daemon.status().counters.get("accepted", 0))
    endpoint = f"ipc://{sb.settings.runtime_dir / 'events.sock'}"
    t = time.perf_counter()
    procs = [subprocess.Popen([PYTHON, "-c", PUSHER, endpoint], stdin=subprocess.PIPE, env=sb.env)
             for _ in range(senders)]  # fmt: skip
    for i, p in enumerate(procs):
        assert p.stdin is not None
        p.stdin.write(__import__("msgspec").msgpack.encode(frames[i::senders]))
        p.stdin.close()
    # Counted by the daemon, not as rows: it writes events of its own beside them
    # (session start, feature first use and milestones).
    wait_for(durable, 120, "every event durable", every=0.05)
    elapsed = time.perf_counter() - t
    for p in procs:
        p.wait()
    return elapsed


# -- statistics and output ---------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between order statistics."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "NOT MET"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        parts = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


def machine() -> str:
    """One line: cores, CPU model, Python version."""
    model = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}"


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def load_note(secs: float = 0.5) -> str:
    """How busy the machine is right now (sampled over ``secs``), with a warning if busy.

    Other processes on a small machine make every figure here slower and noisier; the
    CPU-time columns are the ones to trust then.
    """
    b0, t0 = _cpu_ticks()
    time.sleep(secs)
    b1, t1 = _cpu_ticks()
    busy = (b1 - b0) / max(1, t1 - t0)
    note = f"CPU {busy:.0%} busy (sampled {secs:g} s)"
    if busy > 0.15:
        note += " (WARNING: other processes are running; figures will be slower and noisier)"
    return note
