"""Fixtures: a sandbox of temporary XDG dirs, and the real daemon as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
import zmq
from rkd.client.config import Settings, load_settings
from rkd.client.control import DaemonUnavailable, request
from rkd.client.wire import EVENTS_SOCKET, FlushRequest, StatusRequest

# The TLS test server and its certificates, as fixtures for every sync test.
pytest_plugins = ["tests.tls_server"]

# What the daemon writes on its own around the applications' events.
DERIVED_TYPES = ("session_started", "session_ended", "feature_first_use", "feature_adoption")
APP = f"event_type NOT IN {DERIVED_TYPES!r}"  # SQL: the applications' own events

KILL_VARS = (
    "DO_NOT_TRACK", "RK_TELEMETRY_ENABLED", "REASONKIT_TELEMETRY", "RK_TELEMETRY_PATH",
    "RK_CONFIG", "RK_TELEMETRY_COMMUNITY", "RK_TELEMETRY_CLOUD_SYNC",
    "RK_TELEMETRY_SYNC_ENDPOINT", "RK_TELEMETRY_SYNC_KEY_ID", "RK_TELEMETRY_SYNC_SECRET",
    "RK_TELEMETRY_REPORTS_SEND_NOW",
)  # fmt: skip


def go(app: subprocess.Popen[str], timeout: float = 60) -> str:
    """Tell an application started by ``Sandbox.spawn_python`` to go on (a line on its
    stdin); wait for its exit, which must be clean; return its stdout."""
    assert app.stdin is not None
    app.stdin.write("go\n")
    app.stdin.flush()
    out, err = app.communicate(timeout=timeout)
    assert 0 == app.returncode, err
    return out


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Sandbox:
    """Temporary HOME and XDG dirs; ``env`` is what every subprocess gets."""

    def __init__(self, root: Path, runtime: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items()
                    if k not in KILL_VARS and not k.startswith("XDG_")}  # fmt: skip
        self.env.update(
            HOME=str(root / "home"),
            XDG_CONFIG_HOME=str(root / "config"),
            XDG_DATA_HOME=str(root / "data"),
            XDG_RUNTIME_DIR=str(runtime),
            RK_TELEMETRY_ENABLED="true",
            PYTHONUNBUFFERED="1",
        )
        (root / "home").mkdir()

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    @property
    def config_file(self) -> Path:
        return self.root / "config" / "reasonkit" / "config.toml"

    def write_config(self, text: str) -> Path:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(textwrap.dedent(text))
        return self.config_file

    def rkd(self, *args: str, timeout: float = 60, input: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run the real `rkd` CLI in the sandbox."""
        return subprocess.run(
            [sys.executable, "-m", "rkd.cli", *args], env={**self.env, **env},
            capture_output=True, text=True, timeout=timeout, input=input,
        )  # fmt: skip

    def python(
        self, code: str, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run Python ``code`` in a fresh interpreter in the sandbox; fail on error."""
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], env={**self.env, **env},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc

    def spawn_python(self, code: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)], env={**self.env, **env},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the real database, read-only."""
        db = apsw.Connection(str(self.settings.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def count(self, where: str = "1", *args: Any, derived: bool = False) -> int:
        """Stored events matching ``where``; only the applications' own unless ``derived``
        (the daemon's session and feature events are counted by the tests about them)."""
        if not self.settings.db_path.exists():
            return 0
        if not derived:
            where = f"({where}) AND {APP}"
        return int(self.query(f"SELECT count(*) FROM events WHERE {where}", *args)[0][0])


class Daemon:
    """A real `rkd run` subprocess."""

    def __init__(self, sandbox: Sandbox, **env: str) -> None:
        self.sandbox = sandbox
        self.runtime = sandbox.settings.runtime_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rkd.cli", "run", "--log-format", "json", "--log-level", "debug"],
            env={**sandbox.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(self._up, 20, "the daemon to answer")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        try:
            request(self.runtime, StatusRequest(), timeout_ms=500)
            return True
        except DaemonUnavailable:
            return False

    def status(self) -> Any:
        st = request(self.runtime, StatusRequest(), timeout_ms=5000).status
        assert st is not None
        return st

    def counter(self, name: str) -> int:
        return int(self.status().counters.get(name, 0))

    def flush(self) -> int:
        return request(self.runtime, FlushRequest(), timeout_ms=10_000).flushed

    def lost(self) -> int:
        """Events counted as lost by applications (every ``client_drop.*`` counter)."""
        c = self.status().counters
        return sum(v for k, v in c.items() if k.startswith("client_drop."))

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The daemon stopped (SIGSTOP) for the block: alive, holding its lock, silent."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        """Signal the daemon and wait; return its exit code and its log (stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"daemon did not stop within {timeout}s") from None
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Short paths: a unix socket path must fit in ~104 bytes.
    root = Path(tempfile.mkdtemp(prefix="rkd-t-"))
    runtime = root / "run"
    try:
        yield Sandbox(root, runtime)
    finally:
        # A daemon the test started some other way (`rkd start`, a bare Daemon()) must
        # not outlive its sandbox: whoever holds the lock in it is stopped.
        from rkd.client.control import daemon_pid

        pid = daemon_pid(runtime)
        if pid is not None and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def start_daemon(sandbox: Sandbox) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(**env: str) -> Daemon:
        d = Daemon(sandbox, **env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def daemon(start_daemon: Callable[..., Daemon]) -> Daemon:
    return start_daemon()


@pytest.fixture
def raw_push(sandbox: Sandbox) -> Iterator[Callable[[list[bytes]], None]]:
    """Send raw frames to the daemon's event socket, as a hostile client would."""
    ctx = zmq.Context()
    socks: list[zmq.Socket[Any]] = []

    def push(frames: list[bytes]) -> None:
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 5000)
        s.connect(f"ipc://{sandbox.settings.runtime_dir / EVENTS_SOCKET}")
        socks.append(s)
        for f in frames:
            s.send(f)

    yield push
    for s in socks:
        s.close(linger=5000)
    ctx.term()


# -- CI runs as root: the root-only tests must have run there ------------------------------

# These skip unless root (or where even root cannot mount a tmpfs, set chattr +i or run a
# probe as nobody). CI runs as root, so there a skip, or a rename that drops a test from
# this list, would silently lose the check: in CI as root the run fails instead.
ROOT_ONLY = (
    "tests/test_robustness.py::test_another_user_can_neither_connect_nor_read",
    "tests/test_robustness.py::test_full_disk_keeps_events_and_recovers_when_space_returns",
    "tests/test_robustness.py::test_read_only_database_keeps_events_and_recovers",
)
_root_only_outcomes: dict[str, str] = {}
_ran_modules: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep each root-only test's outcome: its call's, or the phase that did not pass; and
    any other test skipped because it "needs root" (every such skip says so)."""
    why = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
    _ran_modules.add(report.nodeid.split("::")[0])
    listed = report.nodeid in ROOT_ONLY and (report.when == "call" or not report.passed)
    if listed or "needs root" in why:
        outcome = f"{report.outcome} ({why.removeprefix('Skipped: ')})" if why else report.outcome
        _root_only_outcomes.setdefault(report.nodeid, outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With CI set and as root, fail the run unless every root-only test whose module was
    collected passed (a skip, an absence or a failure all count)."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes") or os.geteuid() != 0:
        return
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller sees every report and decides
    # The modules that ran (from the reports: under xdist the controller collects none).
    modules = _ran_modules
    outcomes = {t: _root_only_outcomes.get(t, "not run") for t in ROOT_ONLY}
    outcomes |= {t: o for t, o in _root_only_outcomes.items() if t not in outcomes}
    bad = {t: o for t, o in outcomes.items() if t.split("::")[0] in modules and o != "passed"}
    if not bad:
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line("")  # end the progress line (ensure_newline does not, with -q)
        for test, outcome in bad.items():
            tr.write_line(f"CI as root, a root-only test did not pass: {test}: {outcome}", red=True)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
