"""Another local user, and unsafe files (issue 9, findings 1 and 6).

Without ``XDG_RUNTIME_DIR`` the runtime folder is ``<tmp>/rkd-<uid>`` in the shared temp
folder, where another user can get first: create the folder, a symlink or a FIFO by
that name, bind the sockets, hold the lock. Tests run as root; "another user" is
``nobody`` (files chowned to it). Every path here is real: a real daemon subprocess,
the real CLI, real sockets and files.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest
import zmq
from rkd.client import files
from rkd.client.spool import SpoolFileRefused, read_spool_file, spool_files, write_spool
from rkd.client.wire import CONTROL_SOCKET, EVENTS_SOCKET, LOCK_FILE
from rkd.daemon.firewall import SALT_FILE

from tests.conftest import Daemon, Sandbox
from tests.test_export import THINK, store

NOBODY = 65534
ME = os.getuid()
EXIT_PERMANENT = 78
HANGS = 30  # seconds: a command that would hang (or, on the old code, run on) is cut off

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to nobody")

SEND_ONE = """
    from rkd.client import Telemetry
    Telemetry(product="reasonkit-core", version="1.0.0").thinktool("gigathink")
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def give_to_nobody(*paths: Path) -> None:
    for p in paths:
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)


@pytest.fixture
def shared_tmp(sandbox: Sandbox) -> Path:
    """A sticky, world-writable temp folder (like /tmp) as TMPDIR and no XDG_RUNTIME_DIR:
    the runtime folder is then ``<tmp>/rkd-<uid>``; returns that path (not created)."""
    tmp = sandbox.root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    del sandbox.env["XDG_RUNTIME_DIR"]
    sandbox.env["TMPDIR"] = str(tmp)
    return tmp / f"rkd-{ME}"


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An innocent process whose pid an attacker writes into a lock file."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


class Squatter:
    """Another user's runtime folder at our path: its lock held and naming ``pid``, its
    event and control sockets bound, everything owned by nobody."""

    def __init__(self, run: Path, pid: int) -> None:
        run.mkdir()
        self.run = run
        self.lock_fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        os.write(self.lock_fd, f"{pid}\n".encode())
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.bind(f"ipc://{run / EVENTS_SOCKET}")
        self.rep = self.ctx.socket(zmq.REP)
        self.rep.bind(f"ipc://{run / CONTROL_SOCKET}")
        for p in (run / EVENTS_SOCKET, run / CONTROL_SOCKET):
            p.chmod(0o777)
        run.chmod(0o777)
        give_to_nobody(run, run / LOCK_FILE, run / EVENTS_SOCKET, run / CONTROL_SOCKET)

    def received(self, wait_ms: int = 1000) -> list[bytes]:
        """Whatever reached the squatter's sockets (waiting up to ``wait_ms``)."""
        got = []
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.rep, zmq.POLLIN)
        while ready := dict(poller.poll(wait_ms)):
            got += [s.recv() for s in ready]
            wait_ms = 100
        return got

    def close(self) -> None:
        self.pull.close(linger=0)
        self.rep.close(linger=0)
        self.ctx.term()
        os.close(self.lock_fd)


@pytest.fixture
def squatter(shared_tmp: Path, victim: subprocess.Popen[bytes]) -> Iterator[Squatter]:
    s = Squatter(shared_tmp, victim.pid)
    yield s
    s.close()


# -- finding 1: the runtime folder -----------------------------------------------------------


@needs_root
def test_daemon_refuses_another_users_runtime_folder(sandbox: Sandbox, shared_tmp: Path) -> None:
    """A runtime folder another user created first: the daemon exits 78 (permanent) with
    one line naming it, and creates nothing in it."""
    shared_tmp.mkdir()
    shared_tmp.chmod(0o777)
    give_to_nobody(shared_tmp)
    proc = sandbox.rkd("run", timeout=HANGS)
    assert (EXIT_PERMANENT, "") == (proc.returncode, proc.stdout)
    assert (
        f"Error: unsafe runtime folder: {shared_tmp}: belongs to another user"
        f" (uid {NOBODY}, not {ME})\n"
    ) == proc.stderr
    assert ([], 0o777) == (os.listdir(shared_tmp), mode(shared_tmp))


