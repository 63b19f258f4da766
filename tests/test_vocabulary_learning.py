"""Issue 11: the daemon learns a product's vocabulary from its client (once per
connection, bounded, hostile ones refused and counted) or from a file, and tags every
stored event with the fields its vocabulary does not declare."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import msgspec
import pytest
from rkd.client import schema as s
from rkd.client.vocabulary import MAX_BYTES
from rkd.client.wire import VocabularyFrame

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import SOURCE, frame

RawPush = Callable[[list[bytes]], None]
ACME = b"""product = "acme-cli"
version = 1
[values]
command = ["deploy", "build"]
"source.os" = ["linux"]
"source.arch" = ["x86_64"]
[patterns]
"source.version" = ["[0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}"]
"source.python_version" = ["3[.][0-9]{1,2}[.][0-9]{1,3}"]
"""
ACME_SOURCE = msgspec.structs.replace(SOURCE, product="acme-cli")


def vocab_frame(body: bytes) -> bytes:
    return msgspec.msgpack.encode(VocabularyFrame(body))


def acme(command: str) -> bytes:
    return frame(s.CommandExecuted(command=command), source=ACME_SOURCE)


def tags(sandbox: Sandbox) -> dict[str, str | None]:
    rows = sandbox.query("SELECT payload, undeclared FROM events WHERE event_type = ?",
                         "command_executed")  # fmt: skip
    return {msgspec.json.decode(p)["command"]: u for p, u in rows}


def test_an_application_declares_its_vocabulary_and_events_are_tagged(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """Telemetry(..., vocabulary=path) sends the file once per connection; the daemon
    keeps it (in the database: it outlives the daemon) and tags each stored event with
    its undeclared fields. Two processes: learnt once."""
    path = sandbox.root / "telemetry.toml"
    path.write_bytes(ACME)
    code = f"""
        import pathlib
        from rkd.client import Telemetry, schema as s
        tel = Telemetry(product="acme-cli", version="1.2.3",
                        vocabulary=pathlib.Path({str(path)!r}))
        assert tel.enabled, tel.disabled_reason
        tel.emit(s.CommandExecuted(command=COMMAND))
        tel.close()
    """
    for command in ("deploy", "alice-secret-folder"):
        sandbox.python(code.replace("COMMAND", repr(command)))
    wait_for(lambda: daemon.flush() >= 0 and len(tags(sandbox)) == 2, what="both stored")
    assert {"deploy": None, "alice-secret-folder": "command"} == tags(sandbox)
    assert 1 == daemon.counter("vocabulary.learnt")
    assert [("acme-cli", 1)] == sandbox.query("SELECT product, version FROM vocabularies")


def test_an_undeclared_product_is_tagged_and_a_learnt_vocabulary_survives_a_restart(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    d = start_daemon()
    raw_push([acme("build")])
    wait_for(lambda: d.flush() >= 0 and tags(sandbox) == {"build": "*"}, what="tagged *")
    raw_push([vocab_frame(ACME)])
    wait_for(lambda: d.counter("vocabulary.learnt") == 1, what="learnt")
    d.stop()
    d = start_daemon()
    raw_push([acme("deploy")])
    wait_for(lambda: d.flush() >= 0 and len(tags(sandbox)) == 2, what="stored")
    assert {"build": "*", "deploy": None} == tags(sandbox)


HOSTILE = {
    "invalid": [
        b"product = \n",
        b"\xff\xfe" * 10,
        b'product = "x"\nversion = 1\n[values]\ncommand = ["a b"]\n',
    ],
    "invalid_catch_all": [
        b'product = "evil"\nversion = 1\n[patterns]\ncommand = ["[a-zA-Z0-9._-]{1,64}"]\n'
    ],
    "invalid_redos": [b'product = "evil"\nversion = 1\n[patterns]\ncommand = ["(a+)+b"]\n'],
    "shadowed": [b'product = "reasonkit-core"\nversion = 99\n[values]\ncommand = ["x"]\n'],
    "stale": [ACME, ACME.replace(b"deploy", b"deploy2")],
    "oversized": [b'product = "big"\nversion = 1\n#' + b"x" * MAX_BYTES],
    "malformed": [b"\x92\xaavocabulary\xc0"],
}
COUNTER = {"invalid_catch_all": "invalid", "invalid_redos": "invalid", "stale": "stale",
           "oversized": "invalid", "malformed": "malformed"}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_vocabulary_is_refused_counted_and_changes_nothing(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush, kind: str
) -> None:
    """Invalid TOML, a non-identifier value, a catch-all or back-tracking pattern, a
    shipped product's name, an older version, too big, not a vocabulary frame at all:
    refused, counted under its reason, and the daemon goes on storing events."""
    d = start_daemon()
    bodies = HOSTILE[kind]
    frames = [f if kind == "malformed" else vocab_frame(f) for f in bodies]
    raw_push([*frames, frame(s.HelpViewed(topic="think"))])
    reason = COUNTER.get(kind, kind)
    learnt = 1 if kind == "stale" else 0
    expected = len(frames) - learnt
    if kind == "oversized":  # bigger than a frame may be: zmq refuses it, or we do
        wait_for(lambda: d.flush() >= 0 and sandbox.count() == 1, what="the event")
        assert d.counter("vocabulary.learnt") == 0
        return
    wait_for(lambda: d.counter(f"vocabulary.refused.{reason}") == expected, what=reason)
    wait_for(lambda: d.flush() >= 0 and sandbox.count() == 1, what="the event after")
    assert learnt == d.counter("vocabulary.learnt")
    assert learnt == len(sandbox.query("SELECT * FROM vocabularies"))
    log = d.stop()[1]
    assert "vocabulary_refused" not in log or "a b" not in log  # never the values


def test_at_most_32_products_are_learnt(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    d = start_daemon()
    raw_push([vocab_frame(ACME.replace(b"acme-cli", f"p{i}".encode())) for i in range(40)])
    wait_for(lambda: d.counter("vocabulary.refused.too_many") == 8, what="8 refused")
    assert 32 == d.counter("vocabulary.learnt")


def test_a_vocabulary_file_of_the_user_is_used_and_an_unsafe_one_refused(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    folder = sandbox.config_file.parent / "vocabularies"
    folder.mkdir(parents=True)
    (folder / "acme.toml").write_bytes(ACME)
    other = folder / "other.toml"
    other.write_bytes(ACME.replace(b"acme-cli", b"other-cli"))
    os.chmod(other, 0o666)
    d = start_daemon()
    raw_push([acme("deploy"), acme("x1"), frame(s.CommandExecuted(command="y2"),
              source=msgspec.structs.replace(SOURCE, product="other-cli"))])  # fmt: skip
    wait_for(lambda: d.flush() >= 0 and len(tags(sandbox)) == 3, what="stored")
    assert {"deploy": None, "x1": "command", "y2": "*"} == tags(sandbox)
    assert 1 == d.counter("vocabulary.refused.file")
    # A client cannot replace the user's file.
    raw_push([vocab_frame(ACME.replace(b"version = 1", b"version = 2"))])
    wait_for(lambda: d.counter("vocabulary.refused.shadowed") == 1, what="shadowed")


def test_a_client_with_a_wrong_vocabulary_stays_off_and_says_why(sandbox: Sandbox) -> None:
    out = sandbox.python("""
        from rkd.client import Telemetry
        for voc in (b'product = "other"\\nversion = 1\\n', b"nope = ", b"x" * 70000):
            tel = Telemetry(product="acme-cli", version="1.0.0", vocabulary=voc)
            print(tel.enabled, tel.disabled_reason)
    """).stdout.splitlines()
    assert out[0] == "False invalid vocabulary: the vocabulary is 'other''s, not 'acme-cli''s"
    assert out[1].startswith("False invalid vocabulary: vocabulary is not valid TOML")
    assert out[2] == f"False invalid vocabulary: vocabulary larger than {MAX_BYTES} bytes"


def test_under_a_kill_switch_the_vocabulary_file_is_not_opened(sandbox: Sandbox) -> None:
    path = sandbox.root / "telemetry.toml"
    path.write_bytes(ACME)
    out = sandbox.python(
        f"""
        import sys, pathlib
        opened = []
        sys.addaudithook(lambda ev, args: ev == "open" and opened.append(str(args[0])))
        from rkd.client import Telemetry
        tel = Telemetry(product="acme-cli", version="1.0.0",
                        vocabulary=pathlib.Path({str(path)!r}))
        print(tel.enabled, [p for p in opened if p.endswith("telemetry.toml")])
    """,
        DO_NOT_TRACK="1",
    ).stdout
    assert "False []\n" == out


# -- rkd audit --fix ------------------------------------------------------------------------


def _plant_raw(sandbox: Sandbox) -> None:
    """Events written around the firewall (as an older rkd with weaker detectors would
    have stored them), tagged as if all were declared."""
    from tests.test_firewall import _plant

    _plant(sandbox, [s.HelpViewed(topic="think"), s.HelpViewed(topic="my-typo-topic"),
                     s.HelpViewed(topic="AKIAIOSFODNN7EXAMPLE"),
                     s.CommandExecuted(command="think", subcommand="10.1.2.3",
                                       query_hash="ab" * 32)])  # fmt: skip


@pytest.mark.parametrize("with_daemon", [True, False], ids=["daemon", "offline"])
def test_audit_fix_rewrites_what_todays_firewall_catches(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], with_daemon: bool
) -> None:
    """What an older firewall let through is rewritten in place, counted, and the audit
    that follows is clean; a salted hash is not salted again; tags are recomputed."""
    _plant_raw(sandbox)
    assert 1 == sandbox.rkd("audit").returncode
    if with_daemon:
        start_daemon()
    proc = sandbox.rkd("audit", "--fix", "--json")
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert {"scanned": 4, "rewritten": 2, "retagged": 1, "removed": 0} == report["fixed"]
    assert {} == report["findings"]
    rows = sandbox.query("SELECT payload, undeclared FROM events ORDER BY id")
    blob = "".join(p for p, _ in rows)
    assert "AKIA" not in blob and "10.1.2.3" not in blob and "ab" * 32 in blob
    assert [None, "topic", "topic", "subcommand,query_hash"] == [u for _, u in rows]
    proc = sandbox.rkd("audit", "--fix", "--json")
    assert 0 == proc.returncode, proc.stderr
    again = json.loads(proc.stdout)["fixed"]
    assert {"scanned": 4, "rewritten": 0, "retagged": 0, "removed": 0} == again


def test_audit_fix_removes_what_block_sensitive_refuses(sandbox: Sandbox) -> None:
    _plant_raw(sandbox)
    sandbox.write_config("[telemetry.privacy]\nblock_sensitive = true\n")
    proc = sandbox.rkd("audit", "--fix")
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert (
        "Fixed:           4 events re-filtered: 0 rewritten, 1 re-tagged, 2 removed" in proc.stdout
    )
    assert 2 == sandbox.count(derived=True)


def test_explain_lists_the_vocabularies_rkd_knows_here(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """Besides ReasonKit's, `rkd explain` shows the vocabularies of the user's files and
    those learnt from applications, with where each came from."""
    folder = sandbox.config_file.parent / "vocabularies"
    folder.mkdir(parents=True)
    (folder / "other.toml").write_bytes(ACME.replace(b"acme-cli", b"other-cli"))
    d = start_daemon()
    raw_push([vocab_frame(ACME)])
    wait_for(lambda: d.counter("vocabulary.learnt") == 1, what="learnt")
    doc = json.loads(sandbox.rkd("explain", "--json").stdout)
    assert [("acme-cli", "learnt"), ("other-cli", "file:other.toml")] == [
        (v["product"], v["origin"]) for v in doc["other_vocabularies"]
    ]
    assert ["build", "deploy"] == doc["other_vocabularies"][0]["fields"]["command"]["values"]
    text = sandbox.rkd("explain").stdout
    assert "acme-cli's declared vocabulary, version 1 (learnt):" in text
    assert "(none does yet)" not in text
