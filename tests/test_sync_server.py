"""Issue 12 against issue 13: the real daemon syncs to the real `rkd-server` (TLS 1.3,
a test CA, embedded ClickHouse): each event lands once, undeclared values as
__other__, the daemon's own session events never leave, and a restart of the daemon
mid-way does not duplicate anything."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rkd.client import schema as s
from rkd.client.upload import OTHER

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import frame
from tests.server_harness import RunningServer, start_server

KEY_ID, SECRET_HEX = "k_sync0001", "a1" * 32
RawPush = Callable[[list[bytes]], None]


def pro_server(sandbox: Sandbox, tmp_path: Path, extra: str = "") -> RunningServer:
    """The real server with this test's Pro key, and the sandbox's daemon set to sync
    to it (started by the caller)."""
    server = start_server(tmp_path, keys={KEY_ID: bytes.fromhex(SECRET_HEX)})
    sandbox.env.update(RK_TELEMETRY_SYNC_KEY_ID=KEY_ID, RK_TELEMETRY_SYNC_SECRET=SECRET_HEX)
    sandbox.write_config(
        f'[telemetry]\nsync_enabled = true\nsync_endpoint = "https://127.0.0.1:{server.port}"\n'
        f'flush_interval_secs = 0.2\n[telemetry.sync]\nca_file = "{server.ca}"\n'
        f"interval_secs = 1\n{extra}"
    )
    return server


def test_the_daemon_syncs_to_the_real_server_exactly_once(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush, tmp_path: Path
) -> None:
    from rkd.server.warehouse import Warehouse, connect

    server = pro_server(sandbox, tmp_path, "max_batch_events = 7\n")
    try:
        d = start_daemon()
        frames = [frame(s.CommandExecuted(command="think" if i % 2 else "my-private-dir"))
                  for i in range(20)]  # fmt: skip
        raw_push(frames[:10])

        def results() -> list[str]:
            proc = sandbox.rkd("sync", "log", "--json")
            return [r["result"] for r in json.loads(proc.stdout) if r["kind"] == "events"]

        wait_for(lambda: any(r.startswith("ok") for r in results()), timeout=30, what="a batch")
        d.stop()
        d = start_daemon()
        raw_push(frames[10:])
        wait_for(lambda: d.flush() >= 0 and json.loads(
            sandbox.rkd("sync", "status", "--json").stdout)["queue_depth"] == 0,
            timeout=40, what="everything sent")  # fmt: skip
        # A round may be retried (a rate limit, a restart mid-request); none is refused.
        assert not any(r.startswith("quarantine") for r in results()), results()
        d.stop()
    finally:
        server.stop()
    wh = Warehouse(connect(f"chdb://{(server.data_dir / 'warehouse').resolve()}"))
    try:
        rows = wh.rows("SELECT event_type, subject FROM {db}.events")
    finally:
        wh.close() if hasattr(wh, "close") else None
    commands = sorted(subject for kind, subject in rows if kind == "command_executed")
    assert [OTHER] * 10 + ["think"] * 10 == commands
    assert not any(kind.startswith("session_") for kind, _ in rows)


def test_community_reports_reach_the_real_server(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    from rkd.server.warehouse import Warehouse, connect

    from tests.test_community import plant_history

    plant_history(sandbox, (2, 1), since_days_ago=3)
    server = start_server(tmp_path)
    try:
        sandbox.write_config(
            f"[telemetry]\ncommunity_contribution = true\n"
            f'sync_endpoint = "https://127.0.0.1:{server.port}"\n'
            f'[telemetry.sync]\nca_file = "{server.ca}"\ninterval_secs = 1\n'
        )
        sandbox.env["RK_TELEMETRY_REPORTS_SEND_NOW"] = "1"
        d = start_daemon()
        wait_for(lambda: json.loads(sandbox.rkd("sync", "status", "--json").stdout)["reports"]
                 == {"sent": 2, "waiting": 0}, timeout=30, what="two reports sent")  # fmt: skip
        log = json.loads(sandbox.rkd("sync", "log", "--json").stdout)
        assert ["ok 202", "ok 202"] == [r["result"] for r in log if r["kind"] == "report"]
        d.stop()
    finally:
        server.stop()
    wh = Warehouse(connect(f"chdb://{(server.data_dir / 'warehouse').resolve()}"))
    assert 2 == wh.scalar("SELECT sum(reports) FROM {db}.reports_daily")
    counts = dict(wh.rows("SELECT key, sum(n) FROM {db}.report_counts_daily FINAL GROUP BY key"))
    assert {"think": 2, OTHER: 2} == counts  # one of each a day, over two days


def test_access_and_erasure_in_the_cloud(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush, tmp_path: Path
) -> None:
    """`rkd export --cloud` returns what the server holds for this install's sessions;
    `rkd delete` has the daemon ask the server to erase them, until it confirms."""
    from rkd.server.warehouse import Warehouse, connect

    server = pro_server(sandbox, tmp_path)
    try:
        d = start_daemon()
        raw_push([frame(s.CommandExecuted(command="think")) for _ in range(6)])
        wait_for(lambda: d.flush() >= 0 and json.loads(
            sandbox.rkd("sync", "status", "--json").stdout)["queue_depth"] == 0
            and sandbox.count() == 6, timeout=40, what="sent")  # fmt: skip
        out = sandbox.rkd("export", "--cloud", "--format", "json")
        assert 0 == out.returncode, out.stderr
        cloud = json.loads(out.stdout)
        kinds = [e["event_type"] for e in cloud["events"]]
        assert 6 == kinds.count("command_executed") and 1 == cloud["sessions"]
        proc = sandbox.rkd("delete", "--confirm")
        assert 0 == proc.returncode, proc.stderr
        assert "Asked the server to erase what was uploaded (1 sessions)" in proc.stdout

        def erasure() -> list[str]:
            log = json.loads(sandbox.rkd("sync", "log", "--json").stdout)
            return [r["result"] for r in log if r["kind"] == "erasure"]

        wait_for(lambda: any(r.startswith("ok") for r in erasure()), timeout=30, what="erased")
        assert f"ok 200: the server erased {len(kinds)} events" == erasure()[-1]
        assert 0 == json.loads(sandbox.rkd("sync", "status", "--json").stdout)["queue_depth"]
        d.stop()
    finally:
        server.stop()
    wh = Warehouse(connect(f"chdb://{(server.data_dir / 'warehouse').resolve()}"))
    assert 0 == wh.scalar("SELECT count() FROM {db}.events")
    assert [(1, 1, len(kinds))] == wh.rows(
        "SELECT requests, sessions, events_deleted FROM {db}.erasures"
    )
