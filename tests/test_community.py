"""Issue 12, community reports: the daemon sends one anonymous report per active day
after consent (no key, no id, declared values only), each once, with its ε in the
ledger under differential privacy; the real server takes them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable

from rkd.client import schema as s
from rkd.client.clock import DAY_MS, now_ms
from rkd.client.upload import OTHER
from rkd.daemon import outbox
from rkd.daemon.storage import Record, SessionRow, Storage

from tests import tls_server
from tests.conftest import Daemon, Sandbox, wait_for
from tests.samples import envelope


def plant_history(sandbox: Sandbox, days_ago: tuple[int, ...], since_days_ago: int) -> None:
    """Events of earlier days in the database, and community consent given
    ``since_days_ago`` days ago (as if the daemon had been running since)."""
    st = Storage(sandbox.settings.db_path)
    today = now_ms() // DAY_MS
    for n in days_ago:
        ts = (today - n) * DAY_MS + 3_600_000
        sess = SessionRow(rowid=None, uuid=str(uuid.uuid4()), started_ms=ts, last_ms=ts, events=0)
        when = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        records = [Record(envelope(p, timestamp=when), sess, i, ts) for i, p in enumerate([
            s.CommandExecuted(command="think", execution=s.Execution(duration_ms=700)),
            s.CommandExecuted(command="my-private-dir"),
        ])]  # fmt: skip
        st.write(records, {}, ts)
    with st.db:
        outbox.set_meta(st.db, "community_since_day", today - since_days_ago)
    st.close()


def community(sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
              dp: bool = False) -> None:  # fmt: skip
    sandbox.write_config(
        f'[telemetry]\ncommunity_contribution = true\nsync_endpoint = "{server.endpoint}"\n'
        f'[telemetry.sync]\nca_file = "{certs.ca}"\ninterval_secs = 1\n'
        f"[telemetry.privacy]\ndifferential_privacy = {'true' if dp else 'false'}\n"
    )
    sandbox.env["RK_TELEMETRY_REPORTS_SEND_NOW"] = "1"


def test_one_anonymous_report_per_active_day_after_consent(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon],
) -> None:  # fmt: skip
    """Days 5, 2 and 1 ago were active; consent was given 3 days ago: reports for days 2
    and 1 only, each once, without key or batch headers, with declared values only."""
    plant_history(sandbox, (5, 2, 1), since_days_ago=3)
    community(sandbox, server, certs)
    d = start_daemon()
    wait_for(lambda: len(server.reports) == 2, timeout=20, what="two reports")
    today = dt.date(1970, 1, 1) + dt.timedelta(days=now_ms() // DAY_MS)
    days = sorted(r.day for r, _ in server.reports)
    assert [today - dt.timedelta(days=2), today - dt.timedelta(days=1)] == days
    for report, headers in server.reports:
        assert not {tls_server.cloud.H_KEY_ID, tls_server.cloud.H_BATCH_ID,
                    tls_server.cloud.H_SIGNATURE} & set(headers)  # fmt: skip
        assert {"think": 1, OTHER: 1} == report.counts["command"]
        assert report.privacy is None and report.commands == 2
    first = min(server.reports, key=lambda x: x[0].day)[0]
    assert first.first_of_month  # the first report of the install: nothing before it
    wait_for(lambda: json.loads(sandbox.rkd("sync", "status", "--json").stdout)["reports"]
             == {"sent": 2, "waiting": 0}, what="both recorded as sent")  # fmt: skip
    d.stop()
    start_daemon()  # a restart sends nothing twice
    info = json.loads(sandbox.rkd("sync", "status", "--json").stdout)
    assert ("community", {"sent": 2, "waiting": 0}) == (info["mode"], info["reports"])
    assert 2 == len(server.reports)


def test_differential_privacy_randomizes_and_records_the_budget(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon],
) -> None:  # fmt: skip
    plant_history(sandbox, (1,), since_days_ago=2)
    community(sandbox, server, certs, dp=True)
    start_daemon()
    wait_for(lambda: len(server.reports) == 1, timeout=20, what="a report")
    report = server.reports[0][0]
    assert report.privacy is not None and 0 < report.privacy.epsilon <= 1.0
    assert "model" not in report.counts  # open-ended keys would leak under DP
    info = json.loads(sandbox.rkd("sync", "status", "--json").stdout)
    assert [1] == [row["reports"] for row in info["privacy_budget"]]
    assert 0 < info["privacy_budget"][0]["epsilon"] <= 1.0


def test_no_report_without_consent_or_with_telemetry_off(
    sandbox: Sandbox, server: tls_server.Server, certs: tls_server.Certs,
    start_daemon: Callable[..., Daemon],
) -> None:  # fmt: skip
    plant_history(sandbox, (2, 1), since_days_ago=3)
    community(sandbox, server, certs)
    sandbox.write_config(sandbox.config_file.read_text().replace(
        "community_contribution = true", "community_contribution = false"))  # fmt: skip
    d = start_daemon()
    d.flush()
    import time

    time.sleep(2)
    assert [] == server.reports
    log = json.loads(sandbox.rkd("sync", "log", "--json").stdout)
    assert any("community reports off" in r["result"] for r in log)  # consent withdrawn, recorded
