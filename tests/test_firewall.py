"""The privacy firewall: what it removes, what it keeps, its settings, its speed, audit."""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rkd.client import schema as s
from rkd.client.clock import now_ms
from rkd.client.config import PrivacyConfig
from rkd.client.fields import string_fields
from rkd.daemon.firewall import Firewall
from rkd.daemon.pipeline import Rejected
from rkd.daemon.redact import Scanner
from rkd.daemon.storage import Record, SessionRow, Storage

from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import ALL_TYPES, envelope, frame, sample_payload

RawPush = Callable[[list[bytes]], None]
SALT = b"s" * 32


def redact(text: str, **kw: object) -> str:
    return Scanner(**kw).redact(text)[0]  # type: ignore[arg-type]


# -- generated secrets, one generator per kind ----------------------------------------------


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    from rkd.daemon.detectors import luhn_ok

    body = prefix + _rand(rng, string.digits, length - len(prefix) - 1)
    return next(body + d for d in string.digits if luhn_ok(body + d))


SECRETS: dict[str, Callable[[random.Random], str]] = {
    "anthropic_key": lambda r: "sk-ant-api03-" + _rand(r, ALNUM + "-_", 95),
    "openai_key": lambda r: "sk-proj-" + _rand(r, ALNUM + "-_", 80),
    "aws_access_key": lambda r: "AKIA" + _rand(r, UPPER, 16),
    "github_token": lambda r: "ghp_" + _rand(r, ALNUM, 36),
    "github_pat": lambda r: "github_pat_" + _rand(r, ALNUM, 22) + "_" + _rand(r, ALNUM, 59),
    "gitlab_token": lambda r: "glpat-" + _rand(r, ALNUM, 20),
    "slack_token": lambda r: "xoxb-" + _rand(r, string.digits, 12) + "-" + _rand(r, ALNUM, 24),
    "stripe_key": lambda r: "sk_live_" + _rand(r, ALNUM, 24),
    "google_api_key": lambda r: "AIza" + _rand(r, ALNUM + "-_", 35),
    "huggingface_token": lambda r: "hf_" + _rand(r, ALNUM, 34),
    "jwt": lambda r: "eyJhbGciOiJIUzI1NiJ9.eyJ" + _rand(r, ALNUM, 30) + "." + _rand(r, ALNUM + "-_", 43),
    "high_entropy": lambda r: _rand(r, string.ascii_uppercase, 3) + _rand(r, string.digits, 3) + _rand(r, string.ascii_lowercase, 3) + _rand(r, ALNUM, 31),
    "ipv4": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "ipv6": lambda r: "2001:db8:" + ":".join(f"{r.randint(1, 0xFFFF):x}" for _ in range(6)),
    "mac": lambda r: ":".join(f"{r.randint(0, 255):02X}" for _ in range(6)),
    "credit_card": lambda r: luhn_complete("4", 16, r),
    "ssn": lambda r: f"{r.randint(100, 665)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}",
    "hostname": lambda r: "host-" + _rand(r, string.ascii_lowercase, 8) + ".corp.internal",
    "email": lambda r: _rand(r, string.ascii_lowercase, 8) + "@example.org",
    "posix_path": lambda r: "/home/" + _rand(r, string.ascii_lowercase, 8) + "/notes.txt",
    "pem": lambda r: "-----BEGIN PRIVATE KEY-----\n" + _rand(r, ALNUM, 64) + "\n-----END PRIVATE KEY-----",
}  # fmt: skip
# The part of each secret that must never be stored (for most kinds, all of it).
SEPARATORS = ["", " ", "_", "-", ":", "+", "(", "=", ",", "\n"]


def core(kind: str, secret: str) -> str:
    if kind == "pem":
        return secret.split("\n")[1]
    if kind in ("email", "posix_path", "hostname"):
        return (
            secret.split("@")[0].split("/")[2]
            if kind == "posix_path"
            else secret.split("@")[0].split(".")[0]
        )
    return secret


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_scanner_removes_each_kind_of_secret_anywhere_in_text(kind: str) -> None:
    """A generated secret of each kind, inside a sentence, is gone after redaction."""
    rng = random.Random(kind)
    for _ in range(20):
        secret = SECRETS[kind](rng)
        text = (
            f"think failed ({rng.choice(SEPARATORS)}{secret}{rng.choice(SEPARATORS)}) after 2500ms"
        )
        out = redact(text)
        assert core(kind, secret) not in out, (kind, text, out)
        assert out.startswith("think failed (") and out.endswith(") after 2500ms")


