"""The server's checks as plain functions: capped gunzip, rate limits, replay, keys,
settings, and the `rkd-server` commands that need no running server."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rkd.client import cloud
from rkd.server.config import ConfigError, ServerSettings
from rkd.server.guard import RateLimiter, Refused, Replay, Signed, gunzip_capped
from rkd.server.keys import KeysError, add_key, load_keys
from rkd.server.main import main


def test_a_zip_bomb_is_refused_in_bounded_memory() -> None:
    """1 GB of zeros (1 MB of gzip): refused after inflating the cap, with peak memory
    about the cap, not the gigabyte."""
    bomb = gzip.compress(b"\0" * (64 << 20), 9) * 16  # 16 members: 1 GB inflated
    tracemalloc.start()
    with pytest.raises(Refused) as e:
        gunzip_capped(bomb, cloud.MAX_RAW_BYTES)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (413, "inflated_too_large") == (e.value.status, e.value.reason)
    assert peak < 3 * cloud.MAX_RAW_BYTES


def test_gunzip_refuses_trailing_garbage_and_truncation() -> None:
    body = gzip.compress(b"hello")
    assert b"hello" == gunzip_capped(body, 100)
    for bad in (body + b"junk", body[:-3]):
        with pytest.raises(Refused) as e:
            gunzip_capped(bad, 100)
        assert (400, "bad_gzip") == (e.value.status, e.value.reason)


def test_a_token_bucket_refills_at_its_rate() -> None:
    """Burst 2 at 1/s: two pass, the third waits about a second (Retry-After 1..2)."""
    limiter = RateLimiter(rate=1.0, burst=2.0)
    limiter.take("k", now=0.0)
    limiter.take("k", now=0.0)
    with pytest.raises(Refused) as e:
        limiter.take("k", now=0.0)
    assert (429, "rate_limited") == (e.value.status, e.value.reason)
    assert e.value.retry_after in (1, 2)
    limiter.take("other", now=0.0)  # per name
    limiter.take("k", now=1.01)


def test_a_nonce_is_refused_twice_and_forgotten_after_the_window() -> None:
    replay = Replay()
    replay.check("a" * 32, 1000.0)
    with pytest.raises(Refused):
        replay.check("a" * 32, 1001.0)
    replay.check("a" * 32, 1000.0 + 2 * cloud.MAX_SKEW_SECS + 1)


def test_signature_headers_of_the_wrong_shape_are_401() -> None:
    good = {cloud.H_KEY_ID: "k_abcd", cloud.H_TIMESTAMP: "1796000000", cloud.H_NONCE: "ab" * 16,
            cloud.H_BATCH_ID: "cd" * 16, cloud.H_SIGNATURE: "0" * 64}  # fmt: skip
    assert "k_abcd" == Signed.from_headers(good).key_id
    for name, bad in ((cloud.H_KEY_ID, "k a"), (cloud.H_TIMESTAMP, "-1"),
                      (cloud.H_NONCE, "zz"), (cloud.H_SIGNATURE, "0")):  # fmt: skip
        with pytest.raises(Refused) as e:
            Signed.from_headers({**good, name: bad})
        assert 401 == e.value.status


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    ServerSettings(data_dir=tmp_path, host="127.0.0.1").check()
    ServerSettings(data_dir=tmp_path, host="::1").check()
    ServerSettings(data_dir=tmp_path, host="0.0.0.0", behind_proxy=True).check()
    with pytest.raises(ConfigError, match="plain HTTP only on loopback"):
        ServerSettings(data_dir=tmp_path, host="0.0.0.0").check()


def test_keys_add_list_and_a_loose_file(tmp_path: Path) -> None:
    """`keys add` prints the secret once; `keys list` prints ids only; a keys file
    readable by others is refused without printing any secret."""
    runner = CliRunner()
    out = runner.invoke(main, ["keys", "add", "--data-dir", str(tmp_path)]).stdout
    key_id, secret = (line.split(": ")[1] for line in out.splitlines())
    assert {key_id: bytes.fromhex(secret)} == load_keys(tmp_path / "keys.toml")
    assert 0o600 == (tmp_path / "keys.toml").stat().st_mode & 0o777
    listed = runner.invoke(main, ["keys", "list", "--data-dir", str(tmp_path)])
    assert (0, f"{key_id}\n") == (listed.exit_code, listed.stdout)
    (tmp_path / "keys.toml").chmod(0o644)
    with pytest.raises(KeysError) as e:
        load_keys(tmp_path / "keys.toml")
    assert secret not in str(e.value)


def test_a_bad_secret_is_named_by_key_id_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    add_key(path)
    path.write_text(path.read_text() + 'k_bad0 = "not-hex-secret-value"\n')
    with pytest.raises(KeysError) as e:
        load_keys(path)
    assert "not-hex" not in str(e.value) and "k_bad0" in str(e.value)


def test_schema_and_openapi_commands() -> None:
    """`rkd-server schema [--cluster]` and `rkd-server openapi` print without a server."""
    runner = CliRunner()
    plain = runner.invoke(main, ["schema"]).output
    assert "CREATE TABLE IF NOT EXISTS rkd.events" in plain and "ON CLUSTER" not in plain
    cluster = runner.invoke(main, ["schema", "--cluster", "main"]).stdout
    assert "ReplicatedSummingMergeTree" in cluster
    bad = runner.invoke(main, ["schema", "--cluster", "x; DROP"])
    assert 0 != bad.exit_code
    doc = json.loads(runner.invoke(main, ["openapi"]).stdout)
    assert cloud.EVENTS_PATH in doc["paths"]


def test_run_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--data-dir", str(tmp_path), "--host", "0.0.0.0"])
    assert 1 == result.exit_code
    assert "plain HTTP only on loopback" in result.output


def test_migrate_applies_each_version_once(tmp_path: Path) -> None:
    """`rkd-server migrate` on a new data folder applies migrations 1 to 3; again, nothing."""
    runner = CliRunner()
    args = ["migrate", "--data-dir", str(tmp_path)]
    first = runner.invoke(main, args)
    assert (0, {"applied": [1, 2, 3], "version": 3}) == (first.exit_code, json.loads(first.stdout))
    again = runner.invoke(main, args)
    assert {"applied": [], "version": 3} == json.loads(again.stdout)


def test_the_filter_counts_each_copy_of_an_event_alike() -> None:
    """The filter remembers strings it kept, so a second copy of a kept event comes back
    as the same object with nothing counted; an undeclared string, or an address in the
    source, is replaced and counted in every copy."""
    import datetime as dt
    from collections import Counter

    import msgspec
    from rkd.client.schema import PAYLOAD_TYPES
    from rkd.client.upload import OTHER
    from rkd.server.prepare import load_vocabularies
    from rkd.server.privacy import PrivacyFilter

    from tests.samples import SOURCE, envelope, sample_payload

    command = next(p for p in PAYLOAD_TYPES if p.event_type == "command_executed")

    def event(name: str, **source: str) -> Any:
        payload = msgspec.structs.replace(sample_payload(command), command=name)
        return envelope(payload, source=msgspec.structs.replace(SOURCE, **source))

    kept, undeclared, address = event("think"), event("mysecretcmd"), event("think", os="10.1.2.3")
    privacy = PrivacyFilter(load_vocabularies(()))
    now = dt.datetime.now(dt.UTC)
    for _ in range(3):
        counts: Counter[str] = Counter()
        assert privacy(kept, now, counts) is kept
        assert {} == counts
        replaced = (privacy(undeclared, now, counts), privacy(address, now, counts))
        assert (OTHER, OTHER) == (replaced[0].payload.command, replaced[1].source.os)  # type: ignore[union-attr]
        assert {"undeclared": 2, "pii.ip": 1} == counts
