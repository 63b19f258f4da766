"""The ingestion server over real TLS 1.3 (one `rkd-server run` subprocess for the module),
hostile input for every check, and at the end the embedded warehouse itself: exactly the
accepted events are stored, none of a refused batch, no address anywhere."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from rkd.client import cloud
from rkd.client.fields import string_fields
from rkd.client.report import CommunityReport
from rkd.client.schema import PAYLOAD_TYPES, Payload, Source
from rkd.client.upload import OTHER, upload_filter
from rkd.client.vocabulary import reasonkit_vocabulary

from tests.samples import envelope, sample_payload, sample_value
from tests.server_harness import (
    KEY_ID,
    SECRET,
    RunningServer,
    batch_body,
    post_batch,
    signed_headers,  # fmt: skip
    start_server,
)

RATE_KEY = "k_ratelimited"
PII = "10.20.30.40"  # an IP address: fits every identifier and version pattern
PII_PRODUCT = "pii-test"
FORWARDED = "203.0.113.77"  # a forwarded-for address: must appear nowhere
VOCAB = reasonkit_vocabulary()
LEDGER: dict[str, set[str]] = {"stored": set(), "refused": set()}


def full_struct(cls: type[msgspec.Struct]) -> Any:
    """``cls`` with every field set, optional ones and nested Structs included."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return cls(**{f.name: _full(f.type) for f in info.fields})


def _full(t: mi.Type) -> Any:
    match t:
        case mi.Metadata(type=inner):
            return _full(inner)
        case mi.UnionType(types=types):
            return _full(next(x for x in types if not isinstance(x, mi.NoneType)))
        case mi.StructType(cls=cls):
            return full_struct(cls)
    return sample_value(t)


def good_events(n: int = 3) -> list[dict[str, Any]]:
    """Upload-filtered command events, as the daemon sends them."""
    return [upload_filter(envelope(sample_payload(ENVELOPE_TYPES["command_executed"])), VOCAB)
            for _ in range(n)]  # fmt: skip


ENVELOPE_TYPES = {p.event_type: p for p in PAYLOAD_TYPES}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("server")
    vocab = root / "pii.toml"
    fields = sorted({(p + ".".join(f.path)) for t in PAYLOAD_TYPES
                     for p, c in (("", t), ("source.", Source)) for f in string_fields(c)})  # fmt: skip
    lines = "".join(f'"{f}" = ["{PII}", "think"]\n' for f in fields if f != "source.product")
    vocab.write_text(f'product = "{PII_PRODUCT}"\nversion = 1\n[values]\n{lines}')
    s = start_server(root, "--vocabulary", str(vocab), "--key-burst", "200", "--report-bucket-burst", "3", "--body-timeout", "2",
                     keys={KEY_ID: SECRET, RATE_KEY: SECRET})  # fmt: skip
    yield s
    s.stop()


def accepted(
    server: RunningServer, events: list[dict[str, Any]], batch_id: str | None = None
) -> dict[str, Any]:
    status, _, answer = post_batch(server, events, batch_id)
    assert 202 == status, answer
    LEDGER["stored"].update(e["event_id"] for e in events)
    return answer


def refused(server: RunningServer, status: int, reason: str, events: list[dict[str, Any]],
            **kw: Any) -> None:  # fmt: skip
    """A batch refused whole, with ``status`` and ``reason``, counted once."""
    before = server.metric("rkd_server_rejections_total", reason=reason.split(" ")[0])
    got, _, answer = post_batch(server, events, **kw)
    assert (status, {"error": reason}) == (got, answer)
    assert before + 1 == server.metric("rkd_server_rejections_total", reason=reason.split(" ")[0])
    LEDGER["refused"].update(str(e["event_id"]) for e in events)


# -- the happy path, retries --------------------------------------------------------------


def test_a_batch_is_accepted_and_a_retry_is_a_duplicate(server: RunningServer) -> None:
    """202 with the count; the same batch id again answers duplicates, not accepted."""
    events = good_events(3)
    batch_id = uuid.uuid4().hex
    _, body = batch_body(events, batch_id)
    headers = signed_headers(cloud.EVENTS_PATH, body, batch_id)
    headers.update(
        {"X-Forwarded-For": FORWARDED, "X-Real-IP": FORWARDED, "Forwarded": f"for={FORWARDED}"}
    )
    status, _, data = server.request("POST", cloud.EVENTS_PATH, body, headers)
    assert (202, {"accepted": 3, "duplicates": 0, "rejected": {}}) == (status, json.loads(data))
    LEDGER["stored"].update(e["event_id"] for e in events)
    status, _, again = post_batch(server, events, batch_id)
    assert (202, {"accepted": 0, "duplicates": 3, "rejected": {}}) == (status, again)


