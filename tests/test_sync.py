"""Issue 12, Pro cloud sync: the real daemon uploads to a real TLS 1.3 server on
127.0.0.1 (tests/tls_server.py, a test CA per test), through the upload filter, signed,
exactly once across server errors, rate limits, a killed daemon and a dying server."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from rkd.client import schema as s
from rkd.client.upload import OTHER

from tests import tls_server
from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import frame

RawPush = Callable[[list[bytes]], None]
KEY_ENV = {"RK_TELEMETRY_SYNC_KEY_ID": tls_server.KEY_ID,
           "RK_TELEMETRY_SYNC_SECRET": tls_server.SECRET}  # fmt: skip


def sync_config(sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
                on: bool = True, extra: str = "") -> None:  # fmt: skip
    sandbox.write_config(
        f"[telemetry]\nsync_enabled = {'true' if on else 'false'}\n"
        f'sync_endpoint = "{server.endpoint}"\nflush_interval_secs = 0.2\n'
        f'[telemetry.sync]\nca_file = "{certs.ca}"\ninterval_secs = 1\n{extra}'
    )


def sync_log(sandbox: Sandbox) -> list[dict]:
    proc = sandbox.rkd("sync", "log", "--json")
    assert 0 == proc.returncode, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def help_frames(prefix: str, n: int) -> list[bytes]:
    return [frame(s.HelpViewed(topic=f"{prefix}{i}")) for i in range(n)]


def topics(events: list[dict]) -> list[str]:
    return sorted(e["payload"]["topic"] for e in events if e["event_type"] == "help_viewed")


def app_events(server: tls_server.Server) -> list[dict]:
    """What the applications sent (not the daemon's session and feature events)."""
    from rkd.daemon.derived import DERIVED_TYPES

    return [e for e in server.events() if e["event_type"] not in DERIVED_TYPES]


@pytest.fixture
def synced(sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
           start_daemon: Callable[..., Daemon]) -> Daemon:  # fmt: skip
    sandbox.env.update(KEY_ENV)
    sync_config(sandbox, server, certs)
    return start_daemon()


def test_events_after_consent_leave_signed_filtered_and_once(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon], raw_push: RawPush,
) -> None:  # fmt: skip
    """Events stored before sync was turned on stay local; after it, each event reaches
    the server once, signed, with undeclared values as __other__ and declared ones kept."""
    sandbox.env.update(KEY_ENV)
    sync_config(sandbox, server, certs, on=False)
    d = start_daemon()
    before = help_frames("before", 5)
    raw_push(before)
    wait_for(lambda: d.flush() >= 0 and sandbox.count() == 5, what="stored before consent")
    sync_config(sandbox, server, certs, on=True)
    assert 0 == sandbox.rkd("reload").returncode
    raw_push([frame(s.HelpViewed(topic="think")), frame(s.HelpViewed(topic="my-secret-project")),
              frame(s.CommandExecuted(command="think", tokens=s.Tokens(model="gpt-4o-2024-08-06")))])  # fmt: skip
    got = server.wait(3, what="the 3 events after consent")
    time.sleep(1.5)  # another round: nothing more, nothing twice
    assert 3 == len(app_events(server))
    assert [OTHER, "think"] == topics(app_events(server))
    cmd = next(e for e in app_events(server) if e["event_type"] == "command_executed")
    assert ("think", "gpt-4o-2024-08-06") == (
        cmd["payload"]["command"],
        cmd["payload"]["tokens"]["model"],
    )
    assert all(r.signature_ok for r in server.requests)
    assert not any("before" in json.dumps(e) for e in got)
    assert all(r.headers[tls_server.cloud.H_KEY_ID] == tls_server.KEY_ID for r in server.requests)
    status = json.loads(sandbox.rkd("sync", "status", "--json").stdout)
    assert ("pro", 0) == (status["mode"], status["queue_depth"])


@pytest.mark.parametrize("script", [[500, 503], ["die"], [408, ("retry_after", 1)]],
                         ids=["5xx", "dies-mid-body", "408-then-429"])  # fmt: skip
