"""The client inside an application: manners, delivery, spool, fork, the SDK surface."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import rkd.client
from rkd.client.command import error_category
from rkd.client.spool import spool_files
from rkd.client.wire import BATCH_EVENTS

from tests.conftest import APP, Daemon, Sandbox, go, wait_for
from tests.samples import leaving_client

EMIT = """
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
assert tel.enabled, tel.disabled_reason
for i in range({n}):
    tel.thinktool("gigathink", step_count=3, duration_ms=i)
"""


def test_import_does_no_io_no_thread_no_zmq(sandbox: Sandbox) -> None:
    """Importing rkd.client (and Telemetry) starts no thread, opens nothing, imports no zmq."""
    sandbox.python("""
        import sys, threading
        opened = []
        sys.addaudithook(lambda ev, args: opened.append(args[0]) if ev == "open" and not str(args[0]).endswith((".py", ".pyc", ".so")) and "__pycache__" not in str(args[0]) and not str(args[0]).endswith("/") else None)
        import rkd.client
        from rkd.client import Telemetry
        assert "zmq" not in sys.modules
        assert 1 == threading.active_count()
        assert [] == [p for p in opened if "site-packages" not in str(p) and "python3" not in str(p)], opened
    """)


AUDIT = """
import sys, os
from rkd.client import Telemetry
from rkd.client import schema
from rkd.client.command import CommandRecorder
import rkd.client.config, rkd.client.consent  # module loading is not what is audited
seen = []
def _hook(ev, args):
    path = str(args[0]) if args else ""
    if ev.startswith("socket.") or (ev in ("open", "os.mkdir", "os.listdir", "os.scandir")
            and not path.startswith((sys.prefix, sys.base_prefix))):  # module imports
        seen.append((ev, path))
sys.addaudithook(_hook)
tel = Telemetry(product="reasonkit-core", version="1.0.0")
tel.thinktool("gigathink")
with tel.command("think", profile="quick") as cmd:
    cmd.tokens(input=1)
tel.error("timeout")
tel.emit(schema.HelpViewed(topic="think"))
tel.close()
print(repr((tel.enabled, tel.disabled_reason, "zmq" in sys.modules, seen)))
"""


@pytest.mark.parametrize(
    ("var", "value"),
    [("DO_NOT_TRACK", "1"), ("RK_TELEMETRY_ENABLED", "false"), ("REASONKIT_TELEMETRY", "false")],
)
def test_kill_switch_reads_nothing_opens_nothing(
    sandbox: Sandbox, daemon: Daemon, var: str, value: str
) -> None:
    """With a kill switch the client reads no file, opens no socket and never imports zmq."""
    sandbox.write_config("[telemetry]\nenabled = true\n")
    out = sandbox.python(AUDIT, **{var: value}).stdout
    assert (False, f"disabled by {var} in the environment", False, []) == eval(out)
    assert not sandbox.settings.spool_dir.exists()
    assert 0 == daemon.status().events_stored + daemon.status().pending


def test_disabled_by_config_reads_the_config_once_and_nothing_else(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Off by config: the config file is read once; no socket, no zmq, nothing written."""
    path = sandbox.write_config("[telemetry]\nenabled = false\n")
    env = {k: v for k, v in sandbox.env.items() if k != "RK_TELEMETRY_ENABLED"}
    sandbox.env = env
    enabled, reason, zmq_loaded, seen = eval(sandbox.python(AUDIT).stdout)
    assert (False, "disabled (config)", False) == (enabled, reason, zmq_loaded)
    assert [("open", str(path))] == seen
    assert not sandbox.settings.spool_dir.exists()


def test_broken_config_leaves_the_application_running_disabled(sandbox: Sandbox) -> None:
    """A config the client cannot read: disabled, with the one-line reason, no exception."""
    path = sandbox.write_config("[telemetry]\nbatch_size = 'x'\n")
    enabled, reason, _, _ = eval(sandbox.python(AUDIT).stdout)
    assert (False, f"{path}: telemetry.batch_size: expected `int`, got `str`") == (enabled, reason)