@needs_root
def test_a_squatter_gets_no_event_no_request_and_no_kill(
    sandbox: Sandbox, squatter: Squatter, victim: subprocess.Popen[bytes]
) -> None:
    """With another user's folder, sockets and lock in place: the application's event
    is spooled (never sent there), no request reaches it, and `rkd stop` refuses in one
    line instead of signalling the pid its lock names."""
    sandbox.python(SEND_ONE, timeout=HANGS)
    assert [] == squatter.received()
    assert 1 == len(spool_files(sandbox.settings.spool_dir))
    why = f"{squatter.run}: belongs to another user (uid {NOBODY}, not {ME})"

    flush = sandbox.rkd("flush", timeout=HANGS)
    assert 1 == flush.returncode
    assert (
        f"Error: refusing an unsafe rkd runtime folder: {why};"
        " nothing is pending while it is down\n"
    ) == flush.stderr
    status = sandbox.rkd("status", "--json", timeout=HANGS)
    assert 0 == status.returncode, status.stderr
    assert {
        "running": False,
        "pid": None,
        "error": f"refusing an unsafe rkd runtime folder: {why}",
    } == (msgspec.json.decode(status.stdout)["daemon"])

    stop = sandbox.rkd("stop", timeout=HANGS)
    assert (1, f"Error: refusing an unsafe rkd runtime folder: {why}\n") == (
        stop.returncode, stop.stderr,
    )  # fmt: skip
    assert [] == squatter.received()
    assert victim.poll() is None


def test_symlinked_runtime_folder_is_refused_and_its_target_untouched(
    sandbox: Sandbox, shared_tmp: Path
) -> None:
    """A symlink at the runtime folder's path is never followed: the daemon exits 78, the
    folder it points to keeps its mode and gets no file; the client spools instead."""
    target = sandbox.root / "home" / "public"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    shared_tmp.symlink_to(target)
    proc = sandbox.rkd("run", timeout=HANGS)
    assert EXIT_PERMANENT == proc.returncode
    assert (
        f"Error: unsafe runtime folder: {shared_tmp}: is a symbolic link, not a directory\n"
    ) == proc.stderr
    sandbox.python(SEND_ONE, timeout=HANGS)
    assert ([], 0o755) == (os.listdir(target), mode(target))
    assert 1 == len(spool_files(sandbox.settings.spool_dir))


def test_a_fifo_as_the_lock_blocks_nobody_and_is_refused(sandbox: Sandbox) -> None:
    """A FIFO named daemon.lock: an application does not hang on it (its event is
    spooled), `rkd stop` refuses it in one line, the daemon exits 78."""
    run = sandbox.settings.runtime_dir
    run.mkdir(mode=0o700, parents=True)
    lock = run / LOCK_FILE
    os.mkfifo(lock, 0o600)
    sandbox.python(SEND_ONE, timeout=HANGS)
    assert 1 == len(spool_files(sandbox.settings.spool_dir))
    stop = sandbox.rkd("stop", timeout=HANGS)
    assert (1, f"Error: refusing an unsafe rkd runtime folder: {lock}: is a FIFO, not a"
               " regular file\n") == (stop.returncode, stop.stderr)  # fmt: skip
    proc = sandbox.rkd("run", timeout=HANGS)
    assert (EXIT_PERMANENT, f"Error: unsafe lock file: {lock}: is a FIFO, not a regular file\n") == (
        proc.returncode, proc.stderr,
    )  # fmt: skip
    assert stat.S_ISFIFO(os.lstat(lock).st_mode)