def test_retries_deliver_the_same_batch_exactly_once(
    sandbox: Sandbox, server: tls_server.Server, synced: Daemon, raw_push: RawPush, script: list
) -> None:
    server.script[:] = script
    raw_push(help_frames("t", 4))
    server.wait(4)
    time.sleep(1.5)
    assert 4 == len(topics(app_events(server)))
    ids = {r.batch_id for r in server.requests}
    first = server.requests[0].batch_id
    assert first in server.batches  # the batch that failed went again, same id
    assert len(server.requests) >= len(script) + 1 - script.count("die")
    assert len(ids) <= len(server.batches)


def test_a_4xx_quarantines_the_batch_and_sync_goes_on(
    sandbox: Sandbox, server: tls_server.Server, synced: Daemon, raw_push: RawPush
) -> None:
    server.script[:] = [400]
    raw_push(help_frames("q", 3))
    wait_for(lambda: synced.counter("sync.quarantined") == 1, what="quarantined")
    raw_push(help_frames("next", 2))
    server.wait(2)
    status = json.loads(sandbox.rkd("sync", "status", "--json").stdout)
    assert 1 == status["batches"].get("quarantined")
    log = json.loads(sandbox.rkd("sync", "log", "--json").stdout)
    assert any(r["result"].startswith("quarantine: refused: scripted") for r in log)
    assert 400 not in [r.get("status") for r in log]


def test_a_daemon_killed_mid_upload_resends_the_same_batch(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon], raw_push: RawPush,
) -> None:  # fmt: skip
    sandbox.env.update(KEY_ENV)
    sync_config(sandbox, server, certs)
    server.script[:] = [("sleep", 3)]
    d = start_daemon()
    raw_push(help_frames("k", 5))
    assert server.arrived.wait(15)
    first = server.requests[0].batch_id
    d.proc.send_signal(signal.SIGKILL)
    d.proc.communicate()
    start_daemon()
    server.wait(5)
    time.sleep(1.5)
    assert 5 == len(topics(app_events(server)))
    assert first in server.batches
    assert [first] * 2 == [r.batch_id for r in server.requests if r.batch_id == first][:2]


def test_tls_12_only_server_and_a_wrong_pin_are_refused(
    sandbox: Sandbox, certs: tls_server.Certs, start_daemon: Callable[..., Daemon],
    raw_push: RawPush,
) -> None:  # fmt: skip
    sandbox.env.update(KEY_ENV)
    for tls12, extra, expect in (
        (True, "", "TLS"),
        (False, 'pins = ["sha256/' + "A" * 43 + '="]\n', "refused the server"),
    ):
        with tls_server.serve(certs, tls12_only=tls12) as srv:
            sync_config(sandbox, srv, certs, extra=extra)
            d = start_daemon()
            raw_push(help_frames("x", 2))
            wait_for(lambda expect=expect: any(expect in r["result"] for r in sync_log(sandbox)),
                     timeout=20, what=f"a round that failed with {expect}")  # fmt: skip
            assert [] == srv.requests
            d.stop()
    with tls_server.serve(certs) as srv:  # the right pin is accepted
        sync_config(sandbox, srv, certs, extra=f'pins = ["sha256/{certs.pin}"]\n')
        start_daemon()
        srv.wait(4)


def test_ingestion_never_waits_for_a_slow_server(
    sandbox: Sandbox, server: tls_server.Server, synced: Daemon, raw_push: RawPush
) -> None:
    """A server taking 20 s to answer: events keep being stored at once meanwhile."""
    server.script[:] = [("sleep", 20)]
    raw_push(help_frames("slow", 2))
    assert server.arrived.wait(15)
    t = time.monotonic()
    raw_push(help_frames("during", 200))
    wait_for(lambda: synced.flush() >= 0 and sandbox.count("payload LIKE '%during%'") == 200,
             what="stored while the upload hangs")  # fmt: skip
    assert time.monotonic() - t < 5


