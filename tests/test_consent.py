"""Consent: enable, disable, categories, the record, and what the daemon and clients do."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable

import click
import pytest
from click.testing import CliRunner
from rkd.cli.consent import set_config_enabled
from rkd.cli.main import cli
from rkd.client import schema as s
from rkd.client.consent import read_consent

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import frame

RawPush = Callable[[list[bytes]], None]


@pytest.fixture
def undecided(sandbox: Sandbox) -> Sandbox:
    """A sandbox where no variable decides: consent does."""
    sandbox.env.pop("RK_TELEMETRY_ENABLED")
    return sandbox


def test_enable_with_yes_records_consent(undecided: Sandbox) -> None:
    """`rkd enable --yes` shows the consent text, records the decision and turns telemetry on."""
    proc = undecided.rkd("enable", "--yes")
    assert 0 == proc.returncode, proc.stderr
    assert "ReasonKit Telemetry Consent" in proc.stdout and "What we NEVER collect:" in proc.stdout
    assert "  rkd disable\n" in proc.stdout
    assert proc.stdout.rstrip().endswith(
        "Telemetry enabled. Thank you for helping improve ReasonKit!\n"
        "No rkd daemon is running, so nothing is stored yet: start one with 'rkd start',"
        " or keep one running with 'rkd service install'."
    )
    st = undecided.settings
    assert (True, "consent") == (st.enabled, st.decided_by)
    record = read_consent(st.data_dir).current
    assert record is not None
    assert ("granted", "1", "1.0.0") == (
        record.choice,
        record.consent_text_version,
        record.schema_version,
    )
    assert set(s.CATEGORIES) == set(record.categories)
    assert 0o600 == stat.S_IMODE((st.data_dir / "consent.json").stat().st_mode)
    status = json.loads(undecided.rkd("status", "--json").stdout)
    assert ("consent", "granted") == (status["decided_by"], status["consent"]["current"]["choice"])


def answer_on_a_terminal(sandbox: Sandbox, args: list[str], answer: bytes) -> str:
    """Run `rkd args` with a pseudo-terminal as stdin, type ``answer``; return stdout."""
    import os

    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rkd.cli", *args], env=sandbox.env,
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.close(slave)
    os.write(master, answer)
    out, err = proc.communicate(timeout=30)
    os.close(master)
    assert 0 == proc.returncode, err
    return out


@pytest.mark.parametrize(("answer", "enabled"), [(b"\n", False), (b"n\n", False), (b"y\n", True)])
def test_enable_asks_and_defaults_to_no(undecided: Sandbox, answer: bytes, enabled: bool) -> None:
    """The prompt is [y/N]: Enter means no; 'y' means yes."""
    out = answer_on_a_terminal(undecided, ["enable"], answer)
    assert "Do you consent to telemetry collection? [y/N]: " in out
    assert enabled == undecided.settings.enabled
    assert ("Telemetry enabled." in out) == enabled and ("Nothing changed" in out) != enabled


def test_enable_without_a_terminal_refuses(undecided: Sandbox) -> None:
    """No terminal and no --yes: one clear line, nothing recorded."""
    proc = subprocess.run([sys.executable, "-m", "rkd.cli", "enable"], env=undecided.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    assert 1 == proc.returncode
    assert proc.stderr.endswith(
        "Error: consent needs your answer: run this in a terminal, or pass --yes to agree\n"
    )
    assert not (undecided.settings.data_dir / "consent.json").exists()


@pytest.mark.parametrize("var", ["DO_NOT_TRACK", "RK_TELEMETRY_ENABLED", "REASONKIT_TELEMETRY"])
def test_enable_under_kill_switch_changes_nothing(undecided: Sandbox, var: str) -> None:
    """A kill switch overrides: enable says so and records nothing."""
    proc = undecided.rkd("enable", "--yes", **{var: "1" if var == "DO_NOT_TRACK" else "false"})
    assert 1 == proc.returncode
    assert f"Error: {var} is set in your environment and overrides everything" in proc.stderr
    assert not (undecided.settings.data_dir / "consent.json").exists()


def test_enable_only_some_categories(
    undecided: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """Events of categories the user did not consent to are never stored."""
    undecided.rkd("enable", "--yes", "--only", "command_usage,error_types")
    d = start_daemon()
    raw_push([frame(s.CommandExecuted(command="think")), frame(s.ThinkToolCompleted(tool_name="gigathink")),
              frame(s.ErrorOccurred(error_category="timeout"))])  # fmt: skip
    wait_for(lambda: d.counter("rejected.category_off") == 1, what="the refused ThinkTool event")
    d.flush()
    # no session_started either: session metadata was not consented to
    assert [("command_executed",), ("feature_first_use",), ("error_occurred",)] == (
        undecided.query("SELECT event_type FROM events ORDER BY id")
    )
    cats = json.loads(undecided.rkd("status", "--json").stdout)["categories"]
    assert {"command_usage": True, "error_types": True, "performance": False,
            "session_metadata": False, "thinktool_usage": False} == cats  # fmt: skip


def test_unknown_category_is_one_line(undecided: Sandbox) -> None:
    """A misspelt category is refused with the list of valid ones."""
    proc = undecided.rkd("enable", "--yes", "--only", "commands")
    assert 2 == proc.returncode
    assert "unknown category 'commands'; choose from command_usage, performance" in proc.stderr


def test_disable_withdraws_and_the_daemon_stops_accepting(
    undecided: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """After `rkd disable` the daemon writes what it holds and accepts nothing more."""
    undecided.write_config("[telemetry]\nbatch_size = 1000\nflush_interval_secs = 3600\n")
    undecided.rkd("enable", "--yes")
    d = start_daemon()
    raw_push([frame(s.HelpViewed(topic="think")) for _ in range(3)])
    wait_for(lambda: d.counter("accepted") == 3, what="3 pending")
    proc = undecided.rkd("disable")
    assert (
        "Telemetry disabled.\nExisting data retained. Use 'rkd delete' to remove.\n" == proc.stdout
    )
    assert 3 == undecided.count()  # flushed, retained
    raw_push([frame(s.HelpViewed(topic="think"))])
    wait_for(lambda: d.counter("rejected.disabled") == 1, what="the refused event")
    f = read_consent(undecided.settings.data_dir)
    assert f.current is not None and "withdrawn" == f.current.choice
    assert ["granted"] == [r.choice for r in f.history]


def test_disable_one_category(undecided: Sandbox) -> None:
    """`rkd disable --category` keeps the others."""
    undecided.rkd("enable", "--yes")
    proc = undecided.rkd("disable", "--category", "performance")
    assert "Category 'performance' disabled; still collected:" in proc.stdout
    assert "performance" not in undecided.settings.categories
    assert undecided.settings.enabled


def test_running_application_stops_sending_after_disable(
    undecided: Sandbox, daemon: Daemon
) -> None:
    """An application notices `rkd disable` within seconds (two stats, no file read per event).

    Counted where the client sends, not only where the daemon accepts: the daemon
    rejects everything after `disable` anyway, so its count alone could not fail.
    """
    undecided.rkd("enable", "--yes")
    app = undecided.spawn_python("""
        import sys, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(80):
            tel.thinktool("gigathink")
            time.sleep(0.1)
        print(tel._transport.sent, flush=True)
        tel.close()
    """)
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    undecided.rkd("disable")
    app.stdin.write("go\n")
    app.stdin.flush()
    out, err = app.communicate(timeout=60)
    assert 0 == app.returncode, err
    sent = int(out)
    assert 0 < sent <= 60, f"{sent} events sent after disable"  # at most ~5 s worth
    accepted = daemon.counter("accepted")
    assert accepted <= 60, f"{accepted} events accepted after disable"


def test_config_enabled_line_is_edited_in_place(tmp_path: __import__("pathlib").Path) -> None:
    """Only the `enabled` line of [telemetry] changes; comments and other tables stay."""
    cfg = tmp_path / "config.toml"
    text = ("# my settings\n[ui]\nenabled = false  # not ours\n\n[telemetry]\n"
            "# master switch\nenabled = false   # I said no\nbatch_size = 10\n")  # fmt: skip
    cfg.write_text(text)
    cfg.chmod(0o640)
    assert set_config_enabled(cfg, True)
    assert (
        text.replace("enabled = false   # I said no", "enabled = true   # I said no")
        == cfg.read_text()
    )
    assert 0o640 == stat.S_IMODE(cfg.stat().st_mode)
    assert not set_config_enabled(cfg, True)  # already so: untouched


def test_enable_flips_a_config_that_says_no(undecided: Sandbox) -> None:
    """When config.toml says enabled = false, enable changes that line and says so."""
    path = undecided.write_config("[telemetry]\nenabled = false # comment kept\n")
    proc = undecided.rkd("enable", "--yes")
    assert f"(Changed 'enabled = false' to 'enabled = true' in {path}.)" in proc.stdout
    assert "[telemetry]\nenabled = true # comment kept\n" == path.read_text()
    assert (True, "config") == (undecided.settings.enabled, undecided.settings.decided_by)


def test_mounted_group_behaves_like_rkd(undecided: Sandbox) -> None:
    """A host CLI mounts `telemetry` in one line; `host telemetry status` equals `rkd status`."""
    from rkd.cli import telemetry

    @click.group()
    def rk_core() -> None:
        """A host application."""

    rk_core.add_command(telemetry)
    runner = CliRunner()
    env = dict(undecided.env)
    hosted = runner.invoke(rk_core, ["telemetry", "status", "--json"], env=env)
    direct = runner.invoke(cli, ["status", "--json"], env=env)
    assert 0 == hosted.exit_code, hosted.output
    assert json.loads(direct.stdout) == json.loads(hosted.stdout)
    consent = runner.invoke(rk_core, ["telemetry", "enable", "--yes"], env=env, prog_name="rk-core")
    assert "  rk-core telemetry disable\n" in consent.output
    assert (
        "Use 'rk-core telemetry delete' to remove."
        in runner.invoke(rk_core, ["telemetry", "disable"], env=env, prog_name="rk-core").output
    )