def test_something_else_at_a_socket_path_is_refused_not_removed(sandbox: Sandbox) -> None:
    """A regular file where a socket belongs is not unlinked as a 'stale socket': the
    daemon exits 78 naming it, and the file stays."""
    run = sandbox.settings.runtime_dir
    run.mkdir(mode=0o700, parents=True)
    (run / EVENTS_SOCKET).write_text("not a socket")
    proc = sandbox.rkd("run", timeout=HANGS)
    assert (
        EXIT_PERMANENT,
        f"Error: unsafe socket path: {run / EVENTS_SOCKET}: is a regular file, not a socket\n",
    ) == (proc.returncode, proc.stderr)
    assert "not a socket" == (run / EVENTS_SOCKET).read_text()


IMPOSTOR = """
    import fcntl, os, socket, sys
    run, victim = sys.argv[1], sys.argv[2]
    fd = os.open(os.path.join(run, "daemon.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, (victim + "\\n").encode())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(run, "control.sock"))
    s.listen()
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_stop_signals_only_the_process_serving_our_control_socket(
    sandbox: Sandbox, victim: subprocess.Popen[bytes]
) -> None:
    """A process of ours holds the lock and serves control.sock, but the lock names
    another pid: `rkd stop` refuses in one line and signals neither."""
    run = sandbox.settings.runtime_dir
    run.mkdir(mode=0o700, parents=True)
    impostor = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(IMPOSTOR), str(run), str(victim.pid)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "ready\n" == impostor.stdout.readline()  # type: ignore[union-attr]
        stop = sandbox.rkd("stop", timeout=HANGS)
        assert (
            1,
            f"Error: {run / CONTROL_SOCKET}: served by pid {impostor.pid} (uid {ME}) while"
            f" {run / LOCK_FILE} names pid {victim.pid}; not signalling either\n",
        ) == (stop.returncode, stop.stderr)
        assert (None, None) == (victim.poll(), impostor.poll())
    finally:
        impostor.kill()
        impostor.communicate()


def test_stop_still_stops_our_own_daemon(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """The proof holds for the real daemon: `rkd stop` stops it (exit 0), pid named."""
    d = start_daemon()
    stop = sandbox.rkd("stop", timeout=HANGS)
    assert (0, f"rkd daemon stopped (pid {d.proc.pid}); everything pending was written.\n") == (
        stop.returncode, stop.stdout,
    )  # fmt: skip
    assert 0 == d.proc.wait(timeout=HANGS)


# -- finding 6: files -----------------------------------------------------------------------


def test_export_never_writes_through_a_symlink(sandbox: Sandbox) -> None:
    """`rkd export -o LINK` refuses in one line; the file the link points to is untouched."""
    store(sandbox, [THINK])
    precious = sandbox.root / "home" / "precious.txt"
    precious.write_text("keep me")
    link = sandbox.root / "out.json"
    link.symlink_to(precious)
    proc = sandbox.rkd("export", "-o", str(link))
    assert (1, f"Error: {link}: is a symbolic link; refusing to write through it\n") == (
        proc.returncode, proc.stderr,
    )  # fmt: skip
    assert ("keep me", precious) == (precious.read_text(), link.readlink())


@needs_root
def test_export_never_writes_into_another_users_file(sandbox: Sandbox) -> None:
    """A file another user created at the export's path (to read it later) is refused,
    left as it was, and no temporary file stays behind."""
    store(sandbox, [THINK])
    trap = sandbox.root / "out.json"
    trap.write_text("theirs")
    trap.chmod(0o666)
    give_to_nobody(trap)
    before = sorted(os.listdir(sandbox.root))
    proc = sandbox.rkd("export", "-o", str(trap))
    assert (
        1, f"Error: {trap}: belongs to another user (uid {NOBODY}); refusing to replace it\n"
    ) == (proc.returncode, proc.stderr)  # fmt: skip
    assert ("theirs", NOBODY, 0o666) == (trap.read_text(), trap.stat().st_uid, mode(trap))
    assert before == sorted(os.listdir(sandbox.root))


def test_export_replaces_a_file_in_one_step_and_a_failed_one_keeps_it(sandbox: Sandbox) -> None:
    """The new export is a new 0600 file renamed over the old one; an export that fails
    leaves the old file as it was (it used to be truncated, then removed)."""
    store(sandbox, [THINK])
    out = sandbox.root / "out.ndjson"
    out.write_text("old export\n")
    old_inode = out.stat().st_ino
    assert 0 == sandbox.rkd("export", "-o", str(out)).returncode
    assert (0o600, True) == (mode(out), out.stat().st_ino != old_inode)
    good = out.read_text()
    db = apsw.Connection(str(sandbox.settings.db_path))
    db.execute("UPDATE events SET payload = 'not json'")
    db.close()
    failed = sandbox.rkd("export", "-o", str(out), "-f", "csv")
    assert 1 == failed.returncode and "Traceback" not in failed.stderr
    assert good == out.read_text()
    assert ["out.ndjson"] == [n for n in os.listdir(sandbox.root) if "out" in n]


def test_loose_data_folder_and_salt_are_tightened_at_start(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A 0777 data folder and a 0644 salt of ours are made 0700 and 0600 when the daemon
    starts; the salt itself is kept."""
    data = sandbox.settings.data_dir
    data.mkdir(parents=True)
    data.chmod(0o777)
    salt = os.urandom(32)
    (data / SALT_FILE).write_bytes(salt)
    (data / SALT_FILE).chmod(0o644)
    start_daemon()
    assert (0o700, 0o600, salt) == (
        mode(data), mode(data / SALT_FILE), (data / SALT_FILE).read_bytes(),
    )  # fmt: skip