KEEP = [
    "think", "compare --profile balanced", "gigathink laserlogic bedrock proofguard brutalhonesty",
    "claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "gemini-1.5-pro-002", "o1-preview",
    "1.0.0", "0.12.3-beta.1", "v2.3.4+build.5", "rate_limit_exceeded", "E0425", "ECONNRESET",
    "linux x86_64 aarch64 darwin-arm64", "550e8400-e29b-41d4-a716-446655440000",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # 40 hex: a git commit
    "2025-12-28T10:30:00.000Z", "2025-12-28 10:30:00+01:00", "2500ms", "1,234 tokens", "1.5 GB",
    "429 Too Many Requests", "anthropic.RateLimitError", "rkd.client.telemetry", "setup.py",
    "tokens_input: 1500", "max_tokens=4096", "verify_ssl = true", "took 0.25s, p99 1.2s",
    "https://api.anthropic.com", "mistralai/Mixtral-8x7B-Instruct-v0.1", "8080",
]  # fmt: skip


@pytest.mark.parametrize(
    "text", ["4BF92F3577B34DA6A3CE929D0E0E4736", "4bf92f3577b34da6a3ce929d0e0e4736"]
)
def test_a_bare_32_hex_value_is_taken_for_a_token(text: str) -> None:
    """32 hex characters are a bearer or API token as often as a trace id: removed (issue
    11; issue 3 had kept them as trace ids). Dashed UUIDs and 40-hex commits stay."""
    assert "[SECRET]" == redact(text)


@pytest.mark.parametrize("text", KEEP)
def test_scanner_keeps_what_telemetry_is_for(text: str) -> None:
    """Command names, model ids, versions, codes, ids, timestamps and numbers survive."""
    assert text == redact(text)


def test_placeholders_are_typed() -> None:
    """Findings become typed placeholders so categories can still be counted."""
    out, found = Scanner().redact(
        "mail bob@example.org from 192.168.1.20 mac 00:1A:2B:3C:4D:5E card 4111 1111 1111 1111 "
        "key AKIAIOSFODNN7EXAMPLE in /home/bob/x.txt via https://bob:pw@git.corp.example/x?y=1"
    )
    assert (
        "mail [EMAIL] from [IP] mac [MAC] card [CARD] key [API_KEY] in [USER_PATH] via https://git.corp.example"
        == out
    )
    assert {"email": 1, "ip": 1, "mac": 1, "credit_card": 1, "aws_access_key": 1, "path": 1,
            "url": 1, "url_credentials": 1} == dict(found)  # fmt: skip


def test_strip_pii_false_keeps_pii_but_never_secrets() -> None:
    """strip_pii = false keeps e-mail and IP; secrets are removed regardless."""
    text = "bob@example.org at 10.0.0.7 with ghp_" + "a1B2" * 9
    assert "bob@example.org at 10.0.0.7 with [API_KEY]" == redact(text, strip_pii=False)


def test_redact_file_paths_false_keeps_paths() -> None:
    """redact_file_paths = false keeps paths; the default turns them into [USER_PATH]."""
    text = "opened /home/bob/plan.txt"
    assert ("opened /home/bob/plan.txt", "opened [USER_PATH]") == (
        redact(text, redact_file_paths=False),
        redact(text),
    )


def test_allowed_domains_stay_readable() -> None:
    """Public service domains survive as bare hostnames; others become [HOSTNAME]."""
    assert "api.openai.com and [HOSTNAME]" == redact("api.openai.com and build-7.corp.internal")
    assert "models.acme.com" == redact("models.acme.com", allowed_domains=["acme.com"])