# What an installed application loads beyond ``import msgspec, zmq`` (the floor of issue
# 15's one-shot budget) is rkd's own cost. pathlib alone, with the urllib.parse and
# ipaddress it imports, was ~4 ms of it. The editable install's import hook loads pathlib
# into every interpreter, so these run without site (-S), with rkd and its dependencies
# on PYTHONPATH as an installed package sees them.
ONE_SHOT = """
import json, sys
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
assert tel.enabled, tel.disabled_reason
tel.thinktool("oneshot", step_count=1)
tel.close()
print(json.dumps(sorted(sys.modules)))
"""
FLOOR = "import json, sys, msgspec, zmq\nprint(json.dumps(sorted(sys.modules)))"
BEYOND_THE_FLOOR = {"fcntl"}  # and rkd's own modules


def _installed_modules(sandbox: Sandbox, code: str) -> set[str]:
    tree = sandbox.root / "installed"
    if not tree.exists():
        (tree / "rkd").mkdir(parents=True)
        (tree / "rkd" / "client").symlink_to(Path(rkd.client.__file__).parent)
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {**sandbox.env, "PYTHONPATH": os.pathsep.join([str(tree), *site])}
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


@pytest.mark.parametrize("up", [True, False], ids=["daemon", "no-daemon"])
def test_a_one_shot_loads_nothing_heavy_beyond_msgspec_and_zmq(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], up: bool
) -> None:
    """Emit one event and exit, delivered or spooled: beyond what ``import msgspec, zmq``
    loads, only rkd's own modules and fcntl; no pathlib, urllib, ipaddress, tempfile."""
    daemon = start_daemon() if up else None
    extra = _installed_modules(sandbox, ONE_SHOT) - _installed_modules(sandbox, FLOOR)
    assert "rkd.client.transport" in extra  # the event did go through the transport
    assert set() == {m for m in extra if m.split(".")[0] != "rkd"} - BEYOND_THE_FLOOR
    if daemon is not None:
        daemon.flush()
        assert 1 == sandbox.count("event_type = 'thinktool_completed'")
    else:
        assert 1 == len(spool_files(sandbox.settings.spool_dir))


def test_no_home_folder_leaves_the_application_running_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No HOME and a user the password database does not know (the one thing faked
    here): nowhere to resolve the paths against, so the client stays off and writes
    nothing, not a "~" folder in the working directory."""
    import pwd

    from rkd.client import Telemetry

    def unknown(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", unknown)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    tel = Telemetry(product="reasonkit-core", version="1.0.0",
                    env={"RK_TELEMETRY_ENABLED": "true"})  # fmt: skip
    tel.thinktool("gigathink")
    tel.close()
    assert (False, "cannot resolve the settings: RuntimeError") == (
        tel.enabled,
        tel.disabled_reason,
    )
    assert [] == list(tmp_path.iterdir())


def test_events_from_four_processes_stored_exactly_once(sandbox: Sandbox, daemon: Daemon) -> None:
    """1,000 events from 4 concurrent processes are all stored, each exactly once."""
    procs = [sandbox.spawn_python(EMIT.format(n=250)) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert 0 == p.returncode, err
    daemon.flush()
    assert [(1000, 1000)] == sandbox.query(
        f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE {APP}"
    )
    assert [] == spool_files(sandbox.settings.spool_dir)


def test_short_lived_process_delivers_within_the_exit_budget(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Events emitted just before exit reach the daemon; close() takes at most ~200 ms."""
    out = sandbox.python(
        EMIT.format(n=50)
        + """
import time
t = time.perf_counter(); tel.close(); print(time.perf_counter() - t)
"""
    ).stdout
    assert float(out) < 0.25
    daemon.flush()
    assert 50 == sandbox.count()
    assert [] == spool_files(sandbox.settings.spool_dir)


