"""The user's controls: show, explain, delete — through click's runner and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import msgspec.inspect as mi
from click.testing import CliRunner
from rkd.cli.main import cli
from rkd.client import schema as s
from rkd.client.spool import spool_files

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import frame

RawPush = Callable[[list[bytes]], None]


def pending_setup(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> Daemon:
    sandbox.write_config("[telemetry]\nbatch_size = 1000\nflush_interval_secs = 3600\n")
    d = start_daemon()
    raw_push([
        frame(s.CommandExecuted(command="think", profile="balanced", thinktool_count=4,
                                execution=s.Execution(duration_ms=2543),
                                tokens=s.Tokens(input=1500, output=800))),
        frame(s.ThinkToolCompleted(tool_name="gigathink", step_count=4, duration_ms=650,
                                   confidence_score=0.82)),
        frame(s.HelpViewed(topic="AKIAIOSFODNN7EXAMPLE")),
    ])  # fmt: skip
    wait_for(lambda: d.counter("accepted") == 3, what="3 pending")
    return d


# What pending_setup leaves pending, with what the daemon derives around the three.
PENDING_TYPES = ["session_started", "command_executed", "feature_first_use", "feature_first_use",
                 "thinktool_completed", "feature_first_use", "help_viewed"]  # fmt: skip


def test_show_lists_pending_events_after_the_firewall(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """`rkd show` prints the pending events in the spec's layout, already filtered."""
    pending_setup(sandbox, start_daemon, raw_push)
    out = sandbox.rkd("show").stdout
    assert out.startswith(
        "Pending Telemetry Events (not yet flushed)\n==========================================\n\n"
        "Event 1: session_started\n  reason: first\n\n"
        "Event 2: command_executed\n  command: think\n  profile: balanced\n"
    )
    assert "  execution.duration_ms: 2543\n" in out and "  tokens.input: 1500\n" in out
    assert (
        "Event 5: thinktool_completed\n  tool_name: gigathink\n  step_count: 4\n  duration_ms: 650\n  confidence_score: 0.82\n"
        in out
    )
    assert "Event 6: feature_first_use\n  feature_id: thinktool.gigathink\n" in out
    # The firewall's placeholder is no declared topic: the developer sees it would be
    # uploaded as __other__ (issue 11: "so a developer sees their typo in rkd show").
    assert ("Event 7: help_viewed\n  topic: [API_KEY]   <- undeclared: uploaded as __other__\n"
            in out and "AKIA" not in out)  # fmt: skip
    assert out.endswith("Total: 7 events pending\n")
    data = json.loads(sandbox.rkd("show", "--json").stdout)
    assert 7 == data["pending"]
    assert PENDING_TYPES == [e["event_type"] for e in data["events"]]
    assert [1, 2, 3, 4, 5, 6, 7] == [e["session"]["sequence"] for e in data["events"]]
    assert [[], [], [], [], [], [], ["topic"]] == [e["undeclared"] for e in data["events"]]


def test_show_needs_the_daemon(sandbox: Sandbox) -> None:
    """With no daemon, show says so in one line."""
    proc = sandbox.rkd("show")
    assert 1 == proc.returncode
    assert (
        "Error: the rkd daemon is not running (start it with 'rkd start', or keep it running with 'rkd service install'); pending events live in the daemon's memory\n"
        == proc.stderr
    )


def test_explain_covers_every_event_type_and_field() -> None:
    """Generated from the schema: every event type and every field appears, with a meaning."""
    result = CliRunner().invoke(cli, ["explain", "--json"])
    doc = json.loads(result.stdout)
    by_type = {e["event_type"]: e for e in doc["events"]}
    assert set(s.BY_EVENT_TYPE) == set(by_type)
    for cls in s.PAYLOAD_TYPES:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        names = {f["name"].split(".")[0] for f in by_type[cls.event_type]["fields"]}
        assert {f.name for f in info.fields} == names, cls.event_type
        assert cls.category == by_type[cls.event_type]["category"]
    assert [] == [
        (e["event_type"], f["name"])
        for e in doc["events"]
        for f in e["fields"]
        if not f["description"]
    ]
    assert {"Query content", "API keys", "Network data", "Credentials"} <= {
        n["category"] for n in doc["never_collected"]
    }
    assert set(s.CATEGORIES) == {c["name"] for c in doc["categories"]}
    text = CliRunner().invoke(cli, ["explain"]).output
    assert all(t in text for t in s.BY_EVENT_TYPE)


