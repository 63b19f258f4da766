"""`rkd service install|uninstall|status` and `rkd start|stop`."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rkd.cli import service as sv
from rkd.cli.main import cli
from rkd.client.control import daemon_pid

from tests.conftest import Sandbox, wait_for

REPO = Path(__file__).resolve().parents[1]
RKD = "/opt/rk tools/bin/rkd"  # a space: the unit must quote it
UNIT_PATH = "config/systemd/user/rkd.service"
PLIST_PATH = "home/Library/LaunchAgents/sh.reasonkit.rkd.plist"
UID = os.getuid()


class FakeRunner:
    """Records the commands instead of running them; answers ``returncode``/``stderr``."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), self.returncode, "", self.stderr)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    runner = FakeRunner()
    monkeypatch.setattr(sv, "run_command", runner)
    monkeypatch.setattr(sv, "rkd_command", lambda: [RKD])
    return runner


def invoke(sandbox: Sandbox, platform: str, *args: str) -> Result:
    """Run the CLI in this process (so the fakes apply) with the sandbox's environment."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("XDG_")}
    env.update(sandbox.env)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sv, "current_platform", lambda: platform)
        return CliRunner().invoke(cli, list(args), env=env)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- the templates -------------------------------------------------------------------------


def test_repo_templates_are_the_embedded_ones() -> None:
    """The files in systemd/ and launchd/ are exactly what an installed rkd writes."""
    assert sv.SYSTEMD_UNIT == (REPO / "systemd/rkd.service").read_text()
    assert sv.LAUNCHD_PLIST == (REPO / "launchd/sh.reasonkit.rkd.plist").read_text()


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The rendered unit (quoted path with a space) verifies without a single warning."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    exe = tmp_path / "rk tools" / "rkd"
    exe.parent.mkdir()
    exe.symlink_to(sys.executable)
    unit = tmp_path / "rkd.service"
    unit.write_text(sv.render_unit([str(exe)]))
    assert f'ExecStart="{exe}" run --log-format json\n' in unit.read_text()
    proc = subprocess.run(
        [tool, "--user", "verify", "--man=no", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert (0, "", "") == (proc.returncode, proc.stdout, proc.stderr)


def test_unit_escapes_systemd_specifiers() -> None:
    """% and $ in a path cannot turn into specifiers or variables."""
    line = [x for x in sv.render_unit(["/a%b/$c/rkd"]).splitlines() if x.startswith("ExecStart")]
    assert ["ExecStart=/a%%b/$$c/rkd run --log-format json"] == line


def test_plist_round_trips_with_expected_keys_and_types() -> None:
    """The rendered agent is a plist launchd accepts: exact keys, values and types."""
    assert plistlib.loads(sv.LAUNCHD_PLIST.encode())["Label"] == "sh.reasonkit.rkd"
    rendered = sv.render_plist(["/usr/bin/python3", "-m", "rkd.cli"], Path("/Users/me"))
    doc = plistlib.loads(rendered.encode())
    assert {
        "Label": "sh.reasonkit.rkd",
        "ProgramArguments": [
            "/usr/bin/python3",
            "-m",
            "rkd.cli",
            "run",
            "--log-format",
            "json",
            "--permanent-exit",
            "0",
        ],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": "/Users/me/Library/Logs/rkd/rkd.log",
        "StandardErrorPath": "/Users/me/Library/Logs/rkd/rkd.log",
        "ProcessType": "Background",
        "Umask": 0o077,
    } == doc
    assert (bool, int) == (type(doc["RunAtLoad"]), type(doc["Umask"]))


def launchd_restarts(doc: dict[str, Any], exit_status: int) -> bool:
    """Whether launchd starts the agent ``doc`` again after it exited with ``exit_status``
    (-N: killed by signal N), per launchd.plist(5) for the KeepAlive forms it documents:
    a bool (always / never), or a dict whose SuccessfulExit=true/false restarts after a
    successful (status 0) / an unsuccessful exit. Any other KeepAlive key fails the check:
    this model would no longer say what launchd does."""
    keep = doc.get("KeepAlive", False)
    if isinstance(keep, bool):
        return keep
    assert set(keep) == {"SuccessfulExit"}, f"unmodelled KeepAlive keys: {sorted(keep)}"
    assert isinstance(keep["SuccessfulExit"], bool)
    return (exit_status == 0) == keep["SuccessfulExit"]


def run_agent(sandbox: Sandbox, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the rendered agent's ProgramArguments (this Python's rkd) in the sandbox."""
    argv = plistlib.loads(sv.render_plist([sys.executable, "-m", "rkd.cli"], Path("/h")).encode())
    return subprocess.run(
        argv["ProgramArguments"], env={**sandbox.env, **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_launchd_does_not_restart_a_permanent_failure(sandbox: Sandbox) -> None:
    """The agent's failures that a restart cannot fix (a kill switch, a bad config) end
    in an exit launchd does not restart; a transient failure and a crash are restarted."""
    doc = plistlib.loads(sv.render_plist(["/rkd"], Path("/h")).encode())
    killed = run_agent(sandbox, DO_NOT_TRACK="1")
    assert (0, "Error: telemetry is disabled by DO_NOT_TRACK in the environment; not starting\n") == (
        killed.returncode, killed.stderr,
    )  # fmt: skip
    sandbox.write_config("[telemetry]\nbatch_size = 0\n")
    bad = run_agent(sandbox)
    assert 0 == bad.returncode, bad.stderr
    assert not launchd_restarts(doc, killed.returncode)
    assert not launchd_restarts(doc, bad.returncode)
    assert launchd_restarts(doc, 1)  # `rkd run` exits 1 when a restart may help
    assert launchd_restarts(doc, -signal.SIGKILL)
    assert not launchd_restarts({"KeepAlive": {"SuccessfulExit": False}}, 0)
    assert launchd_restarts({"KeepAlive": {"SuccessfulExit": False}}, 78)  # the old agent


# -- service install / uninstall / status ---------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the real CLI picks systemd")
def test_install_dry_run_prints_everything_and_writes_nothing(sandbox: Sandbox) -> None:
    """--dry-run shows the unit with the rkd found on PATH and the commands; nothing changes."""
    bin_dir = sandbox.root / "bin"
    bin_dir.mkdir()
    (bin_dir / "rkd").write_text("#!/bin/sh\n")
    (bin_dir / "rkd").chmod(0o755)
    proc = sandbox.rkd("service", "install", "--dry-run", PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert 0 == proc.returncode, proc.stderr
    unit = sv.render_unit([str(bin_dir / "rkd")])
    assert (
        f"Would write {sandbox.root / UNIT_PATH} (mode 0644):\n{unit}Would run:\n"
        "  systemctl --user show --property=Version\n"
        "  systemctl --user daemon-reload\n"
        "  systemctl --user enable --now rkd.service\n"
    ) == proc.stdout
    assert not (sandbox.root / "config").exists()


def test_launchd_dry_run(sandbox: Sandbox, fake: FakeRunner) -> None:
    """On macOS --dry-run shows the agent plist and the bootstrap command, and runs nothing."""
    result = invoke(sandbox, "darwin", "service", "install", "--dry-run")
    plist = sandbox.root / PLIST_PATH
    assert (0, []) == (result.exit_code, fake.calls)
    assert result.output.startswith(f"Would write {plist} (mode 0644):\n<?xml")
    assert result.output.endswith(
        f"Would run:\n  launchctl print gui/{UID}\n  launchctl bootstrap gui/{UID} {plist}\n"
    )
    assert f"<string>{RKD}</string>" in result.output
    assert not plist.parent.exists()


def test_systemd_install_then_uninstall(sandbox: Sandbox, fake: FakeRunner) -> None:
    """install writes the unit 0644 and enables it; uninstall disables and removes it."""
    unit = sandbox.root / UNIT_PATH
    result = invoke(sandbox, "linux", "service", "install")
    assert 0 == result.exit_code, result.output
    assert (
        f"Wrote {unit}\n"
        "$ systemctl --user daemon-reload\n"
        "$ systemctl --user enable --now rkd.service\n"
        "rkd service installed (systemd user unit); the daemon is running.\n"
    ) == result.output
    assert [
        ["systemctl", "--user", "show", "--property=Version"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "rkd.service"],
    ] == fake.calls
    assert (0o644, sv.render_unit([RKD])) == (mode(unit), unit.read_text())
    assert f'ExecStart="{RKD}" run --log-format json' in unit.read_text()

    fake.calls.clear()
    status = invoke(sandbox, "linux", "service", "status")
    assert f"Service file: {unit} (installed)\n" == status.output
    assert ["systemctl", "--user", "status", "rkd.service", "--no-pager"] == fake.calls[-1]

    fake.calls.clear()
    result = invoke(sandbox, "linux", "service", "uninstall")
    assert 0 == result.exit_code
    assert [
        ["systemctl", "--user", "show", "--property=Version"],
        ["systemctl", "--user", "disable", "--now", "rkd.service"],
        ["systemctl", "--user", "daemon-reload"],
    ] == fake.calls
    assert not unit.exists()
    again = invoke(sandbox, "linux", "service", "uninstall")
    assert f"rkd service is not installed (no {unit}).\n" == again.output


def test_launchd_install_reinstall_uninstall(sandbox: Sandbox, fake: FakeRunner) -> None:
    """macOS: bootstrap after writing; a reinstall boots the old agent out first."""
    plist = sandbox.root / PLIST_PATH
    domain = f"gui/{UID}"
    assert 0 == invoke(sandbox, "darwin", "service", "install").exit_code
    assert [["launchctl", "print", domain], ["launchctl", "bootstrap", domain, str(plist)]] == (
        fake.calls
    )
    assert 0o644 == mode(plist)
    assert [RKD, "run", "--log-format", "json", "--permanent-exit", "0"] == plistlib.loads(
        plist.read_bytes()
    )["ProgramArguments"]
    assert 0o700 == mode(sandbox.root / "home/Library/Logs/rkd")
    fake.calls.clear()
    assert 0 == invoke(sandbox, "darwin", "service", "install").exit_code
    assert ["launchctl", "bootout", f"{domain}/sh.reasonkit.rkd"] == fake.calls[1]
    fake.calls.clear()
    assert 0 == invoke(sandbox, "darwin", "service", "uninstall").exit_code
    assert [
        ["launchctl", "print", domain],
        ["launchctl", "bootout", f"{domain}/sh.reasonkit.rkd"],
    ] == fake.calls
    assert not plist.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the real CLI picks systemd")
def test_missing_systemctl_is_one_line(sandbox: Sandbox) -> None:
    """No systemctl on PATH: one clear line, exit 1, nothing written."""
    empty = sandbox.root / "empty"
    empty.mkdir()
    proc = sandbox.rkd("service", "install", PATH=str(empty))
    assert (1, "") == (proc.returncode, proc.stdout)
    assert (
        "Error: systemd user services are not available here (systemctl not found); "
        "run 'rkd start' instead or use --dry-run\n"
    ) == proc.stderr
    assert not (sandbox.root / "config").exists()


def test_no_user_bus_is_one_line(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemctl --user without a user session bus: one clear line, nothing written."""
    runner = FakeRunner(1, "Failed to connect to bus: No medium found\n")
    monkeypatch.setattr(sv, "run_command", runner)
    result = invoke(sandbox, "linux", "service", "install")
    assert 1 == result.exit_code
    assert (
        "Error: systemd user services are not available here (no user session bus); "
        "run 'rkd start' instead or use --dry-run\n"
    ) == result.output
    assert [["systemctl", "--user", "show", "--property=Version"]] == runner.calls
    assert not (sandbox.root / "config").exists()


# -- start / stop ------------------------------------------------------------------------------


@pytest.fixture
def no_daemon_left(sandbox: Sandbox) -> Iterator[None]:
    """Kill whatever daemon a test started in the sandbox, however the test ended."""
    try:
        yield
    finally:
        pid = daemon_pid(sandbox.settings.runtime_dir)
        if pid is not None and pid > 0:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: daemon_pid(sandbox.settings.runtime_dir) is None, 10, "the kill")


EMIT = """
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
assert tel.enabled, tel.disabled_reason
for i in range(7):
    tel.thinktool("gigathink", step_count=3, duration_ms=i)
"""


def test_start_and_stop_a_detached_daemon(sandbox: Sandbox, no_daemon_left: Any) -> None:
    """start detaches a daemon that answers; stop ends it after it has written everything."""
    none = sandbox.rkd("stop")
    assert (0, "no rkd daemon is running\n") == (none.returncode, none.stdout)
    proc = sandbox.rkd("start")
    assert 0 == proc.returncode, proc.stderr
    match = re.fullmatch(r"rkd daemon started \(pid (\d+)\)\n", proc.stdout)
    assert match, proc.stdout
    pid = int(match[1])
    assert pid == daemon_pid(sandbox.settings.runtime_dir)
    again = sandbox.rkd("start")
    assert (0, f"rkd daemon is already running (pid {pid})\n") == (again.returncode, again.stdout)
    log = sandbox.root / "home/.local/state/rkd/rkd.log"
    assert (0o700, 0o600) == (mode(log.parent), mode(log))

    sandbox.python(EMIT)
    stopped = sandbox.rkd("stop")
    assert (0, f"rkd daemon stopped (pid {pid}); everything pending was written.\n") == (
        stopped.returncode,
        stopped.stdout,
    )
    assert daemon_pid(sandbox.settings.runtime_dir) is None
    assert 7 == sandbox.count()
    assert "no rkd daemon is running\n" == sandbox.rkd("stop").stdout


def test_start_reports_a_daemon_that_cannot_start(sandbox: Sandbox) -> None:
    """A daemon that exits at once: one line with its last log line, exit 1."""
    proc = sandbox.rkd("start", DO_NOT_TRACK="1")
    assert 1 == proc.returncode
    log = sandbox.root / "home/.local/state/rkd/rkd.log"
    assert (
        "Error: the rkd daemon exited at once (status 78): Error: telemetry is disabled by "
        f"DO_NOT_TRACK in the environment; not starting (log: {log})\n"
    ) == proc.stderr


def test_start_keeps_the_log_bounded(sandbox: Sandbox, no_daemon_left: Any) -> None:
    """A log over 1 MiB is moved to rkd.log.1 when the daemon starts; one old log is kept."""
    log = sandbox.root / "home/.local/state/rkd/rkd.log"
    log.parent.mkdir(parents=True, mode=0o700)
    log.write_bytes(b"old line\n" * 200_000)  # 1.8 MB
    (log.parent / "rkd.log.1").write_bytes(b"older\n")
    assert 0 == sandbox.rkd("start").returncode
    try:
        old = log.parent / "rkd.log.1"
        assert old.read_bytes().startswith(b"old line\n") and old.stat().st_size == 1_800_000
        assert log.stat().st_size < 10_000 and b"daemon_started" in log.read_bytes()
    finally:
        assert 0 == sandbox.rkd("stop").returncode
    small = log.read_bytes()
    assert 0 == sandbox.rkd("start").returncode  # a small log is appended to, not moved
    try:
        assert log.read_bytes().startswith(small)
    finally:
        assert 0 == sandbox.rkd("stop").returncode