def test_concurrent_copies_of_one_batch_are_written_once(server: RunningServer) -> None:
    """Two copies of a batch in flight at once (a retry racing the original) land in
    one group commit or two; either way one is accepted and one is a duplicate."""
    import concurrent.futures

    events = good_events(2)
    batch_id = uuid.uuid4().hex
    LEDGER["stored"].update(e["event_id"] for e in events)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: post_batch(server, events, batch_id), range(2)))
    assert [202, 202] == [a[0] for a in answers]
    assert [0, 2] == sorted(a[2]["accepted"] for a in answers)


# -- size, gzip ---------------------------------------------------------------------------


def test_a_body_over_the_cap_by_content_length_is_413(server: RunningServer) -> None:
    """Refused from the header alone: the body is not read."""
    before = server.metric("rkd_server_rejections_total", reason="body_too_large")
    conn = server.connection()
    conn.putrequest("POST", cloud.EVENTS_PATH)
    conn.putheader("Content-Length", str(cloud.MAX_BODY_BYTES + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert (413, b'{"error":"body_too_large"}') == (resp.status, resp.read())
    conn.close()
    assert before + 1 == server.metric("rkd_server_rejections_total", reason="body_too_large")


def test_a_chunked_body_over_the_cap_is_413_while_streaming(server: RunningServer) -> None:
    """No Content-Length: counted as it streams in."""
    conn = server.connection()
    chunk = b"x" * 65536
    conn.request("POST", cloud.EVENTS_PATH, body=iter([chunk] * 20), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})  # fmt: skip
    resp = conn.getresponse()
    assert (413, b'{"error":"body_too_large"}') == (resp.status, resp.read())
    conn.close()


def test_a_body_that_does_not_arrive_in_time_is_408(server: RunningServer) -> None:
    """A sender that announces 100 bytes and sends 10 does not hold its slot: 408 after
    the body timeout (2 s for this server)."""
    conn = server.connection()
    conn.putrequest("POST", cloud.EVENTS_PATH)
    conn.putheader("Content-Length", "100")
    conn.endheaders()
    conn.send(b"x" * 10)
    started = time.monotonic()
    resp = conn.getresponse()
    assert (408, b'{"error":"body_timeout"}') == (resp.status, resp.read())
    assert 1.9 < time.monotonic() - started < 15
    conn.close()


def test_a_zip_bomb_is_413(server: RunningServer) -> None:
    """100 MB of zeros in ~100 KB of gzip: refused after inflating the cap, not all."""
    body = gzip.compress(b"\0" * (100 << 20), 9)
    assert len(body) < cloud.MAX_BODY_BYTES
    batch_id = uuid.uuid4().hex
    status, _, data = server.request("POST", cloud.EVENTS_PATH, body,
                                     signed_headers(cloud.EVENTS_PATH, body, batch_id))  # fmt: skip
    assert (413, {"error": "inflated_too_large"}) == (status, json.loads(data))


def test_a_body_that_is_not_gzip_is_400(server: RunningServer) -> None:
    body = b"not gzip at all"
    status, _, data = server.request("POST", cloud.EVENTS_PATH, body,
                                     signed_headers(cloud.EVENTS_PATH, body, "a" * 32))  # fmt: skip
    assert (400, {"error": "bad_gzip"}) == (status, json.loads(data))


# -- signature, skew, replay, rate --------------------------------------------------------


def test_a_wrong_secret_is_401(server: RunningServer) -> None:
    refused(server, 401, "bad_signature", good_events(1), secret=b"x" * 32)


def test_an_unknown_key_id_is_401(server: RunningServer) -> None:
    refused(server, 401, "bad_signature", good_events(1), key_id="k_nobody000")


def test_a_changed_body_breaks_the_signature(server: RunningServer) -> None:
    """The signature covers the body: one more event after signing is refused."""
    events = good_events(1)
    batch_id, body = batch_body(events)
    headers = signed_headers(cloud.EVENTS_PATH, body, batch_id)
    _, other = batch_body([*events, *good_events(1)], batch_id)
    status, _, data = server.request("POST", cloud.EVENTS_PATH, other, headers)
    assert (401, {"error": "bad_signature"}) == (status, json.loads(data))


@pytest.mark.parametrize("offset", [-cloud.MAX_SKEW_SECS - 5, cloud.MAX_SKEW_SECS + 5])
def test_a_timestamp_off_by_more_than_5_minutes_is_401(server: RunningServer, offset: int) -> None:
    refused(server, 401, "skew", good_events(1), timestamp=int(time.time()) + offset)


def test_a_replayed_nonce_is_401(server: RunningServer) -> None:
    """The same nonce twice (even with a new batch) is refused the second time."""
    nonce = uuid.uuid4().hex
    accepted_answer = post_batch(server, events := good_events(1), nonce=nonce)
    assert 202 == accepted_answer[0]
    LEDGER["stored"].update(e["event_id"] for e in events)
    refused(server, 401, "replay", good_events(1), nonce=nonce)


def test_a_nonce_replayed_after_a_restart_is_401(tmp_path: Any) -> None:
    """Nonces outlive a restart (nonces.db in the data folder): a signed request replayed
    within the skew window after the server restarted is refused, not taken again.
    Before, the nonces lived in memory and the replay passed authentication."""
    nonce = uuid.uuid4().hex
    first = start_server(tmp_path)
    try:
        assert 202 == post_batch(first, good_events(1), nonce=nonce)[0]
    finally:
        first.stop()
    assert 0o600 == (tmp_path / "data" / "nonces.db").stat().st_mode & 0o777
    second = start_server(tmp_path)
    try:
        got, _, answer = post_batch(second, good_events(1), nonce=nonce)
        assert (401, {"error": "replay"}) == (got, answer)
        assert 202 == post_batch(second, good_events(1))[0]  # a fresh nonce still goes
    finally:
        second.stop()


def test_a_damaged_nonce_store_stops_the_server_with_a_clear_error(tmp_path: Any) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data" / "nonces.db").write_bytes(b"not a database, but long enough" * 100)
    with pytest.raises(RuntimeError, match=r"nonces\.db: not a usable nonce store"):
        start_server(tmp_path)


def test_a_key_over_its_rate_gets_429_with_retry_after(server: RunningServer) -> None:
    """Bursting one key past its bucket: 429 and Retry-After; other keys unaffected."""
    statuses, retry = [], None
    before = server.metric("rkd_server_rate_limited_total", source="key")
    for _ in range(2000):  # burst 200 (module server), 5/s: ends at the first 429
        status, headers, _ = server.request(
            "POST",
            cloud.EVENTS_PATH,
            gzip.compress(b"\xc1"),
            signed_headers(cloud.EVENTS_PATH, gzip.compress(b"\xc1"), "b" * 32, key_id=RATE_KEY),
        )
        statuses.append(status)
        if status == 429:
            retry = headers.get("retry-after")
            break
    assert 429 == statuses[-1] and {400} == set(statuses[:-1])
    assert retry is not None and int(retry) >= 1
    assert before + 1 == server.metric("rkd_server_rate_limited_total", source="key")
    events = good_events(1)
    assert 202 == post_batch(server, events)[0]
    LEDGER["stored"].update(e["event_id"] for e in events)


# -- schema validation: 400, nothing of the batch stored ----------------------------------


def test_an_unknown_schema_version_refuses_the_whole_batch(server: RunningServer) -> None:
    events = good_events(2)
    events[1] = {**events[1], "schema_version": "2.0.0"}
    refused(server, 400, "unknown_schema_version at $.events[1].schema_version", events)


def test_an_unknown_event_type_is_400_without_echoing_it(server: RunningServer) -> None:
    events = good_events(1)
    events.append({**good_events(1)[0], "event_type": "steal_the_prompt"})
    refused(server, 400, "unknown_event_type at $.events[1].event_type", events)


def test_an_undeclared_batch_field_is_400(server: RunningServer) -> None:
    """The batch admits nothing beside its id and events (an address, say)."""
    events = good_events(1)
    batch_id = uuid.uuid4().hex
    body = gzip.compress(
        msgspec.msgpack.encode({"batch_id": batch_id, "events": events, "ip": "10.0.0.1"})
    )
    status, _, data = server.request("POST", cloud.EVENTS_PATH, body,
                                     signed_headers(cloud.EVENTS_PATH, body, batch_id))  # fmt: skip
    assert (400, {"error": "unknown_field at $"}) == (status, json.loads(data))
    LEDGER["refused"].update(e["event_id"] for e in events)


def test_free_text_does_not_decode(server: RunningServer) -> None:
    """A prompt in the command field is refused by the schema's pattern; the reason
    names the path, never the value."""
    events = good_events(1)
    events[0] = {**events[0], "payload": {**events[0]["payload"], "command": "tell me a secret"}}
    refused(server, 400, "invalid at $.events[0].payload.command", events)


def test_a_body_batch_id_other_than_the_signed_one_is_400(server: RunningServer) -> None:
    events = good_events(1)
    _, body = batch_body(events)
    headers = signed_headers(cloud.EVENTS_PATH, body, uuid.uuid4().hex)
    status, _, data = server.request("POST", cloud.EVENTS_PATH, body, headers)
    assert (400, {"error": "batch_id_mismatch"}) == (status, json.loads(data))
    LEDGER["refused"].update(e["event_id"] for e in events)


@pytest.mark.parametrize(
    "forged", ["session_started", "session_ended", "rkd_product", "daemon_crash"]
)
def test_a_forged_daemon_owned_event_refuses_the_batch(server: RunningServer, forged: str) -> None:
    """Session boundaries and rkd's own events never leave a daemon: a batch holding one
    was not made by a daemon's upload filter, and nothing of it is stored."""
    events = good_events(2)
    if forged == "rkd_product":
        events[1]["source"] = {**events[1]["source"], "product": "rkd"}
    elif forged == "daemon_crash":
        events[1] = msgspec.to_builtins(envelope(
            ENVELOPE_TYPES["crash_detected"](component="daemon")))  # fmt: skip
    else:
        events[1] = msgspec.to_builtins(envelope(sample_payload(ENVELOPE_TYPES[forged])))
    refused(server, 400, "daemon_owned", events)


# -- the privacy filter -------------------------------------------------------------------


def test_undeclared_values_are_stored_as_other_and_counted(server: RunningServer) -> None:
    """A client that skipped its upload filter: undeclared strings become __other__."""
    raw = msgspec.to_builtins(envelope(ENVELOPE_TYPES["command_executed"](command="mysecretcmd")))
    before = server.metric("rkd_server_filter_total", what="undeclared")
    assert {"accepted": 1, "duplicates": 0, "rejected": {}} == accepted(server, [raw])
    assert before + 1 == server.metric("rkd_server_filter_total", what="undeclared")
    LEDGER.setdefault("other_commands", set()).add(raw["event_id"])


def test_an_event_of_a_product_without_vocabulary_is_dropped_and_counted(
    server: RunningServer,
) -> None:
    events = good_events(1)
    stranger = {**good_events(1)[0], "source": {**events[0]["source"], "product": "someone-else"}}
    status, _, answer = post_batch(server, [*events, stranger])
    assert (202, {"accepted": 1, "duplicates": 0, "rejected": {"undeclared_product": 1}}) == (
        status, answer)  # fmt: skip
    LEDGER["stored"].add(events[0]["event_id"])
    LEDGER["refused"].add(stranger["event_id"])


@pytest.mark.parametrize("payload_type", PAYLOAD_TYPES, ids=lambda t: t.event_type)
def test_pii_in_every_string_field_is_replaced_and_counted(
    server: RunningServer, payload_type: type[Payload]
) -> None:
    """Every string of every event type holds an IP address that the product even
    declared: the scanner still replaces each one and counts it."""
    if payload_type.event_type in ("session_started", "session_ended", "crash_detected"):
        pytest.skip("daemon-owned: refused whole (tested above)")
    payload = full_struct(payload_type)
    source = Source(product=PII_PRODUCT, version=PII, os=PII, arch=PII, python_version=PII)
    raw = msgspec.to_builtins(envelope(payload, source=source))
    n = 4  # the source's strings
    for f in string_fields(payload_type):
        if f.salted:
            obj = raw["payload"]
            obj[f.path[-1]] = "0" * 64  # a hex digest: nothing else fits
            continue
        obj = raw["payload"]
        for name in f.path[:-1]:
            obj = obj[name]
        obj[f.path[-1]] = [PII] if f.many else PII
        n += 1
    before = server.metric("rkd_server_filter_total", what="pii.ip")
    accepted(server, [raw])
    assert before + n == server.metric("rkd_server_filter_total", what="pii.ip")
    LEDGER.setdefault("pii", set()).add(raw["event_id"])


# -- community reports --------------------------------------------------------------------


def report(**over: Any) -> bytes:
    fields: dict[str, Any] = dict(
        day=dt.date(2026, 12, 7), product="reasonkit-core", version="1.2", os="linux",
        arch="x86_64", cohort_week="2026-W49", install_age_days=0, new_install=True,
        first_of_week=True, first_of_month=True, sessions=1, commands=3, errors=0,
        counts={"command": {"think": 3, "my-secret-project": 2}}, latency_ms=[1, 2])  # fmt: skip
    fields.update(over)
    return gzip.compress(msgspec.msgpack.encode(CommunityReport(**fields)))


def post_report(server: RunningServer, body: bytes) -> tuple[int, dict[str, str], Any]:
    status, headers, data = server.request("POST", cloud.REPORTS_PATH, body,
                                           {"Content-Encoding": "gzip"})  # fmt: skip
    return status, headers, json.loads(data)


def test_a_report_is_stored_with_undeclared_keys_folded(server: RunningServer) -> None:
    """202; the undeclared command key's count moves to __other__ (checked at the end)."""
    assert (202, {"accepted": 1, "duplicates": 0, "rejected": {}}) == (
        lambda r: (r[0], r[2]))(post_report(server, report()))  # fmt: skip


def test_reports_over_their_coarse_bucket_get_429(server: RunningServer) -> None:
    """Reports are limited per (product, version, os, arch) bucket, never per sender:
    the fourth of a bucket with burst 3 waits; another bucket does not."""
    body = report(product="nobody-prod")  # refused after the bucket: nothing stored
    statuses = [post_report(server, body)[0] for _ in range(4)]
    assert [400, 400, 400, 429] == statuses
    assert 400 == post_report(server, report(product="nobody-prod", version="9.9"))[0]
    assert 1 == server.metric("rkd_server_rate_limited_total", source="report_bucket")


def test_a_report_that_does_not_fit_the_schema_is_400(server: RunningServer) -> None:
    bad = gzip.compress(msgspec.msgpack.encode({"day": "2026-12-07", "session_id": "x"}))
    status, _, answer = post_report(server, bad)
    assert 400 == status and answer["error"].startswith(("missing_field", "unknown_field"))


# -- the user's rights --------------------------------------------------------------------


def sessions_request(server: RunningServer, path: str, ids: list[uuid.UUID]) -> tuple[int, Any]:
    request_id = uuid.uuid4().hex
    body = gzip.compress(msgspec.msgpack.encode(
        cloud.SessionsRequest(request_id=request_id, session_ids=ids)))  # fmt: skip
    status, _, data = server.request("POST", path, body, signed_headers(path, body, request_id))
    return status, json.loads(data)


def test_access_then_erasure_by_session_ids(server: RunningServer) -> None:
    """Access returns the session's raw events; erasure deletes them and says how many;
    access then finds none."""
    from rkd.client.schema import Session

    sid = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    events = [upload_filter(envelope(sample_payload(ENVELOPE_TYPES["command_executed"]),
                                     session=Session(id=sid, sequence=i, started_at=now)), VOCAB)
              for i in range(3)]  # fmt: skip
    accepted(server, events)
    status, answer = sessions_request(server, cloud.ACCESS_PATH, [sid])
    assert 200 == status
    assert sorted(e["event_id"] for e in events) == sorted(e["event_id"] for e in answer["events"])
    assert (200, {"deleted": 3}) == sessions_request(server, cloud.ERASURE_PATH, [sid])
    assert (200, {"events": []}) == sessions_request(server, cloud.ACCESS_PATH, [sid])
    LEDGER["stored"].difference_update(e["event_id"] for e in events)
    LEDGER.setdefault("erased", set()).update(e["event_id"] for e in events)


# -- TLS, documents -----------------------------------------------------------------------


def test_a_tls_1_2_only_client_is_refused(server: RunningServer) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port,
                                       context=server.context(tls12_only=True), timeout=10)  # fmt: skip
    with pytest.raises(ssl.SSLError):
        conn.request("GET", "/healthz")
        conn.getresponse()
    conn.close()