HOSTILE = ["a", "@", ".", "/", "1", "a@", "a.", "1.", "1-", "1 ", ":", "a:", "1:", "eyJ", "\\",
           "~/", "'/", "sk-", "+1 ", "0 ", "AKIA", "https://", "-----BEGIN PRIVATE KEY-----",
           "a=", "--password ", "x" * 15 + "=", "A1b", "ff:", "C:\\", "\\\\a", "Bearer "]  # fmt: skip


@pytest.mark.parametrize("unit", HOSTILE)
def test_hostile_input_stays_linear(unit: str) -> None:
    """Long runs of hostile characters cost time linear in their length (no backtracking blow-up)."""
    scanner = Scanner()

    def cost(n: int) -> float:
        text = (unit * (n // len(unit) + 1))[:n]
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            scanner.redact(text)
            best = min(best, time.perf_counter() - t)
        return best

    small, large = cost(4_000), cost(40_000)
    assert large < 0.5, f"{unit!r}: {large:.3f}s for 40k characters"
    assert large < 25 * small + 0.01, f"{unit!r}: {small:.4f}s -> {large:.4f}s for 10x the input"


# -- the stage ------------------------------------------------------------------------------


def test_every_string_field_of_every_type_is_planned() -> None:
    """The stage visits every str field; closed enumerations and numbers are not strings."""
    planned = {f.path for f in string_fields(s.CommandExecuted)}
    assert {("command",), ("subcommand",), ("thinktool_chain",), ("tokens", "model"),
            ("query_hash",)} == planned  # fmt: skip
    assert all(string_fields(cls) or cls is s.SessionStarted or cls is s.SessionEnded
               or cls is s.SessionResumed or cls.family == "upgrade" or cls is s.ProfileUsed
               or cls is s.InstallFailed or cls is s.CrashDetected or cls is s.ErrorOccurred
               for cls in ALL_TYPES)  # fmt: skip


def test_stage_redacts_identifier_shaped_secrets() -> None:
    """Secrets that fit an identifier (keys, IPs, MACs, hosts) are replaced in place."""
    fw = Firewall(PrivacyConfig(), SALT)
    env = envelope(s.CommandExecuted(command="AKIAIOSFODNN7EXAMPLE", subcommand="10.0.0.7",
                                     thinktool_chain=("gigathink", "00:1A:2B:3C:4D:5E"),
                                     tokens=s.Tokens(model="build-7.corp.internal")))  # fmt: skip
    p = fw(env).payload  # type: ignore[attr-defined]
    assert ("[API_KEY]", "[IP]", ("gigathink", "[MAC]"), "[HOSTNAME]") == (
        p.command, p.subcommand, p.thinktool_chain, p.tokens.model)  # fmt: skip
    assert {"firewall.aws_access_key": 1, "firewall.ip": 1, "firewall.mac": 1,
            "firewall.hostname": 1} == dict(fw.counters)  # fmt: skip


def test_stage_leaves_clean_events_untouched() -> None:
    """A clean event comes back as the very same object (no copy, no cost)."""
    fw = Firewall(PrivacyConfig(), SALT)
    env = envelope(s.CommandExecuted(command="think", thinktool_chain=("gigathink",),
                                     tokens=s.Tokens(model="claude-3-5-sonnet-20241022")))  # fmt: skip
    assert env is fw(env)
    assert env is fw(env)  # and again, from the clean cache


def test_stage_cuts_long_strings_after_scanning_them() -> None:
    """An over-long identifier is cut to its declared length and counted; a long key is caught whole."""
    fw = Firewall(PrivacyConfig(), SALT)
    p = fw(envelope(s.HelpViewed(topic="x" * 100))).payload  # type: ignore[attr-defined]
    assert "x" * 64 == p.topic
    key = "sk-ant-api03-" + "Ab3_" * 24
    p = fw(envelope(s.HelpViewed(topic=key))).payload  # type: ignore[attr-defined]
    assert "[API_KEY]" == p.topic
    assert (1, 1) == (fw.counters["firewall.truncated"], fw.counters["firewall.anthropic_key"])


def test_block_sensitive_drops_the_whole_event() -> None:
    """block_sensitive = true: any finding rejects the event (a long string alone does not)."""
    fw = Firewall(PrivacyConfig(block_sensitive=True), SALT)
    with pytest.raises(Rejected) as info:
        fw(envelope(s.HelpViewed(topic="10.0.0.7")))
    assert "sensitive" == info.value.reason
    assert "x" * 64 == fw(envelope(s.HelpViewed(topic="x" * 70))).payload.topic  # type: ignore[attr-defined]


def test_query_hash_is_salted() -> None:
    """The client's SHA-256 is re-hashed with the install's salt: no dictionary lookup."""
    digest = hashlib.sha256(b"what is the capital of France?").hexdigest()
    env = envelope(s.CommandExecuted(command="think", query_hash=digest))
    a = Firewall(PrivacyConfig(), SALT)(env).payload.query_hash  # type: ignore[attr-defined]
    b = Firewall(PrivacyConfig(), b"t" * 32)(env).payload.query_hash  # type: ignore[attr-defined]
    assert digest != a and a != b and 64 == len(a)
    assert a == Firewall(PrivacyConfig(), SALT)(env).payload.query_hash  # type: ignore[attr-defined]


# -- end to end: the real daemon's database never holds a secret -----------------------------


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[tuple[Sandbox, Daemon]]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="rkd-t-"))
    sb = Sandbox(root, root / "run")
    d = Daemon(sb)
    yield sb, d
    d.kill()
    shutil.rmtree(root, ignore_errors=True)