def test_a_database_path_at_someone_elses_file_is_refused_untouched(sandbox: Sandbox) -> None:
    """RK_TELEMETRY_PATH naming an existing file that is not a database: the daemon
    refuses in one line; the file is neither renamed aside nor replaced."""
    notes = sandbox.root / "home" / "notes.txt"
    notes.write_text("my notes\n" * 100)
    proc = sandbox.rkd("run", timeout=HANGS, RK_TELEMETRY_PATH=str(notes))
    assert 0 != proc.returncode
    assert (
        f"Error: {notes}: exists and is not an SQLite database; refusing to replace it"
        " (point RK_TELEMETRY_PATH or telemetry.db_path elsewhere)\n"
    ) == proc.stderr
    assert ["notes.txt"] == os.listdir(notes.parent)
    assert "my notes\n" * 100 == notes.read_text()


def test_a_database_path_at_someone_elses_file_exits_78(sandbox: Sandbox) -> None:
    """That refusal is permanent: exit 78, so a service manager does not restart it."""
    notes = sandbox.root / "home" / "notes.txt"
    notes.write_text("my notes\n")
    proc = sandbox.rkd("run", timeout=HANGS, RK_TELEMETRY_PATH=str(notes))
    assert EXIT_PERMANENT == proc.returncode


def test_a_symlinked_database_path_is_refused(sandbox: Sandbox) -> None:
    """RK_TELEMETRY_PATH at a symlink: refused in one line, never followed."""
    real = sandbox.root / "home" / "real.db"
    real.write_bytes(b"")
    link = sandbox.root / "home" / "link.db"
    link.symlink_to(real)
    proc = sandbox.rkd("run", timeout=HANGS, RK_TELEMETRY_PATH=str(link))
    assert 0 != proc.returncode
    assert (
        f"Error: unsafe database path: {link}: is a symbolic link, not a regular file\n"
    ) == proc.stderr
    assert (b"", real) == (real.read_bytes(), link.readlink())


@needs_root
def test_spool_files_that_are_not_ours_are_refused_unread(tmp_path: Path) -> None:
    """read_spool_file returns a spool file of ours; another user's file, a symlink and
    a FIFO (which would block a plain open) raise SpoolFileRefused with the reason."""
    write_spool(tmp_path, [b"frame"])
    (ours,) = spool_files(tmp_path)
    theirs = tmp_path / "1-2-3.spool"
    theirs.write_bytes(ours.read_bytes())
    give_to_nobody(theirs)
    link = tmp_path / "4-5-6.spool"
    link.symlink_to(ours)
    fifo = tmp_path / "7-8-9.spool"
    os.mkfifo(fifo)

    def reason(p: Path) -> str:
        with pytest.raises(SpoolFileRefused) as e:
            read_spool_file(p)
        return e.value.reason

    assert b"RKS1\x05\x00\x00\x00frame" == read_spool_file(ours)
    assert ("not_owned", "symlink", "not_regular") == (reason(theirs), reason(link), reason(fifo))