def test_disabling_sync_stops_the_next_request(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs, synced: Daemon,
    raw_push: RawPush,
) -> None:  # fmt: skip
    server.script[:] = [500] * 1000
    raw_push(help_frames("d", 2))
    assert server.arrived.wait(15)
    sync_config(sandbox, server, certs, on=False)
    assert 0 == sandbox.rkd("reload").returncode
    time.sleep(0.5)  # a request already on the wire may finish
    n = len(server.requests)
    time.sleep(3)
    assert n == len(server.requests)
    log = json.loads(sandbox.rkd("sync", "log", "--json").stdout)
    assert any(r["kind"] == "consent" and "nothing more leaves" in r["result"] for r in log)
    status = json.loads(sandbox.rkd("sync", "status", "--json").stdout)
    assert {"withdrawn": 1} == status["batches"]  # the batch that never went never will


def test_sync_show_prints_the_exact_bytes_sent(
    sandbox: Sandbox, server: tls_server.Server, synced: Daemon, raw_push: RawPush
) -> None:
    raw_push([frame(s.HelpViewed(topic="think"))])
    server.wait(1)
    wait_for(lambda: json.loads(sandbox.rkd("sync", "log", "--json").stdout)[-1]["result"].startswith("ok"),
             what="logged")  # fmt: skip
    log = json.loads(sandbox.rkd("sync", "log", "--json").stdout)
    sent = next(r for r in log if r["kind"] == "events")
    shown = json.loads(sandbox.rkd("sync", "show", sent["batch_id"], "--json").stdout)
    assert sent["body_sha256"] == shown["body_sha256"]
    sent_ids = [e["event_id"] for e in shown["body"]["events"]]
    assert [e["event_id"] for e in server.batches[sent["batch_id"]].events] == sent_ids
    assert "think" in json.dumps(shown["body"])


