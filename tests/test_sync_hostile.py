"""Hostile input at the entry points issue 12 and 15 added: the drops file beside the
spool, the sync config keys and variables, the key file, `rkd sync` arguments, and a
server's answers. Each gets one clear line or a counted refusal; nothing crashes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from rkd.client.dropfile import (
    CLAIM_SLOTS,
    DROPS_FILE,
    REASONS,
    SIZE,
    Claim,
    add_drops,
    take_drops,
)
from rkd.daemon import uplink

from tests.conftest import Daemon, Sandbox


@pytest.mark.parametrize("content", [
    b"", b"garbage", b"RKDROP02" + b"\xff" * (SIZE - 8) + b"x", b"NOTMAGIC" + b"\x01" * (SIZE - 8),
    b"RKDROP01" + b"\x01" * (SIZE - 8),  # the first format's magic at this format's size
])  # fmt: skip
def test_a_damaged_drops_file_counts_nothing_and_is_reset(tmp_path: object, content: bytes) -> None:
    folder = tmp_path / "spool"  # type: ignore[operator]
    folder.mkdir(mode=0o700)
    (folder / DROPS_FILE).write_bytes(content)
    os.chmod(folder / DROPS_FILE, 0o600)
    assert ({}, []) == take_drops(folder)
    assert add_drops(folder, {"spool_full": 3, "an invented reason": 2})
    assert ({"spool_full": 3, "other": 2}, []) == take_drops(folder)
    assert SIZE == (folder / DROPS_FILE).stat().st_size
    assert ({}, []) == take_drops(folder)


def test_hostile_claims_are_skipped_and_a_full_table_counts_instead(tmp_path: object) -> None:
    """Claims (events a client could neither have confirmed nor spool) with a zero client,
    an inverted or absurd range or an unknown reason index are not claims; with every
    slot taken, a new claim is counted as plain drops (an upper bound), never lost."""
    import struct

    folder = tmp_path / "spool"  # type: ignore[operator]
    folder.mkdir(mode=0o700)
    counts = struct.pack(f"<8s{len(REASONS)}Q", b"RKDROP02", *[0] * len(REASONS))
    bad = [(0, 1, 5, 0), (7, 9, 3, 0), (7, 1, 1 << 62, 0), (7, 1, 5, 999), (7, 0, 5, 0)]
    slots = b"".join(struct.pack("<4Q", *c) for c in bad)
    slots += struct.pack("<4Q", 9, 3, 4, REASONS.index("unconfirmed"))
    (folder / DROPS_FILE).write_bytes(counts + slots + bytes(SIZE - len(counts) - len(slots)))
    os.chmod(folder / DROPS_FILE, 0o600)
    assert ({}, [Claim(9, 3, 4, "unconfirmed")]) == take_drops(folder)
    assert add_drops(
        folder, {}, [Claim(c, 1, 10, "unconfirmed") for c in range(1, CLAIM_SLOTS + 3)]
    )
    drops, claims = take_drops(folder)
    assert CLAIM_SLOTS == len(claims)
    assert {"unconfirmed": 20} == drops  # the two claims that found no slot


def test_a_drops_file_of_the_first_format_is_read(tmp_path: object) -> None:
    import struct

    folder = tmp_path / "spool"  # type: ignore[operator]
    folder.mkdir(mode=0o700)
    old = [0] * len(REASONS)
    old[REASONS.index("spool_full")] = 41
    (folder / DROPS_FILE).write_bytes(struct.pack(f"<8s{len(REASONS)}Q", b"RKDROP01", *old))
    os.chmod(folder / DROPS_FILE, 0o600)
    assert add_drops(folder, {"spool_full": 1})
    assert ({"spool_full": 42}, []) == take_drops(folder)
    assert SIZE == (folder / DROPS_FILE).stat().st_size


def test_the_daemon_refuses_a_linked_drops_file_and_stays_up(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    spool = sandbox.settings.spool_dir
    spool.mkdir(parents=True, mode=0o700)
    target = sandbox.root / "elsewhere"
    target.write_bytes(b"RKDROP01" + b"\x07" * (SIZE - 8))
    os.symlink(target, spool / DROPS_FILE)
    d = start_daemon()
    for _ in range(3):  # a flush asks for a spool scan too; the drops file is read with it
        d.flush()
    assert not [k for k in d.status().counters if k.startswith("client_drop")]
    code, log = d.stop()
    assert 0 == code and 1 == log.count("drops_file_refused")
    assert target.read_bytes().startswith(b"RKDROP01\x07")  # never written through the link


@pytest.mark.parametrize(("line", "env"), [
    ('sync_endpoint = "http://telemetry.example"', {}),
    ('sync_endpoint = "https://user:pw@host"', {}),
    ("", {"RK_TELEMETRY_SYNC_ENDPOINT": "ftp://x"}),
])  # fmt: skip
def test_a_bad_sync_endpoint_is_one_line_naming_the_key(
    sandbox: Sandbox, line: str, env: dict[str, str]
) -> None:
    """The daemon (strict) refuses to start on it, exit 78; a command that must work
    whatever the config says warns in one line and goes on; neither prints the value."""
    sandbox.write_config(f"[telemetry]\n{line}\n")
    key = "RK_TELEMETRY_SYNC_ENDPOINT" if env else "sync_endpoint"
    run = sandbox.rkd("run", timeout=30, **env)
    assert 78 == run.returncode, run.stderr
    assert key in run.stderr and "pw" not in run.stderr and "ftp" not in run.stderr
    status = sandbox.rkd("sync", "status", **env)
    assert 0 == status.returncode
    warnings = [x for x in status.stderr.splitlines() if x.startswith("Warning:")]
    assert 1 == len(warnings) and key in warnings[0] and "pw" not in status.stderr


@pytest.mark.parametrize("content", [b"{", b'{"key_id": "k_1234", "secret": "short"}',
                                     b'{"key_id": "k_1234", "secret": "' + b"ab" * 32 + b'", "x": 1}'])  # fmt: skip
def test_a_bad_key_file_is_reported_without_its_secret(sandbox: Sandbox, content: bytes) -> None:
    data = sandbox.settings.data_dir
    data.mkdir(parents=True, mode=0o700)
    (data / "sync_key.json").write_bytes(content)
    os.chmod(data / "sync_key.json", 0o600)
    proc = sandbox.rkd("sync", "status", "--json", RK_TELEMETRY_CLOUD_SYNC="true")
    assert 0 == proc.returncode, proc.stderr
    info = json.loads(proc.stdout)
    assert info["key_id"] is None and info["key_problem"]
    assert "short" not in proc.stdout and "ab" * 32 not in proc.stdout
    assert "off" == info["mode"]


def test_sync_show_of_an_unknown_batch_and_export_cloud_without_a_key(sandbox: Sandbox) -> None:
    assert "Error: nothing is stored yet\n" == sandbox.rkd("sync", "show", "nope").stderr
    proc = sandbox.rkd("export", "--cloud")  # nothing uploaded: nothing to fetch, no network
    assert 0 == proc.returncode, proc.stderr
    assert 0 == json.loads(proc.stdout)["event_count"]


@pytest.mark.parametrize(("status", "headers", "body", "kind"), [
    (202, {}, b"\x00not json", "ok"),
    (429, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, b"", "wait"),
    (429, {"retry-after": "-5"}, b"", "wait"),
    (429, {"retry-after": "1e309"}, b"", "wait"),
    (400, {}, b'{"error": "\\u001b[31mred\\n' + b"x" * 500 + b'"}', "quarantine"),
    (503, {}, b"<html>", None),
    (413, {}, b"", "split"),
])  # fmt: skip
def test_a_hostile_server_answer_is_taken_safely(
    status: int, headers: dict[str, str], body: bytes, kind: str | None
) -> None:
    """Garbage bodies, dates or absurd numbers in Retry-After, control characters in a
    reason: a bounded outcome, a printable one-line detail, never an exception."""
    o = uplink._answer(status, headers, body, 1)
    if kind is None:
        assert o is None  # tried again within the round
        return
    assert o is not None and kind == o.kind
    assert 1.0 <= o.retry_after <= uplink.MAX_RETRY_AFTER_SECS or kind != "wait"
    assert o.detail.isprintable() and len(o.detail) < 200
