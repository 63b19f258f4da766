"""`rkd audit` covers the spool too: raw frames waiting there are counted and scanned."""

from __future__ import annotations

import json

import msgspec
from rkd.client import schema as s
from rkd.client.spool import write_spool

from tests.conftest import Sandbox
from tests.samples import frame


def test_audit_reports_what_waits_in_the_spool(sandbox: Sandbox) -> None:
    """Two spooled frames, one holding an e-mail address (the spool holds raw frames: the
    firewall runs when the daemon stores them): audit counts files and frames and names
    the finding, never the value."""
    spool = sandbox.settings.spool_dir
    data = msgspec.msgpack.decode(frame(s.HelpViewed(topic="think")))
    data["payload"]["topic"] = "a.b@c.de"  # raw bytes: no schema check on the way in
    raw = msgspec.msgpack.encode(data)
    assert 2 == write_spool(spool, [frame(s.HelpViewed(topic="think")), raw])
    (spool / "x.spool.quarantined").write_bytes(b"RKS1")
    proc = sandbox.rkd("audit", "--json")
    report = json.loads(proc.stdout)["spool"]
    assert (1, 1, 0, 2) == (
        report["files"],
        report["quarantined"],
        report["temporary"],
        report["frames"],
    )
    assert {"email": 1} == report["findings"]
    text = sandbox.rkd("audit").stdout
    assert "Spool:           2 raw frames waiting in 1 file (1 quarantined, 0 temporary)" in text


def test_audit_never_reads_another_users_spool_file(sandbox: Sandbox) -> None:
    """A spool file owned by another user in the spool folder: audit does not read it
    (nor count it); it used to scan whatever was there."""
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to chown a file to another user")
    data = msgspec.msgpack.decode(frame(s.HelpViewed(topic="think")))
    data["payload"]["topic"] = "a.b@c.de"
    assert 1 == write_spool(sandbox.settings.spool_dir, [msgspec.msgpack.encode(data)])
    (planted,) = list(sandbox.settings.spool_dir.glob("*.spool"))
    os.chown(planted, 65534, 65534)
    report = json.loads(sandbox.rkd("audit", "--json").stdout)["spool"]
    assert (0, 0, {}) == (report["files"], report["frames"], report["findings"])


def test_audit_scans_what_the_firewall_scans_not_the_ids(sandbox: Sandbox) -> None:
    """A random event id reads as an IBAN or a card number about once in 120 (checksums
    included): the spool audit scanned every string of a raw frame, ids too, and reported
    findings the firewall would never make (it scans the payload and the source). This
    made test_audit_reports_what_waits_in_the_spool fail now and then. Now the spool is
    scanned as stored events are."""
    data = msgspec.msgpack.decode(frame(s.HelpViewed(topic="think")))
    data["event_id"] = "c6b789ef-8136-4acc-bf88-af5933736dcc"  # a uuid4 that reads as an IBAN
    assert 1 == write_spool(sandbox.settings.spool_dir, [msgspec.msgpack.encode(data)])
    report = json.loads(sandbox.rkd("audit", "--json").stdout)["spool"]
    assert (1, {}) == (report["frames"], report["findings"])
