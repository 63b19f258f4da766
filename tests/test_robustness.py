"""Issue 5 §4: the daemon under SIGKILL, a moving wall clock, and another user.

Each test runs the real daemon as a subprocess and reads the real database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rkd.client import schema as s
from rkd.client.wire import CONTROL_SOCKET, EVENTS_SOCKET, PruneRequest
from rkd.daemon.service import DRAIN_LIMIT

from tests.conftest import APP, Daemon, Sandbox, wait_for
from tests.samples import frame

RawPush = Callable[[list[bytes]], None]
DAY = 86_400

LOADER = """
import sys
from rkd.client import Telemetry
tel = Telemetry(product="reasonkit-core", version="1.0.0")
sent = 0
while sys.stdin.readline().strip() == "go":  # a burst per line, until "stop"
    for i in range(2_000):
        tel.thinktool("gigathink", duration_ms=sent)
        sent += 1
    print(sent, flush=True)
tel.close()
print(sent, sorted(tel.drops.items()), flush=True)
"""


# -- SIGKILL under load -------------------------------------------------------------------


def test_sigkill_under_load_loses_at_most_the_buffers_and_is_reported(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A daemon killed while events stream in: what it had written is intact, what it
    held in memory is all that can go, and the next start records crash_detected."""
    batch = 1000
    sandbox.write_config(f"[telemetry]\nbatch_size = {batch}\nflush_interval_secs = 3600\n")
    d = start_daemon()
    loader = sandbox.spawn_python(LOADER)
    assert loader.stdin is not None and loader.stdout is not None
    sent = 0
    for _ in range(4):  # 8,000 events in bursts, the daemon writing as they come
        loader.stdin.write("go\n")
        loader.stdin.flush()
        sent = int(loader.stdout.readline())
    wait_for(lambda: d.status().events_stored >= 4000, what="some batches written")
    loader.stdin.write("go\n")  # another burst, racing the kill
    loader.stdin.flush()
    before = d.status()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    sent = int(loader.stdout.readline())

    assert [("ok",)] == sandbox.query("PRAGMA integrity_check")
    on_disk = sandbox.count(derived=True)
    assert on_disk >= before.events_stored  # nothing that was written is lost

    again = start_daemon()
    wait_for(lambda: sandbox.count("event_type = 'crash_detected'") == 1, what="crash_detected")
    loader.stdin.write("go\nstop\n")  # the application goes on, then exits
    loader.stdin.flush()
    out, err = loader.communicate(timeout=60)
    assert 0 == loader.returncode, err
    sent = int(out.splitlines()[-1].split()[0])
    again.flush()
    rows = sandbox.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
        " WHERE event_type = 'thinktool_completed'"
    )
    stored, distinct = rows[0]
    assert stored == distinct  # nothing twice
    lost = sent - stored
    # At most the daemon's pending buffer: up to a batch plus one turn's frames. What
    # was still queued on the socket is not lost: the client sees a new daemon answer
    # its confirmation and spools its copies, which the new daemon stores once.
    assert 0 <= lost <= batch + DRAIN_LIMIT, (sent, stored)
    crash = json.loads(
        sandbox.query("SELECT payload FROM events WHERE event_type = 'crash_detected'")[0][0]
    )
    assert "daemon" == crash["component"] and crash["uptime_secs"] >= 0
    assert 0 == again.stop()[0]


# -- the wall clock jumps -----------------------------------------------------------------


def shifted_daemon(sandbox: Sandbox, start_daemon: Callable[..., Daemon]) -> tuple[Daemon, Path]:
    clock = sandbox.root / "clock-offset"
    clock.write_text("0")
    d = start_daemon(
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent / "clockshift"),
                                    os.environ.get("PYTHONPATH", "")]),
        RKD_TEST_CLOCK_FILE=str(clock),
    )  # fmt: skip
    return d, clock


def at(offset_secs: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_secs)