# The daemon's side (quarantine, not ingest) is in test_hardening.py.


def test_atomic_and_spool_writes_survive_short_writes_and_fsync_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.write may write less than asked: every byte still lands; and the file is
    fsynced before it is renamed into place."""
    real_write, calls = os.write, []

    def short_write(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data[:3]))

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls.append(name)
            return real(*args)

        return call

    data = bytes(range(256)) * 10
    with monkeypatch.context() as m:
        m.setattr(os, "write", short_write)
        m.setattr(os, "fsync", spy("fsync", os.fsync))
        m.setattr(os, "replace", spy("rename", os.replace))
        m.setattr(os, "rename", spy("rename", os.rename))
        files.write_atomic(tmp_path / "f", data)
        assert 1 == write_spool(tmp_path / "spool", [data])
    assert data == (tmp_path / "f").read_bytes()
    assert b"RKS1" + len(data).to_bytes(4, "little") + data == read_spool_file(
        spool_files(tmp_path / "spool")[0]
    )
    assert ["fsync", "rename", "fsync", "rename"] == calls


def test_one_private_dir_helper_refuses_and_tightens(tmp_path: Path) -> None:
    """ensure_private_dir: creates 0700, tightens a loose folder of ours, refuses a
    symlink and a non-folder with one line naming the path."""
    new = tmp_path / "a" / "b"
    files.ensure_private_dir(new)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    files.ensure_private_dir(loose)
    assert (0o700, 0o700) == (mode(new), mode(loose))
    link = tmp_path / "link"
    link.symlink_to(loose)
    plain = tmp_path / "plain"
    plain.write_text("")
    for path, reason, what in [
        (link, "symlink", "is a symbolic link, not a directory"),
        (plain, "not_directory", "is a regular file, not a directory"),
    ]:
        with pytest.raises(files.UnsafePath) as e:
            files.ensure_private_dir(path)
        assert (reason, f"{path}: {what}") == (e.value.reason, str(e.value))


def test_a_symlinked_salt_stops_the_daemon_in_one_line(sandbox: Sandbox, tmp_path: Path) -> None:
    """A salt file that is a symlink: the daemon refuses it with one line (no traceback)
    and exit 78, and the link's target is untouched."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x" * 32)
    data = sandbox.settings.data_dir
    data.mkdir(parents=True, mode=0o700)
    (data / SALT_FILE).symlink_to(target)
    proc = sandbox.rkd("run", timeout=HANGS)
    assert EXIT_PERMANENT == proc.returncode
    assert ["Error"] == [line.split(":")[0] for line in proc.stderr.strip().splitlines()
                         if not line.startswith("{")], proc.stderr  # fmt: skip
    assert "Traceback" not in proc.stderr and b"x" * 32 == target.read_bytes()


def test_a_loose_consent_file_is_tightened_when_read(sandbox: Sandbox) -> None:
    """A consent.json left 0644 (by hand, by a restore) is 0600 after rkd reads it."""
    sandbox.env.pop("RK_TELEMETRY_ENABLED")
    assert 0 == sandbox.rkd("enable", "--yes").returncode
    path = sandbox.settings.data_dir / "consent.json"
    path.chmod(0o644)
    assert 0 == sandbox.rkd("status").returncode
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)


@needs_root
def test_status_says_why_an_unsafe_runtime_folder_is_not_used(sandbox: Sandbox) -> None:
    """`rkd status` with a runtime folder another user owns: it says so, in one line."""
    run = sandbox.settings.runtime_dir
    run.mkdir(parents=True, mode=0o700)
    give_to_nobody(run)
    proc = sandbox.rkd("status")
    assert 0 == proc.returncode, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if "not used:" in x]
    assert "refusing an unsafe rkd runtime folder" in line and "another user" in line