def _string_paths(cls: type[s.Payload]) -> list[tuple[str, ...]]:
    return [f.path for f in string_fields(cls) if not f.salted]


def _with_value(cls: type[s.Payload], path: tuple[str, ...], value: str) -> bytes:
    data = msgspec.to_builtins(envelope(sample_payload(cls)))
    target = data["payload"]
    for name in path[:-1]:
        if target.get(name) is None:
            target[name] = {}
        target = target[name]
    target[path[-1]] = [value] if path[-1] == "thinktool_chain" else value
    return msgspec.msgpack.encode(data)


CANDIDATES = [(cls, p) for cls in ALL_TYPES for p in _string_paths(cls)]


# Each example is a round trip through the real daemon: no shrinking (the assertion lists
# exactly what leaked), a handful of examples of 60+ events each.
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # fmt: skip
@given(st.data())
def test_no_generated_secret_reaches_the_real_database(
    module_daemon: tuple[Sandbox, Daemon], data: st.DataObject
) -> None:
    """Secrets of every kind, embedded anywhere in any string field of any event type,
    sent to the real daemon: not one byte of them is in the database files."""
    sandbox, daemon = module_daemon
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    frames, cores = [], []
    for kind, make in SECRETS.items():
        for _ in range(3):
            cls, path = rng.choice(CANDIDATES)
            secret = make(rng)
            # Text around the secret is joined by a separator (or absent).
            word = data.draw(st.sampled_from(["", "x", "think", "a b"]))
            prefix = word and word + rng.choice(SEPARATORS[1:])
            word = data.draw(st.sampled_from(["", "y", "v1.0"]))
            suffix = word and rng.choice(SEPARATORS[1:]) + word
            frames.append(_with_value(cls, path, prefix + secret + suffix))
            cores.append(core(kind, secret))
    import zmq
    from rkd.client.wire import EVENTS_SOCKET

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(f"ipc://{sandbox.settings.runtime_dir / EVENTS_SOCKET}")
    for f in frames:
        sock.send(f)
    sock.close(linger=5000)
    ctx.term()
    wait_for(lambda: daemon.flush() >= 0 and daemon.status().pending == 0, what="flush")
    db = sandbox.settings.db_path
    blob = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    leaked = [c for c in cores if c.encode() in blob]
    assert [] == leaked


# -- rkd audit -------------------------------------------------------------------------------


def _plant(sandbox: Sandbox, payloads: list[s.Payload]) -> None:
    """Write events straight into the database, around the firewall."""
    storage = Storage(sandbox.settings.db_path)
    sess = SessionRow(rowid=None, uuid="s", started_ms=now_ms(), last_ms=now_ms(), events=0)
    storage.write(
        [Record(envelope(p), sess, i, now_ms()) for i, p in enumerate(payloads)], {}, now_ms()
    )
    storage.close()


