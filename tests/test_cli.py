"""The `rkd` commands of the core pipeline: status, flush, run, demo."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import click
import pytest
from click.testing import CliRunner
from rkd.cli.main import cli
from rkd.client import schema as s

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import frame

RawPush = Callable[[list[bytes]], None]


def test_status_with_nothing_installed_yet(sandbox: Sandbox) -> None:
    """Fresh machine, telemetry off: status answers and creates no file."""
    sandbox.env.pop("RK_TELEMETRY_ENABLED")
    sandbox.env.pop("XDG_DATA_HOME")
    proc = sandbox.rkd("status")
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert ["Telemetry Status", "================"] == lines[:2]
    assert "Enabled:        false (opt-in required)" == lines[2]
    assert "Database:       ~/.local/share/reasonkit/.rk_telemetry.db (0 B)" == lines[3]
    assert [
        "Events Stored:  0",
        "Last Flush:     never",
        "Cloud Sync:     off (nothing leaves this machine)",
    ] == lines[4:7]
    assert "Daemon:         not running" in lines
    assert not (sandbox.root / "data").exists() and not (sandbox.root / "home/.local").exists()


def test_status_json_with_daemon_up_then_down(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """--json shows daemon, pid, stored, pending, counters; the same data with the daemon down."""
    raw_push([frame(s.HelpViewed(topic="think")) for _ in range(3)] + [b"junk"])
    wait_for(lambda: daemon.counter("accepted") == 3, what="3 pending")
    up = json.loads(sandbox.rkd("status", "--json").stdout)
    # pending: the three, and session_started before them (the daemon's own)
    assert (True, daemon.proc.pid, 0, 4) == (up["daemon"]["running"], up["daemon"]["pid"],
                                             up["events_stored"], up["pending"])  # fmt: skip
    assert {"accepted": 3, "rejected.malformed": 1} == up["counters"]
    assert (True, "env:RK_TELEMETRY_ENABLED") == (up["enabled"], up["decided_by"])
    daemon.stop()
    down = json.loads(sandbox.rkd("status", "--json").stdout)
    assert (False, None, 4, None) == (down["daemon"]["running"], down["daemon"]["pid"],
                                      down["events_stored"], down["pending"])  # fmt: skip
    assert {"accepted": 3, "rejected.malformed": 1} == down["counters"]
    assert down["last_flush"] is not None
    human = sandbox.rkd("status").stdout
    assert "Rejected:       malformed 1" in human and "Events Stored:  4" in human


def test_status_shows_kill_switch(sandbox: Sandbox) -> None:
    """The status names the kill switch that decided."""
    proc = sandbox.rkd("status", DO_NOT_TRACK="1")
    assert "Enabled:        false (kill switch: DO_NOT_TRACK)" in proc.stdout


def test_flush_command(sandbox: Sandbox, daemon: Daemon, raw_push: RawPush) -> None:
    """`rkd flush` writes what is pending and says how much."""
    raw_push([frame(s.HelpViewed(topic="think")) for _ in range(4)])
    wait_for(lambda: daemon.counter("accepted") == 4, what="4 pending")
    proc = sandbox.rkd("flush")
    assert (0, "Flushed 5 events.\n") == (proc.returncode, proc.stdout)  # and session_started
    assert 4 == sandbox.count()


def test_flush_without_daemon_is_one_line(sandbox: Sandbox) -> None:
    """`rkd flush` with no daemon: one clear line, exit 1."""
    proc = sandbox.rkd("flush")
    assert 1 == proc.returncode
    assert (
        "Error: the rkd daemon is not running (start it with 'rkd start', or keep it running with 'rkd service install'); nothing is pending while it is down\n"
        == proc.stderr
    )


def test_demo_runs_end_to_end_and_cleans_up(sandbox: Sandbox) -> None:
    """`rkd demo` emits through the real client from several processes and reports it."""
    before = set(__import__("os").listdir("/tmp"))
    proc = sandbox.rkd("demo", "--events", "300", "--processes", "3", timeout=120)
    assert 0 == proc.returncode, proc.stderr
    out = proc.stdout
    assert "Events:        300 in 1 session\nDerived:       " in out  # exactly as asked
    assert "command_executed" in out and "thinktool_completed" in out and "error_occurred" in out
    assert "daemon stopped gracefully" in out
    assert "privacy firewall: replaced aws_access_key 1 before anything was stored" in out
    assert "AKIAIOSFODNN7EXAMPLE" not in out
    # Every value the demo sends is declared, but the key planted as an error code: the
    # firewall's placeholder that replaced it is no declared error code.
    total = int(re.search(r"Upload check:  ([0-9,]+) of ([0-9,]+) events", out)[2].replace(",", ""))  # type: ignore[index]
    assert f"Upload check:  {total - 1:,} of {total:,} events hold only" in out
    assert "  undeclared error_code    1 (would be uploaded as __other__)" in out
    assert not {
        n for n in set(__import__("os").listdir("/tmp")) - before if n.startswith("rkd-demo-")
    }
    assert not (sandbox.root / "data").exists()


def test_demo_ignores_the_users_kill_switch_only_inside_its_sandbox(sandbox: Sandbox) -> None:
    """The demo works under DO_NOT_TRACK (its sandbox is throwaway) and writes nothing of the user's."""
    proc = sandbox.rkd("demo", "--events", "20", "--processes", "1", DO_NOT_TRACK="1", timeout=120)
    assert 0 == proc.returncode, proc.stderr
    assert "Events:        20 in 1 session\n" in proc.stdout
    assert not (sandbox.root / "data").exists()


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI, groups included, found by walking it."""
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, (*prefix, name))
    return out


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    """`--help` of every command (found by walking the CLI) shows an example."""
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert 0 == result.exit_code
    assert "Example:" in result.output or "Examples:" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["status", "--bogus"], "No such option '--bogus'"),
    (["demo", "--events", "0"], "Invalid value for '--events'"),
    (["demo", "--processes", "many"], "Invalid value for '--processes'"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
])  # fmt: skip
def test_cli_mistakes_are_one_clear_line(args: list[str], message: str) -> None:
    """Bad arguments: a usage error (exit 2), never a traceback."""
    result = CliRunner().invoke(cli, args)
    assert 2 == result.exit_code
    assert message in result.output
    assert "Traceback" not in result.output