def test_atexit_delivers_without_explicit_close(sandbox: Sandbox, daemon: Daemon) -> None:
    """An application that never calls close() still delivers (atexit does it)."""
    sandbox.python(EMIT.format(n=20))
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count() == 20, what="20 events")


def test_no_daemon_events_spool_then_stored_exactly_once(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """With no daemon, events go to a 0600 spool; a daemon stores them exactly once."""
    sandbox.python(EMIT.format(n=30))
    sandbox.python(EMIT.format(n=12))
    files = spool_files(sandbox.settings.spool_dir)
    assert 2 == len(files)
    assert all(0o600 == stat.S_IMODE(f.stat().st_mode) for f in files)
    assert 0o700 == stat.S_IMODE(sandbox.settings.spool_dir.stat().st_mode)
    d = start_daemon()
    wait_for(lambda: sandbox.count() == 42, what="spooled events stored")
    assert [] == spool_files(sandbox.settings.spool_dir)
    d.stop()
    start_daemon().flush()
    assert [(42, 42)] == sandbox.query(
        f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE {APP}"
    )


def test_spool_already_in_ledger_is_not_stored_twice(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A spool file stored before a crash (ledger row written, unlink lost) is only removed."""
    sandbox.python(EMIT.format(n=5))
    (spooled,) = spool_files(sandbox.settings.spool_dir)
    copy = spooled.read_bytes()
    start_daemon().flush()  # keeps running: its next spool scan meets the copy
    assert 5 == sandbox.count()
    spooled.write_bytes(copy)  # as if the daemon died between commit and unlink
    os.chmod(spooled, 0o600)
    wait_for(lambda: not spooled.exists(), what="the duplicate spool file to be removed")
    assert 5 == sandbox.count()


def test_fork_child_and_parent_each_deliver_their_own(sandbox: Sandbox, daemon: Daemon) -> None:
    """After fork the child rebuilds its socket and never re-sends the parent's backlog."""
    sandbox.python("""
        import os
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(10):
            tel.thinktool("parent")
        pid = os.fork()
        if pid == 0:
            for i in range(7):
                tel.thinktool("child")
            tel.close()
            os._exit(0)
        os.waitpid(pid, 0)
        for i in range(3):
            tel.thinktool("parent")
        tel.close()
    """)
    daemon.flush()
    rows = sandbox.query(
        "SELECT json_extract(payload, '$.tool_name'), count(*), count(DISTINCT event_id) FROM events"
        f" WHERE {APP} GROUP BY 1 ORDER BY 1"
    )
    assert [("child", 7, 7), ("parent", 13, 13)] == rows


def test_command_context_manager_records_outcomes(sandbox: Sandbox, daemon: Daemon) -> None:
    """Success, failure (exception propagates unchanged) and cancellation are recorded."""
    sandbox.python("""
        import asyncio
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        with tel.command("think", profile="balanced") as cmd:
            cmd.tokens(input=1500, output=800, cached=200, model="claude-3-5-sonnet-20241022")
            cmd.tokens(input=10)
            cmd.thinktools(["gigathink", "laserlogic"])
            cmd.cache_hit = True
            cmd.llm_latency_ms = 2100
            cmd.quality(confidence=0.82, coherence=0.88)
        err = ValueError("user's secret prompt text")
        try:
            with tel.command("compare"):
                raise err
        except ValueError as e:
            assert e is err
        try:
            with tel.command("think", profile="deep"):
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        @tel.command("metrics")
        def metrics(x):
            return x * 2
        assert 4 == metrics(2)
        @tel.command("think", profile="quick")
        async def athink():
            raise TimeoutError
        try:
            asyncio.run(athink())
        except TimeoutError:
            pass
        tel.close()
    """)
    daemon.flush()
    rows = sandbox.query(f"SELECT event_type, payload FROM events WHERE {APP} ORDER BY id")
    got = [(t, json.loads(p)) for t, p in rows]
    assert ["command_executed", "command_failed", "command_cancelled", "command_executed",
            "command_failed"] == [t for t, _ in got]  # fmt: skip
    first = got[0][1]
    assert {
        "input": 1510,
        "output": 800,
        "cached": 200,
        "model": "claude-3-5-sonnet-20241022",
    } == first["tokens"]
    assert (["gigathink", "laserlogic"], 2, True, 2100) == (
        first["thinktool_chain"], first["thinktool_count"], first["cache_hit"],
        first["execution"]["llm_latency_ms"])  # fmt: skip
    assert {"confidence_score": 0.82, "coherence_score": 0.88, "depth_score": None} == first[
        "quality"
    ]
    assert [None, "invalid_input", "cancelled", None, "timeout"] == [
        p["error_category"] for _, p in got
    ]
    assert [True, False, False, True, False] == [p["execution"]["success"] for _, p in got]
    assert "secret" not in "".join(p for _, p in rows)


class RateLimitError(Exception):
    pass


class Declared(Exception):
    rk_error_category = "config_error"


@pytest.mark.parametrize(
    ("exc", "category"),
    [(TimeoutError(), "timeout"), (ConnectionResetError(), "network_error"),
     (FileNotFoundError(), "io_error"), (UnicodeDecodeError("utf-8", b"", 0, 1, "x"), "parse_error"),
     (KeyError(), "invalid_input"), (RateLimitError(), "rate_limited"), (Declared(), "config_error"),
     (RuntimeError(), "internal_error")],
)  # fmt: skip
def test_error_category_of_exceptions(exc: BaseException, category: str) -> None:
    """Exceptions map to categories by declaration, then name, then type."""
    assert category == error_category(exc)


def test_emit_never_raises_and_counts_drops(sandbox: Sandbox, daemon: Daemon) -> None:
    """Garbage passed to emit, an oversized event and a wrong family are counted, not raised."""
    out = sandbox.python("""
        from rkd.client import Telemetry, schema
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.emit("not an event")
        tel.emit(None)
        tel.emit(schema.CommandExecuted(command="x" * 70000))
        tel.lifecycle(schema.HelpViewed(topic="think"))
        tel.emit(schema.HelpViewed(topic="think"))
        print(sorted(tel.drops.items()))
        tel.close()
    """).stdout
    assert "[('encode_error', 2), ('oversized', 1), ('wrong_family', 1)]\n" == out
    wait_for(lambda: daemon.counter("client_drop.encode_error") == 2, what="the drop report")
    c = daemon.status().counters
    assert (1, 1) == (c["client_drop.oversized"], c["client_drop.wrong_family"])
    daemon.flush()
    assert 1 == sandbox.count()


def test_invalid_product_raises_at_construction(sandbox: Sandbox) -> None:
    """A product name with spaces is a programmer error: ValueError at construction."""
    out = sandbox.python("""
        from rkd.client import Telemetry
        try:
            Telemetry(product="my product", version="1.0.0")
        except ValueError as e:
            print(e)
    """).stdout
    assert (
        "Telemetry(product='my product'): product must be an identifier (letters, digits "
        "and _ . : + -; no spaces or slashes), e.g. reasonkit-core\n"
    ) == out


def test_spec_sdk_surface_runs(sandbox: Sandbox, daemon: Daemon) -> None:
    """Code written against the spec's Python SDK (§4.3) runs and its events are stored."""
    out = sandbox.python("""
        import json
        from rkd.client import TelemetryCollector, TelemetryConfig, CommandEvent, ThinkToolEvent, ErrorEvent
        config = TelemetryConfig.from_env()
        assert config.enabled and config.batch_size == 100
        c = TelemetryCollector(config)
        c.record_command(CommandEvent(command="think", profile="balanced", thinktool_count=4,
                                      duration_ms=2500, tokens_input=1500, tokens_output=800,
                                      model="claude-3-5-sonnet-20241022"))
        c.record_command(CommandEvent(command="think", success=False, error_category="timeout"))
        c.record_thinktool(ThinkToolEvent(tool_name="gigathink", step_count=4, duration_ms=650, confidence_score=0.82))
        c.record_error(ErrorEvent(error_category="api_error", error_code="rate_limit_exceeded", recoverable=True, retry_count=2, command="think", profile="deep", step=3))
        c.flush()
        st = c.get_status()
        exported = json.loads(c.export())
        print(json.dumps([st["enabled"], st["events_stored"], st["session_id"][-3:], [e["event_type"] for e in exported]]))
        print(c.delete_all())
        print(c.get_status()["events_stored"])
    """).stdout.splitlines()
    first_use = "feature_first_use"  # the daemon's, after each first use of a feature
    assert [
        True,
        8,
        "...",
        ["session_started", "command_executed", first_use, first_use, "command_failed",
         "thinktool_completed", first_use, "error_occurred"],
    ] == json.loads(out[0])  # fmt: skip
    assert ["8", "0"] == out[1:]
    assert 0 == sandbox.count()


def test_sdk_disabled_is_inert(sandbox: Sandbox) -> None:
    """A disabled collector records nothing and reports {"enabled": False}."""
    out = sandbox.python(
        """
        from rkd.client import TelemetryCollector, TelemetryConfig, CommandEvent
        c = TelemetryCollector(TelemetryConfig.from_env())
        c.record_command(CommandEvent(command="think"))
        c.flush()
        print(c.get_status(), c.export(), c.delete_all())
    """,
        DO_NOT_TRACK="1",
    ).stdout
    assert "{'enabled': False} [] 0\n" == out
    assert not (sandbox.root / "data").exists()


def test_client_never_blocks_when_daemon_is_wedged(sandbox: Sandbox, daemon: Daemon) -> None:
    """With the daemon stopped (SIGSTOP), emit stays fast and everything lands later."""
    import signal

    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        out = sandbox.python(
            EMIT.format(n=3000)
            + """
import time
t = time.perf_counter(); tel.close(); print(time.perf_counter() - t)
""",
            timeout=60,
        ).stdout
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert float(out) < 0.3
    wait_for(
        lambda: daemon.flush() >= 0 and sandbox.count() == 3000, timeout=20, what="all 3000 events"
    )
    assert [(3000,)] == sandbox.query(f"SELECT count(DISTINCT event_id) FROM events WHERE {APP}")


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("audit-hook tests assume Linux paths", allow_module_level=True)


def test_frames_in_flight_at_exit_are_neither_lost_nor_doubled(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Daemon paused while a process exits: unconfirmed frames are spooled, stored once."""

    app = sandbox.spawn_python(leaving_client(1000, "inflight"))
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    with daemon.frozen():
        out = go(app)
    assert float(out) < 0.3
    wait_for(
        lambda: daemon.flush() >= 0 and sandbox.count() == 1001, timeout=20, what="1001 events"
    )
    assert [(1001, 1001)] == sandbox.query(
        f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE {APP}"
    )
    c = daemon.status().counters
    assert 1000 == c.get("spool.events", 0) + c.get("spool.duplicates", 0)  # copies of all 1000


def test_a_long_running_client_keeps_only_recent_copies(sandbox: Sandbox, daemon: Daemon) -> None:
    """Copies of sent frames are released along the way (confirmed without waiting), not
    only at exit: a process that sends 30,000 events (no faster than the daemon takes
    them) holds a few thousand at most."""
    out = sandbox.python("""
        import time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        held = []
        for i in range(30_000):
            tel.thinktool("gigathink", duration_ms=i)
            if i % 100 == 99:
                time.sleep(0.01)  # an application doing other work between events
                held.append(len(tel._transport._unconfirmed))
        tel.close()
        print(max(held[50:]), sorted(tel.drops.items()))
    """).stdout.split(maxsplit=1)
    # One question's worth (2,048 + what is sent while the answer travels), not 24,000;
    # generous, for a loaded machine where the daemon answers late.
    assert int(out[0]) <= 8000, out
    assert "[]" == out[1].strip()
    daemon.flush()
    assert [(30_000, 30_000)] == sandbox.query(
        f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE {APP}"
    )


def test_rolling_confirmation_survives_a_daemon_restart(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """The daemon restarts while a question is outstanding: the client asks anew, keeps
    what was not confirmed, never blocks, and what it sent afterwards arrives."""
    proc = sandbox.spawn_python("""
        import sys, time
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for phase in sys.stdin:
            t0 = time.monotonic()
            for i in range(5_000):
                tel.thinktool(phase.strip())
            print(round(time.monotonic() - t0, 3), len(tel._transport._unconfirmed), flush=True)
        tel.close()
    """)
    assert proc.stdin is not None and proc.stdout is not None
    d = start_daemon()
    proc.stdin.write("first\n")
    proc.stdin.flush()
    proc.stdout.readline()
    # A burst's last events (under one batch) wait in the client for its next event.
    wait_for(lambda: d.counter("accepted") > 5_000 - BATCH_EVENTS, what="the first 5,000")
    assert 0 == d.stop()[0]
    d = start_daemon()
    proc.stdin.write("second\n")
    proc.stdin.flush()
    secs, _ = proc.stdout.readline().split()
    assert float(secs) < 5.0  # never waited on the answer
    proc.stdin.close()
    assert 0 == proc.wait(timeout=30)
    d.flush()
    assert [("first", 5_000), ("second", 5_000)] == sandbox.query(
        "SELECT json_extract(payload, '$.tool_name'), count(DISTINCT event_id) FROM events"
        " WHERE event_type = 'thinktool_completed' GROUP BY 1 ORDER BY 1"
    )


def test_exit_is_immediate_when_no_daemon_holds_the_lock(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """Issue 15: against a daemon that is provably gone (killed: nobody holds its lock),
    close() spooled the copies only after waiting the whole 200 ms for an answer that
    could not come. Now it does not wait; the events still land once, from the spool."""
    daemon = start_daemon()
    app = sandbox.spawn_python(leaving_client(100, "orphan"))
    assert app.stdout is not None and app.stdin is not None
    assert "ready\n" == app.stdout.readline()
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count() == 1, what="the warm-up stored")
    daemon.kill()
    app.stdin.write("go\n")
    app.stdin.flush()
    out, err = app.communicate(timeout=60)
    assert 0 == app.returncode, err
    assert float(out) < 0.1, out
    start_daemon()  # a new daemon stores the spooled copies, once
    wait_for(lambda: sandbox.count("event_type = 'thinktool_completed'") == 101, timeout=20,
             what="101 events")  # fmt: skip


def test_drops_with_the_spool_full_and_no_daemon_show_in_status(sandbox: Sandbox) -> None:
    """Issue 15: with the spool at its cap and no daemon, the events lost were counted in
    the client's memory only, and the report carrying them went into the full spool too:
    after the daemon started, `rkd status` showed nothing. Now the exact number lost is
    in the drops file, and the daemon counts it."""
    out = sandbox.python("""
        from rkd.client import Telemetry
        from rkd.client import spool
        spool.write_spool.__defaults__ = (0,)  # the spool at its cap: nothing more fits
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for i in range(1000):
            tel.thinktool("lost", duration_ms=i)
        tel.close()
        print(tel._transport.drops["spool_full"])
    """)
    assert "1000\n" == out.stdout
    assert (sandbox.settings.spool_dir / "drops.bin").stat().st_mode & 0o777 == 0o600
    d = Daemon(sandbox)
    try:
        wait_for(lambda: d.counter("client_drop.spool_full") == 1000, what="the drops counted")
        status = json.loads(sandbox.rkd("status", "--json").stdout)
        assert 1000 == status["counters"]["client_drop.spool_full"]
    finally:
        d.kill()