def test_wall_clock_jumps_break_neither_sessions_nor_retention_nor_aggregates(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """The daemon's wall clock leaps 10 days ahead, 10 days back, then 200 days ahead
    (as NTP or `date -s` would do), with events in between: one session throughout (the
    monotonic clock decides), retention prunes by the events' own times against the
    clock of the moment, and the daily aggregates keep every day, pruned or not."""
    d, clock = shifted_daemon(sandbox, start_daemon)
    accepted = 0
    for offset, n in ((0, 3), (10 * DAY, 3), (-10 * DAY, 3)):
        clock.write_text(str(offset))
        raw_push(
            [frame(s.CommandExecuted(command="think"), timestamp=at(offset)) for _ in range(n)]
        )
        accepted += n
        wait_for(lambda want=accepted: d.counter("accepted") == want, what=f"events at {offset}")
    assert 0 == d.counter("rejected.bad_timestamp")
    d.flush()
    assert 1 == len(sandbox.query("SELECT DISTINCT session_id FROM events"))
    assert 0 == sandbox.count("event_type = 'session_ended'", derived=True)

    from rkd.client.control import request

    pruned = request(d.runtime, PruneRequest(), timeout_ms=10_000)
    assert (True, 0) == (pruned.ok, pruned.deleted)  # 10 days back: nothing is 90 days old

    clock.write_text(str(200 * DAY))
    raw_push([frame(s.CommandExecuted(command="think"), timestamp=at(200 * DAY))])
    wait_for(lambda: d.counter("accepted") == 10, what="the event 200 days ahead")
    pruned = request(d.runtime, PruneRequest(), timeout_ms=10_000)
    assert pruned.ok and pruned.deleted > 9  # the 9 and what the daemon derived with them
    assert [("command_executed", 1)] == sandbox.query(
        f"SELECT event_type, count(*) FROM events WHERE {APP} GROUP BY 1"
    )
    assert 1 == len(sandbox.query("SELECT DISTINCT session_id FROM events"))
    today = int(time.time()) // DAY
    assert [(today - 10, 3), (today, 3), (today + 10, 3), (today + 200, 1)] == sandbox.query(
        "SELECT day, n FROM agg_daily WHERE dim = 'command' AND key = 'think' ORDER BY day"
    )
    assert 0 == d.stop()[0]


def test_sessions_end_on_the_monotonic_clock_whatever_the_wall_clock_says(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """A wall clock 3 hours ahead does not make the current session look idle."""
    d, clock = shifted_daemon(sandbox, start_daemon)
    raw_push([frame(s.HelpViewed(topic="think"))])
    wait_for(lambda: d.counter("accepted") == 1, what="first event")
    clock.write_text(str(3 * 3600))
    raw_push([frame(s.HelpViewed(topic="think"), timestamp=at(3 * 3600))])
    wait_for(lambda: d.counter("accepted") == 2, what="second event")
    d.flush()
    assert ["session_started", "help_viewed", "help_viewed"] == [
        r[0] for r in sandbox.query("SELECT event_type FROM events ORDER BY id")
    ]
    assert 0 == d.stop()[0]


# -- another user -------------------------------------------------------------------------

PROBE = """
import json, os, socket, sys
results = {}
for name in sys.argv[1:]:
    kind, path = name.split(":", 1)
    try:
        if kind == "sock":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(path)
            s.close()
        elif kind == "dir":
            os.listdir(path)
        else:
            open(path, "rb").close()
        results[name] = "allowed"
    except PermissionError:
        results[name] = "denied"
    except OSError as e:
        results[name] = f"error {e.errno}"
print(json.dumps(results))
"""


def run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, user=65534, group=65534, extra_groups=[],
        timeout=30, cwd="/",
    )  # fmt: skip


def python_for_nobody() -> str | None:
    """An interpreter the unprivileged user may run (ours may live under /root)."""
    for python in ("/usr/bin/python3", getattr(sys, "_base_executable", ""), sys.executable):
        try:
            if python and 0 == run_as_nobody(python, "-I", "-c", "pass").returncode:
                return python
        except PermissionError:
            continue
    return None


def as_nobody(paths: list[str]) -> dict[str, str]:
    python = python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter that user nobody may run")
    proc = run_as_nobody(python, "-I", "-c", textwrap.dedent(PROBE), *paths)
    assert 0 == proc.returncode, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def traversable(path: Path, upto: Path, keep: list[Path]) -> None:
    """Let others pass through ``path`` and its parents up to ``upto`` (test dirs only),
    except the folders in ``keep``."""
    for p in [path, *path.parents]:
        if p not in keep:
            p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o055)
        if p == upto:
            break


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a probe as another user")
def test_another_user_can_neither_connect_nor_read(sandbox: Sandbox) -> None:
    """Sockets, database, spool and log: another user is refused, first by rkd's private
    folders, and, were those opened up by mistake, by the 0600 files and sockets."""
    assert 0 == sandbox.rkd("start").returncode
    try:
        sandbox.python("""
            from rkd.client import Telemetry
            Telemetry(product="reasonkit-core", version="1.0.0").thinktool("x")
        """)
        assert 0 == sandbox.rkd("flush").returncode
        st = sandbox.settings
        st.spool_dir.mkdir(mode=0o700, exist_ok=True)
        log = sandbox.root / "home/.local/state/rkd/rkd.log"
        public = sandbox.root / "home/public.txt"  # proves the probe can read what it may
        public.write_text("hello")
        public.chmod(0o644)
        private_dirs = [st.runtime_dir, st.data_dir, st.spool_dir, log.parent]
        for p in [public, *private_dirs]:
            traversable(p.parent, sandbox.root, keep=private_dirs)
        targets = {
            f"sock:{st.runtime_dir / EVENTS_SOCKET}": "denied",
            f"sock:{st.runtime_dir / CONTROL_SOCKET}": "denied",
            f"file:{st.db_path}": "denied",
            f"file:{st.db_path}-wal": "denied",
            f"dir:{st.spool_dir}": "denied",
            f"file:{log}": "denied",
            f"file:{public}": "allowed",
        }
        assert targets == as_nobody(list(targets))
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in private_dirs)

        for p in private_dirs:  # a mistake opens the folders: the files still hold
            p.chmod(0o711)
        files_only = {k: v for k, v in targets.items() if not k.startswith("dir:")}
        assert files_only == as_nobody(list(files_only))
    finally:
        assert 0 == sandbox.rkd("stop").returncode