def test_the_connection_is_tls_1_3(server: RunningServer) -> None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        server.context().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert "TLSv1.3" == tls.version()


def test_openapi_is_generated_from_the_wire_schema(server: RunningServer) -> None:
    status, _, data = server.request("GET", "/openapi.json")
    doc = json.loads(data)
    assert 200 == status and "3.1.0" == doc["openapi"]
    assert {cloud.EVENTS_PATH, cloud.REPORTS_PATH, cloud.ERASURE_PATH, cloud.ACCESS_PATH} <= set(
        doc["paths"]
    )
    schemas = doc["components"]["schemas"]
    assert {"EventBatch", "CommunityReport", "Answer", "Problem"} <= set(schemas)
    assert len(PAYLOAD_TYPES) == len([n for n in schemas if n.endswith("Envelope")])


def test_metrics_are_prometheus_text(server: RunningServer) -> None:
    status, headers, data = server.request("GET", "/metrics")
    assert 200 == status and headers["content-type"].startswith("text/plain")
    assert b"# TYPE rkd_server_rejections_total counter" in data
    assert 1 <= server.metric("rkd_server_requests_total", endpoint="/healthz", status="200")


# -- last: the warehouse holds exactly what was accepted, and no address ------------------


def test_zz_the_warehouse_holds_exactly_the_accepted_events(server: RunningServer) -> None:
    """After the server stops: every accepted event once, none of a refused batch, none
    erased; undeclared and PII values as __other__; rollups sum to the raw count; and
    no file the server wrote holds the clients' address."""
    from rkd.server.warehouse import Warehouse, connect

    if not LEDGER["stored"]:
        pytest.skip("checks what the module's other tests sent: run the whole module")
    server.stop()
    log = server.log_path.read_text()
    assert '"event": "server_stopped"' in log  # a clean shutdown (uvicorn re-raises SIGTERM)
    anomalies = [json.loads(x) for x in log.splitlines() if '"event": "anomalies"' in x]
    assert anomalies  # the structured line (every minute, and at shutdown)
    assert 1 <= sum(a.get("rate_limited_keys", 0) for a in anomalies)
    assert 1 <= sum(a.get("pii.ip", 0) for a in anomalies)
    wh = Warehouse(connect(f"chdb://{(server.data_dir / 'warehouse').resolve()}"))
    try:
        ids = {str(r[0]) for r in wh.rows("SELECT event_id FROM {db}.events")}
        expected = LEDGER["stored"] | LEDGER["other_commands"] | LEDGER["pii"]
        assert expected == ids
        assert not ids & (LEDGER["refused"] | LEDGER["erased"])
        n = wh.scalar("SELECT count() FROM {db}.events")
        assert len(ids) == n  # each once
        erased = len(LEDGER["erased"])  # raw only: aggregates hold no session and stay
        for table in ("events_hourly", "events_daily", "events_monthly"):
            assert n + erased == wh.scalar(f"SELECT sum(events) FROM {{db}}.{table}"), table
        other = LEDGER["other_commands"]
        assert {OTHER} == {r[0] for r in wh.rows(
            "SELECT subject FROM {db}.events WHERE event_id IN ("
            + ",".join(f"'{i}'" for i in other) + ")")}  # fmt: skip
        pii_rows = wh.rows(
            "SELECT payload, version, os FROM {db}.events WHERE product = 'pii-test'"
        )
        assert len(LEDGER["pii"]) == len(pii_rows)
        assert all(PII not in " ".join(map(str, r)) for r in pii_rows)
        counts = dict(wh.rows("SELECT key, n FROM {db}.report_counts_daily FINAL"))
        assert {"think": 3, OTHER: 2} == counts
        assert 1 == wh.scalar("SELECT sum(reports) FROM {db}.reports_daily")
        erasures = wh.rows("SELECT requests, sessions, events_deleted FROM {db}.erasures")
        assert [(1, 1, 3)] == erasures
        tables = [r[0] for r in wh.rows("SELECT name FROM system.tables WHERE database = 'rkd' "
                                         "AND engine NOT LIKE '%View%'")]  # fmt: skip
        assert len(tables) >= 9
        for table in tables:  # every stored value, decompressed: no address anywhere
            for address in ("127.0.0.1", FORWARDED):
                assert 0 == wh.scalar(f"SELECT count() FROM {{db}}.{table} "
                                      f"WHERE position(toString(tuple(*)), '{address}') > 0"), table  # fmt: skip
    finally:
        wh.close()
    for path in server.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"127.0.0.1" not in data and FORWARDED.encode() not in data, path
    assert not re.search(r"\b127\.0\.0\.1\b", log)