def test_audit_finds_planted_data(sandbox: Sandbox) -> None:
    """Data planted around the filter is found and counted by category; values never shown."""
    _plant(sandbox, [s.HelpViewed(topic="think"), s.HelpViewed(topic="AKIAIOSFODNN7EXAMPLE"),
                     s.CommandExecuted(command="think", subcommand="10.1.2.3",
                                       tokens=s.Tokens(model="alice-laptop.local"))])  # fmt: skip
    proc = sandbox.rkd("audit", "--json")
    assert 1 == proc.returncode
    report = json.loads(proc.stdout)
    assert (3, 2) == (report["events_scanned"], report["events_flagged"])
    assert {"aws_access_key": 1, "hostname": 1, "ip": 1} == report["findings"]
    human = sandbox.rkd("audit")
    assert 1 == human.returncode
    assert "FOUND possible private data" in human.stdout
    assert "AKIAIOSFODNN7EXAMPLE" not in human.stdout + proc.stdout
    assert "10.1.2.3" not in human.stdout + proc.stdout


def test_audit_reports_a_clean_database_as_clean(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """Events that went through the firewall audit clean (exit 0), even ones that held secrets."""
    raw_push(
        [frame(s.HelpViewed(topic="think")), frame(s.HelpViewed(topic="AKIAIOSFODNN7EXAMPLE"))]
    )
    wait_for(lambda: daemon.counter("accepted") == 2, what="2 events")
    daemon.flush()
    proc = sandbox.rkd("audit")
    assert 0 == proc.returncode, proc.stdout
    assert "Result:          clean" in proc.stdout
    assert "Events scanned:  3" in proc.stdout  # and session_started


def test_audit_with_no_database(sandbox: Sandbox) -> None:
    """Nothing stored yet: clean, and no file is created."""
    proc = sandbox.rkd("audit", "--json")
    assert (0, 0) == (proc.returncode, json.loads(proc.stdout)["events_scanned"])
    assert not sandbox.settings.db_path.exists()


def test_firewall_counters_show_in_status(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """What the firewall removed is counted by category in `rkd status --json`."""
    raw_push([frame(s.HelpViewed(topic="ghp_" + "a1B2" * 9))])
    wait_for(lambda: daemon.counter("firewall.github_token") == 1, what="the count")
    c = Counter(json.loads(sandbox.rkd("status", "--json").stdout)["counters"])
    assert 1 == c["firewall.github_token"]


def test_query_text_never_leaves_the_application(sandbox: Sandbox, daemon: Daemon) -> None:
    """cmd.query(text) stores a salted hash: not the text, not its plain SHA-256."""
    text = "my confidential merger plan for ACME"
    sandbox.python(f"""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for _ in range(2):
            with tel.command("think") as cmd:
                cmd.query({text!r})
        tel.close()
    """)
    daemon.flush()
    rows = sandbox.query("SELECT payload FROM events WHERE event_type = 'command_executed'")
    hashes = [json.loads(p)["query_hash"] for (p,) in rows]
    plain = hashlib.sha256(text.encode()).hexdigest()
    assert 2 == len(hashes) and hashes[0] == hashes[1] and plain != hashes[0]
    db = sandbox.settings.db_path
    blob = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    assert b"merger" not in blob and plain.encode() not in blob


def test_allowed_domains_config_key(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], raw_push: RawPush
) -> None:
    """[telemetry.privacy] allowed_domains keeps more domains readable."""
    sandbox.write_config('[telemetry.privacy]\nallowed_domains = ["models.acme.com"]\n')
    d = start_daemon()
    raw_push(
        [
            frame(s.HelpViewed(topic="models.acme.com")),
            frame(s.HelpViewed(topic="build-7.acme.com")),
        ]
    )
    wait_for(lambda: d.counter("accepted") == 2, what="2 events")
    d.flush()
    assert [("models.acme.com",), ("[HOSTNAME]",)] == sandbox.query(
        "SELECT json_extract(payload, '$.topic') FROM events"
        " WHERE event_type = 'help_viewed' ORDER BY id"
    )


@pytest.mark.parametrize(("config", "expected"), [
    ("", "[IP]"),
    ("strip_pii = false", "10.9.8.7"),
    ("block_sensitive = true", None),
])  # fmt: skip
def test_privacy_keys_act_in_the_daemon(
    sandbox: Sandbox,
    start_daemon: Callable[..., Daemon],
    raw_push: RawPush,
    config: str,
    expected: str | None,
) -> None:
    """strip_pii and block_sensitive in config.toml change what the daemon stores."""
    sandbox.write_config(f"[telemetry.privacy]\n{config}\n")
    d = start_daemon()
    raw_push([frame(s.HelpViewed(topic="10.9.8.7")), frame(s.HelpViewed(topic="think"))])
    wait_for(
        lambda: d.counter("accepted") + d.counter("rejected.sensitive") == 2, what="both events"
    )
    d.flush()
    rows = [
        r[0]
        for r in sandbox.query(
            "SELECT json_extract(payload, '$.topic') FROM events"
            " WHERE event_type = 'help_viewed' ORDER BY id"
        )
    ]
    assert ([expected] if expected else []) + ["think"] == rows
    assert (1 if expected is None else 0) == d.counter("rejected.sensitive")


@pytest.mark.parametrize("ip", ["10.1.2.3", "2001:db8::1", "::ffff:10.1.2.3", "fe80::1%eth0",
                                "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::1", "[2001:db8::7]"])  # fmt: skip
def test_every_ip_form_is_redacted(ip: str) -> None:
    """IPv4, IPv6 (compressed, zoned, IPv4-mapped, bracketed) all become [IP]."""
    out = redact(f"peer {ip} refused")
    assert out in ("peer [IP] refused", "peer [[IP]] refused")


@pytest.mark.parametrize("text", ["at 10:30:00.123", "std::vector<int>", "ratio 3:2", "a:b:c"])
def test_colon_separated_things_that_are_not_ips(text: str) -> None:
    """Times, C++ scopes and ratios are not addresses."""
    assert text == redact(text)


@pytest.mark.parametrize("secret", [
    "AKIADWGMXRLYHDRDHYWL",  # an AWS key id of letters only (found by the generated test)
    "thinkAKIADWGMXRLYHDRDHYWLy",
    "AIza" + "B" * 35,  # a Google API key of letters only
])  # fmt: skip
def test_letter_only_secrets_are_not_taken_for_words(secret: str) -> None:
    """Words of letters only skip the scan, but not when a key of letters only fits."""
    text, found = Scanner().redact(secret)
    assert "[API_KEY]" in text and 1 == sum(found.values()), (text, found)


def test_strings_found_clean_once_are_not_scanned_again_but_nothing_else_is_skipped() -> None:
    """The firewall remembers a payload type with its strings once found clean (they recur
    event after event). A payload with a salted hash is salted every time, one with a
    finding is redacted and counted every time, and other numbers with the same strings
    still pass whole."""
    counters: Counter[str] = Counter()
    fw = Firewall(PrivacyConfig(), SALT, counters)
    clean = envelope(s.CommandExecuted(command="think", thinktool_chain=("gigathink",)))
    assert fw(clean) is clean
    again = envelope(s.CommandExecuted(command="think", thinktool_chain=("gigathink",),
                                       execution=s.Execution(duration_ms=7)))  # fmt: skip
    assert fw(again) is again  # remembered: the same object back
    raw_hash = "ab" * 32
    for _ in range(2):
        salted = fw(envelope(s.CommandExecuted(command="think", query_hash=raw_hash)))
        assert salted.payload.query_hash not in (raw_hash, None)  # type: ignore[attr-defined]
    for n in (1, 2):
        found = fw(envelope(s.CommandExecuted(command="mail me at bob@example.com")))
        assert "bob@example.com" not in found.payload.command  # type: ignore[attr-defined]
        assert n == counters["firewall.email"]
