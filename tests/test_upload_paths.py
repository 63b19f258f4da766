"""Issue 11/12: no other path can produce upload bytes.

Structurally: only daemon/uplink.py may use a network or TLS library, and only
daemon/sync.py and daemon/sync_worker.py (uploads) and daemon/cloud_rights.py (access and erasure requests,
which carry session ids only) may hand it bytes. By behaviour: whatever is stored — undeclared values
planted in every string field of every event type, around the firewall — the bytes the
sync would send (a Pro batch, a community report) hold none of them."""

from __future__ import annotations

import ast
import datetime as dt
import gzip
import uuid
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rkd.client.clock import DAY_MS, now_ms
from rkd.client.config import PrivacyConfig
from rkd.client.fields import set_at, string_fields
from rkd.client.vocabulary import reasonkit_vocabulary
from rkd.daemon import outbox, reports
from rkd.daemon.storage import Record, SessionRow, Storage

from tests.samples import ALL_TYPES, SOURCE, envelope, sample_payload
from tests.test_upload import _parent

TOP = Path(__file__).resolve().parent.parent
NETWORK = {"http", "urllib", "ssl", "httpx", "requests", "aiohttp", "urllib3", "ftplib",
           "smtplib", "websockets", "grpc"}  # fmt: skip
VOCAB = reasonkit_vocabulary()
# Identifiers long and odd enough that finding one in the bytes means it leaked.
PLANT = st.from_regex(r"\Azq[A-Za-z0-9_.:+-]{6,40}\Z")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _calls(path: Path, names: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            )
            if name in names:
                found.add(name)
    return found


def test_only_the_uplink_speaks_to_the_network() -> None:
    """No module of the client, the daemon or the CLI imports a network or TLS library
    but daemon/uplink.py; only daemon/sync.py calls it; nobody else opens a TCP socket."""
    users = {}
    for folder in ("client", "daemon", "cli"):
        for path in sorted((TOP / folder).glob("*.py")):
            rel = f"{folder}/{path.name}"
            if _imports(path) & NETWORK:
                users[rel] = sorted(_imports(path) & NETWORK)
            if rel not in (
                "daemon/sync.py",
                "daemon/sync_worker.py",
                "daemon/uplink.py",
                "daemon/cloud_rights.py",
            ):
                assert not _calls(path, {"deliver", "Uplink", "create_connection"}), rel
    assert {"daemon/uplink.py": ["http", "ssl", "urllib"]} == users


def _plant(st_: Storage, envelopes: list[object], ts: int) -> None:
    sess = SessionRow(rowid=None, uuid=str(uuid.uuid4()), started_ms=ts, last_ms=ts, events=0)
    st_.write([Record(e, sess, i, ts) for i, e in enumerate(envelopes)], {}, ts)  # type: ignore[arg-type]


def _planted_events(data: st.DataObject, when: dt.datetime) -> tuple[list[object], list[str]]:
    """One event of every type, every string field holding an undeclared identifier."""
    envelopes, planted = [], []
    for cls in ALL_TYPES:
        payload = sample_payload(cls)
        for f in string_fields(cls):
            if len(f.path) > 1 and f.get(payload) is None and _parent(payload, f.path) is None:
                continue
            if f.salted:
                continue  # the daemon stores its own HMAC here, never the application's value
            value = data.draw(PLANT.filter(lambda v, f=f: not VOCAB.declared(".".join(f.path), v)))
            planted.append(value)
            payload = set_at(payload, f.path, (value,) if f.many else value)
        envelopes.append(envelope(payload, timestamp=when,
                                  source=msgspec.structs.replace(SOURCE, os=planted[-1])))  # fmt: skip
    return envelopes, planted


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_no_stored_undeclared_string_reaches_a_batch_or_a_report(
    tmp_path_factory: object, data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("paths")  # type: ignore[attr-defined]
    st_ = Storage(folder / "t.db")
    yesterday = now_ms() // DAY_MS - 1
    ts = yesterday * DAY_MS + 3_600_000
    envelopes, planted = _planted_events(data, dt.datetime.fromtimestamp(ts / 1000, dt.UTC))
    _plant(st_, envelopes, ts)
    batch = outbox.build(st_.db, 0, 0, {VOCAB.product: VOCAB}.get, 1000)
    assert batch is not None and batch.events == len(ALL_TYPES) - 2  # session events stay home
    sent = gzip.decompress(batch.body)
    day = dt.date(1970, 1, 1) + dt.timedelta(days=yesterday)
    state = reports.load_state(st_.db, VOCAB.product)
    built = []
    for dp in (False, True):
        b = reports.build_report(st_.db, state, day, VOCAB, PrivacyConfig(differential_privacy=dp))
        assert b is not None
        built.append(msgspec.msgpack.encode(b.report))
    st_.close()
    for value in planted:
        needle = value.encode()
        assert needle not in sent, value
        assert all(needle not in r for r in built), value