def test_with_sync_off_the_daemon_opens_no_network_socket(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon], raw_push: RawPush, tmp_path: Path,
) -> None:  # fmt: skip
    """An audit hook in the daemon records every socket connect: none with sync off;
    with sync on, the connects appear (so the hook does see them)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    record = tmp_path / "connects.txt"
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        f"def _h(ev, args, _p={str(record)!r}):\n"
        "    if ev in ('socket.connect', 'socket.getaddrinfo'):\n"
        "        open(_p, 'a').write(ev + ' ' + repr(args[1:])[:80] + '\\n')\n"
        "sys.addaudithook(_h)\n"
    )
    sandbox.env["PYTHONPATH"] = os.pathsep.join([str(hook), *sys.path])
    sandbox.env.update(KEY_ENV)
    sync_config(sandbox, server, certs, on=False)
    d = start_daemon()
    raw_push(help_frames("off", 20))
    wait_for(lambda: d.flush() >= 0 and sandbox.count() == 20, what="stored")
    time.sleep(1.5)
    d.stop()
    assert not record.exists() or "socket.connect" not in record.read_text()
    sync_config(sandbox, server, certs, on=True)
    start_daemon()
    raw_push(help_frames("on", 1))
    server.wait(1)
    assert "socket.connect" in record.read_text()


def test_sync_enroll_stores_the_key_privately_and_never_prints_it(sandbox: Sandbox) -> None:
    proc = sandbox.rkd("sync", "enroll", "--key-id", "k-123", "--secret-stdin",
                       input=tls_server.SECRET + "\n")  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    path = sandbox.settings.data_dir / "sync_key.json"
    assert 0o600 == path.stat().st_mode & 0o777
    assert tls_server.SECRET not in proc.stdout + proc.stderr
    bad = sandbox.rkd("sync", "enroll", "--key-id", "k-123", "--secret-stdin", input="short\n")
    assert 2 == bad.returncode or 1 == bad.returncode
    assert "short" not in bad.stdout + bad.stderr
    status = sandbox.rkd("sync", "status", "--json")
    info = json.loads(status.stdout)
    assert "k-123" == info["key_id"] and tls_server.SECRET not in status.stdout


def test_expired_before_upload_is_counted(tmp_path: Path) -> None:
    """Retention wins: an event pruned while after the sync cursor counts as expired
    unsynced (the trigger covers every path that deletes)."""
    from rkd.client.clock import now_ms
    from rkd.daemon import outbox
    from rkd.daemon.sessions import SessionRow
    from rkd.daemon.storage import Record, Storage

    from tests.samples import envelope

    st = Storage(tmp_path / "t.db")
    sess = SessionRow(
        rowid=None, uuid=str(uuid.uuid4()), started_ms=now_ms(), last_ms=now_ms(), events=0
    )
    st.write([Record(envelope(s.HelpViewed(topic=f"e{i}")), sess, i, now_ms()) for i in range(10)],
             {}, now_ms())  # fmt: skip
    with st.db:
        outbox.set_meta(st.db, "sync_cursor", 4)
        st.db.execute("DELETE FROM events WHERE id <= 7")
    assert 3 == outbox.meta(st.db, "sync_expired_unsynced")
    st.close()
    _ = msgspec  # the module is used by the other tests' helpers


def test_sync_show_next_previews_and_sync_now_sends_at_once(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon], raw_push: RawPush,
) -> None:  # fmt: skip
    """With an hour between rounds, `rkd sync show next` shows what would go (through
    the upload filter, nothing recorded) and `rkd sync now` sends it at once."""
    sandbox.env.update(KEY_ENV)
    sync_config(sandbox, server, certs)
    sandbox.write_config(sandbox.config_file.read_text().replace("interval_secs = 1",
                                                                 "interval_secs = 3600"))  # fmt: skip
    d = start_daemon()
    time.sleep(1.5)  # the first round found nothing: the next is an hour away
    raw_push([frame(s.HelpViewed(topic="think")), frame(s.HelpViewed(topic="zq-private"))])
    wait_for(lambda: d.flush() >= 0 and sandbox.count() == 2, what="stored")
    preview = json.loads(sandbox.rkd("sync", "show", "next", "--json").stdout)
    assert "(next)" == preview["batch_id"]
    assert [OTHER, "think"] == topics(preview["body"]["events"])
    assert [] == server.requests and [] == json.loads(
        sandbox.rkd("sync", "log", "--json").stdout)[1:]  # only the consent row  # fmt: skip
    proc = sandbox.rkd("sync", "now")
    assert 0 == proc.returncode, proc.stderr
    assert "ok 202: 2 accepted, 0 duplicates" in proc.stdout
    assert [OTHER, "think"] == topics(app_events(server))


def test_sync_now_says_why_when_sync_is_off(sandbox: Sandbox, daemon: Daemon) -> None:
    proc = sandbox.rkd("sync", "now")
    assert 1 == proc.returncode
    assert "Error: sync is off (set sync_enabled = true, then rkd sync enroll)\n" == proc.stderr


def test_offline_then_online_delivers_once(
    sandbox: Sandbox, certs: tls_server.Certs, start_daemon: Callable[..., Daemon],
    raw_push: RawPush,
) -> None:  # fmt: skip
    """No server listening: rounds fail (logged as network errors) and the batch waits;
    once the server is up on that address, it arrives, once."""
    from tests.server_harness import free_port

    port = free_port()
    sandbox.env.update(KEY_ENV)
    offline = tls_server.Server(port=port)
    sync_config(sandbox, offline, certs)
    start_daemon()
    raw_push(help_frames("o", 3))
    wait_for(lambda: any(r["result"].startswith("retry: network") for r in sync_log(sandbox)),
             timeout=20, what="a failed round")  # fmt: skip
    with tls_server.serve(certs, port=port) as srv:
        srv.wait(3, timeout=30)
        time.sleep(1.5)
        assert 3 == len(topics(app_events(srv))) and 1 == len({r.batch_id for r in srv.requests})


def test_a_wrong_key_is_refused_by_the_server_and_quarantines(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon], raw_push: RawPush,
) -> None:  # fmt: skip
    """A secret the server does not know: its signature check fails (401), which is
    final: the batch is quarantined and kept, not retried in a loop."""
    sandbox.env.update(KEY_ENV, RK_TELEMETRY_SYNC_SECRET="ff" * 32)
    sync_config(sandbox, server, certs)
    d = start_daemon()
    raw_push(help_frames("w", 2))
    wait_for(lambda: d.counter("sync.quarantined") == 1, timeout=20, what="quarantined")
    assert [False] == [r.signature_ok for r in server.requests] and {} == server.batches
    assert any("refused: bad signature" in r["result"] for r in sync_log(sandbox))