# -- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(sandbox: Sandbox) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own (root only), to be filled up for real."""
    mnt = sandbox.root / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system says it is full (to the last block)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def test_full_disk_keeps_events_and_recovers_when_space_returns(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush, small_disk: Path
) -> None:
    """The disk fills up: events stay in memory, the error is logged once, writes are
    retried; space comes back: everything is written, in order, nothing twice."""
    sandbox.write_config("[telemetry]\nbatch_size = 1\n")
    sandbox.env["RK_TELEMETRY_PATH"] = str(small_disk / "t.db")
    d = start_daemon()
    raw_push([frame(s.HelpViewed(topic=f"before{i}")) for i in range(3)])
    wait_for(lambda: sandbox.count("1", derived=True) == 4, what="stored before")  # + start
    filler = small_disk / "filler"
    fill(filler)
    raw_push([frame(s.HelpViewed(topic=f"during{i}" + "x" * 40)) for i in range(300)])
    wait_for(lambda: d.counter("accepted") == 303 and d.counter("write_errors") >= 2,
             timeout=20, what="failed writes")  # fmt: skip
    st = d.status()
    assert st.pending == 300 and st.enabled
    filler.unlink()
    wait_for(lambda: d.status().pending == 0, timeout=20, what="the retried write")
    topics = [r[0] for r in sandbox.query(
        "SELECT json_extract(payload, '$.topic') FROM events WHERE event_type = 'help_viewed'"
        " ORDER BY id")]  # fmt: skip
    assert [f"before{i}" for i in range(3)] + [
        f"during{i}" + "x" * 40 for i in range(300)
    ] == topics
    _, log = d.stop()
    assert 1 == log.count('"write_failed"') and 1 == log.count('"write_recovered"')
    failed = next(line for line in log.splitlines() if '"write_failed"' in line)
    assert "full" in failed.lower(), failed  # SQLite's own words: database or disk is full


def chattr(flag: str, *paths: Path) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return done.returncode == 0


def test_read_only_database_keeps_events_and_recovers(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """The database files turn read-only under the daemon (immutable: even root cannot
    write them), then writable again."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make files immutable")
    sandbox.write_config("[telemetry]\nbatch_size = 1\n")
    d = start_daemon()
    raw_push([frame(s.HelpViewed(topic="before"))])
    wait_for(lambda: sandbox.count("1", derived=True) == 2, what="stored before")
    db = sandbox.settings.db_path
    files = [db, Path(f"{db}-wal")]
    if not chattr("+i", *files):
        pytest.skip("this file system cannot make files immutable")
    try:
        raw_push([frame(s.HelpViewed(topic=f"during{i}")) for i in range(20)])
        wait_for(lambda: d.counter("accepted") == 21 and d.counter("write_errors") >= 2,
                 timeout=20, what="failed writes")  # fmt: skip
        assert 20 == d.status().pending
    finally:
        chattr("-i", *files)
    wait_for(lambda: d.status().pending == 0, timeout=20, what="the retried write")
    assert ["before"] + [f"during{i}" for i in range(20)] == [r[0] for r in sandbox.query(
        "SELECT json_extract(payload, '$.topic') FROM events WHERE event_type = 'help_viewed'"
        " ORDER BY id")]  # fmt: skip
    _, log = d.stop()
    assert 1 == log.count('"write_failed"') and 1 == log.count('"write_recovered"')