def test_delete_with_daemon_erases_everything(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """`rkd delete --confirm` with the daemon: stored, pending, spool, salt — all gone."""
    d = pending_setup(sandbox, start_daemon, raw_push)
    d.flush()
    raw_push([frame(s.HelpViewed(topic="think"))])
    wait_for(lambda: d.counter("accepted") == 4, what="1 pending")
    salt = (sandbox.settings.data_dir / ".rk_salt").read_bytes()
    proc = sandbox.rkd("delete", "--confirm")
    assert 0 == proc.returncode, proc.stderr
    assert (
        "Events to be deleted: 8\n" in proc.stdout  # 7 stored, 1 pending
        and "Deleted 8 events.\nDatabase vacuumed, freed " in proc.stdout
    )
    assert (0, 0) == (sandbox.count(), d.status().pending)
    assert salt != (sandbox.settings.data_dir / ".rk_salt").read_bytes()


def test_delete_without_daemon(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """With the daemon down, delete erases the database and the spool itself."""
    d = pending_setup(sandbox, start_daemon, raw_push)
    d.stop()
    sandbox.python("""
        from rkd.client import Telemetry
        Telemetry(product="reasonkit-core", version="1.0.0").thinktool("x")
    """)
    assert 1 == len(spool_files(sandbox.settings.spool_dir))
    proc = sandbox.rkd("delete", "--confirm")
    assert 0 == proc.returncode, proc.stderr
    assert f"Deleted {len(PENDING_TYPES) + 1} events." in proc.stdout  # the spooled one too
    assert (0, []) == (sandbox.count(), spool_files(sandbox.settings.spool_dir))
    assert not (sandbox.settings.data_dir / ".rk_salt").exists()


def test_delete_asks_first(sandbox: Sandbox, daemon: Daemon, raw_push: RawPush) -> None:
    """Without --confirm: a [y/N] prompt on a terminal (No keeps everything); no terminal: refused."""
    raw_push([frame(s.HelpViewed(topic="think"))])
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count() == 1, what="stored")
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rkd.cli", "delete"], env=sandbox.env, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.close(slave)
    os.write(master, b"\n")
    out, _ = proc.communicate(timeout=30)
    os.close(master)
    assert "Are you sure? [y/N]: " in out and "Nothing deleted." in out
    assert 1 == sandbox.count()
    refused = subprocess.run([sys.executable, "-m", "rkd.cli", "delete"], env=sandbox.env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    assert 1 == refused.returncode and "pass --confirm" in refused.stderr
    assert 1 == sandbox.count()


def test_every_command_works_with_the_daemon_down_but_show(sandbox: Sandbox) -> None:
    """Every command answers without a daemon; only show says it needs one."""
    for args in (
        ["status"],
        ["explain"],
        ["audit"],
        ["enable", "--yes"],
        ["disable"],
        ["delete", "--confirm"],
    ):
        proc = sandbox.rkd(*args)
        assert 0 == proc.returncode, (args, proc.stderr)
    assert 1 == sandbox.rkd("show").returncode


def test_show_and_delete_through_clicks_runner(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """show and delete also run in-process through click's runner (as a host app would)."""
    pending_setup(sandbox, start_daemon, raw_push)
    runner = CliRunner()
    shown = runner.invoke(cli, ["show", "--json"], env=dict(sandbox.env))
    assert 0 == shown.exit_code, shown.output
    assert len(PENDING_TYPES) == json.loads(shown.stdout)["pending"]
    deleted = runner.invoke(cli, ["delete", "--confirm"], env=dict(sandbox.env))
    assert 0 == deleted.exit_code, deleted.output
    assert f"Deleted {len(PENDING_TYPES)} events." in deleted.output
    assert 0 == sandbox.count()


def test_explain_as_a_real_process_beside_a_daemon(sandbox: Sandbox, daemon: Daemon) -> None:
    """`rkd explain` as a subprocess, daemon running: the same document as in-process."""
    proc = sandbox.rkd("explain", "--json")
    assert 0 == proc.returncode
    assert json.loads(CliRunner().invoke(cli, ["explain", "--json"]).stdout) == json.loads(
        proc.stdout
    )


def test_export_delete_export_shows_everything_gone(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """Export, delete, export: the second export is empty and the hashing salt is new."""
    d = pending_setup(sandbox, start_daemon, raw_push)
    d.flush()
    first = json.loads(sandbox.rkd("export").stdout)
    assert PENDING_TYPES == [e["event_type"] for e in first["events"]]
    assert len(PENDING_TYPES) == first["event_count"]
    salt = (sandbox.settings.data_dir / ".rk_salt").read_bytes()
    assert 0 == sandbox.rkd("delete", "--confirm").returncode
    second = json.loads(sandbox.rkd("export").stdout)
    assert ([], 0) == (second["events"], second["event_count"])
    assert salt != (sandbox.settings.data_dir / ".rk_salt").read_bytes()
    metrics = json.loads(sandbox.rkd("metrics", "--json").stdout)
    assert (0, 0) == (metrics["queries"], metrics["sessions"])
