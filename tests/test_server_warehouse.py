"""The warehouse DDL on embedded ClickHouse (chdb, in this process): migrations, TTL tiers,
rollups fed at insert time, retries counted once everywhere, and the cluster variant."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from rkd.client.cloud import decode_batch
from rkd.client.schema import PAYLOAD_TYPES
from rkd.client.upload import upload_filter
from rkd.client.vocabulary import reasonkit_vocabulary
from rkd.server import ddl
from rkd.server.commit import GroupCommit
from rkd.server.metrics import Metrics
from rkd.server.rows import event_block, event_values
from rkd.server.warehouse import Warehouse, connect

from tests.samples import SOURCE, envelope, sample_payload

COMMAND = next(p for p in PAYLOAD_TYPES if p.event_type == "command_executed")
ROLLUPS = ("events_hourly", "events_daily", "events_monthly")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    path = tmp_path_factory.mktemp("warehouse") / "ch"
    wh = Warehouse(connect(f"chdb://{path}"))
    wh.migrate()
    yield wh
    wh.close()


def block(n: int, batch_id: str, days_ago: float = 0, product: str = "reasonkit-core") -> bytes:
    """``n`` command events of ``product`` as the ingester encodes them (``events`` rows)."""
    ts = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    events = [upload_filter(envelope(sample_payload(COMMAND), timestamp=ts), reasonkit_vocabulary())
              for _ in range(n)]  # fmt: skip
    batch = decode_batch(msgspec.msgpack.encode({"batch_id": batch_id, "events": events}))
    source = msgspec.structs.replace(SOURCE, product=product)
    values = [event_values(msgspec.structs.replace(e, source=source)) for e in batch.events]
    return event_block(values, batch_id, dt.datetime.now(dt.UTC))


def counts(wh: Warehouse, batch_ids: list[str]) -> dict[str, int]:
    """Events of these batches in raw, and in each rollup (all rows are theirs: a fresh
    product name per test keeps tests apart)."""
    product = wh.scalar(
        "SELECT any(product) FROM {db}.events WHERE batch_id IN ("
        + ",".join(f"'{b}'" for b in batch_ids)
        + ")"
    )
    out = {"raw": int(wh.scalar(f"SELECT count() FROM {{db}}.events WHERE product = '{product}'"))}
    for t in ROLLUPS:
        out[t] = int(wh.scalar(f"SELECT sum(events) FROM {{db}}.{t} WHERE product = '{product}'"))
    return out


def test_migrations_apply_once(warehouse: Warehouse) -> None:
    """The fixture applied every migration; a second run applies none."""
    assert [m.version for m in ddl.migrations()][-1] == warehouse.version()
    assert [] == warehouse.migrate()


def test_the_tables_each_insert_writes_merge_with_base_20(warehouse: Warehouse) -> None:
    """Migration 2: the raw table, batches and the event rollups merge less eagerly."""
    tables = ("events", "batches", *ROLLUPS)
    ddls = {t: warehouse.scalar(f"SHOW CREATE TABLE {{db}}.{t}") for t in tables}
    assert {t: True for t in tables} == {
        t: "merge_selector_base = 20" in d for t, d in ddls.items()
    }


def test_a_retried_batch_is_counted_once_in_raw_and_every_rollup(warehouse: Warehouse) -> None:
    """Through the group commit: the same batch id three times (two in one group, one
    later) is written once; raw and all three rollups hold its 5 events once."""

    async def scenario() -> list[bool]:
        commit = GroupCommit(warehouse, Metrics(), window_secs=0.05)
        commit.start()
        batch = block(5, bid, product="retry-test")
        first = await asyncio.gather(commit.submit("events", bid, batch, 5),
                                     commit.submit("events", bid, batch, 5))  # fmt: skip
        later = await commit.submit("events", bid, batch, 5)
        await commit.stop()
        return [*first, later]

    bid = uuid.uuid4().hex
    assert [True, False, False] == sorted(asyncio.run(scenario()), reverse=True)
    assert {"raw": 5, **dict.fromkeys(ROLLUPS, 5)} == counts(warehouse, [bid])


@pytest.mark.parametrize(("announced", "groups"), [(True, [2]), (False, [1, 1])])
def test_a_request_still_arriving_when_the_window_ends_joins_the_group(
    warehouse: Warehouse, announced: bool, groups: list[int]
) -> None:
    """A batch whose request was inside ``arriving()`` when the window ran out is waited
    for (one more window at most) and written with the first; an unannounced batch that
    comes as late is written in a group of its own. Both are stored."""
    metrics = Metrics()
    product = f"arriving-{announced}"

    def batch(bid: str) -> bytes:
        return block(2, bid, product=product)

    async def late(commit: GroupCommit, bid: str) -> bool:
        with commit.arriving() if announced else contextlib.nullcontext():
            await asyncio.sleep(0.3)  # past the window (0.2), within two
        return await commit.submit("events", bid, batch(bid), 2)

    async def scenario(first: str, second: str) -> list[bool]:
        commit = GroupCommit(warehouse, metrics, window_secs=0.2)
        commit.start()
        answers = await asyncio.gather(
            commit.submit("events", first, batch(first), 2), late(commit, second)
        )
        await commit.stop()
        return list(answers)

    bids = [uuid.uuid4().hex, uuid.uuid4().hex]
    assert [True, True] == asyncio.run(scenario(*bids))
    sizes = metrics.registry.get_sample_value("rkd_server_commit_batches_sum")
    count = metrics.registry.get_sample_value("rkd_server_commit_batches_count")
    assert (sum(groups), len(groups)) == (sizes, count)
    assert {"raw": 4, **dict.fromkeys(ROLLUPS, 4)} == counts(warehouse, bids)


@pytest.mark.parametrize(
    ("days_ago", "expected"),
    [
        (10, {"raw": 3, "events_hourly": 3, "events_daily": 3, "events_monthly": 3}),
        (120, {"raw": 0, "events_hourly": 3, "events_daily": 3, "events_monthly": 3}),
        (500, {"raw": 0, "events_hourly": 0, "events_daily": 3, "events_monthly": 3}),
        (1200, {"raw": 0, "events_hourly": 0, "events_daily": 0, "events_monthly": 3}),
    ],
    ids=["10d", "120d", "500d", "1200d"],
)
def test_ttl_tiers(warehouse: Warehouse, days_ago: int, expected: dict[str, int]) -> None:
    """Old events (an offline client's) feed every rollup at insert, and each tier keeps
    them only for its lifetime (raw 90 days, hourly 1 year, daily 3 years, monthly
    forever) once the engine applies TTL (forced here with OPTIMIZE ... FINAL)."""
    product = f"ttl-{days_ago}"
    bid = uuid.uuid4().hex
    warehouse.insert_arrow("events", [block(3, bid, days_ago, product)])
    for table in ("events", *ROLLUPS):
        warehouse.client.command(f"OPTIMIZE TABLE {warehouse.db}.{table} FINAL")
    got = {
        "raw": int(
            warehouse.scalar(f"SELECT count() FROM {{db}}.events WHERE product = '{product}'")
        )
    }
    for t in ROLLUPS:
        got[t] = int(warehouse.scalar(
            f"SELECT sum(events) FROM {{db}}.{t} WHERE product = '{product}'"))  # fmt: skip
    assert expected == got


def test_ttl_removes_rows_that_aged_while_stored(warehouse: Warehouse) -> None:
    """Rows stored while young are removed by the engine once past the raw table's own
    TTL: a copy of the table without TTL takes 120-day-old rows, then gets the real
    table's TTL expression back, and the engine drops them (materialized TTL)."""
    db = warehouse.db
    engine = warehouse.scalar("SELECT engine_full FROM system.tables "
                              "WHERE database = '{db}' AND name = 'events'")  # fmt: skip
    ttl = re.search(r"TTL (.+?) SETTINGS", engine)
    assert ttl is not None and "toIntervalDay(90)" in ttl[1]
    warehouse.client.command(f"CREATE TABLE {db}.aging AS {db}.events")
    warehouse.client.command(f"ALTER TABLE {db}.aging REMOVE TTL")
    warehouse.insert_arrow("aging", [block(2, uuid.uuid4().hex, 120)])
    assert 2 == warehouse.scalar("SELECT count() FROM {db}.aging")
    warehouse.client.command(f"ALTER TABLE {db}.aging MODIFY TTL {ttl[1]}",
                             settings={"mutations_sync": 2})  # fmt: skip
    warehouse.client.command(f"OPTIMIZE TABLE {db}.aging FINAL")
    assert 0 == warehouse.scalar("SELECT count() FROM {db}.aging")


def test_the_cluster_variant_parses(warehouse: Warehouse) -> None:
    """Every statement of `rkd-server schema --cluster` is accepted by the engine's parser,
    and every table is replicated."""
    statements = ddl.cluster_variant("rkd", "main")
    for s in statements:
        assert warehouse.parses(s), s
    tables = [s for s in statements if s.startswith("CREATE TABLE") and "Distributed" not in s]
    assert tables and all("ENGINE = Replicated" in s and "ON CLUSTER main" in s for s in tables)
    assert 3 == sum("ENGINE = Distributed(main, rkd," in s for s in statements)


def test_an_event_row_holds_exactly_what_was_sent(warehouse: Warehouse) -> None:
    """Through the Arrow rows: ids and session as sent, the timestamp in UTC truncated to
    the millisecond (an offset applied), the payload as its JSON text, nulls as nulls."""
    from rkd.client.schema import Session

    bid = uuid.uuid4().hex
    sid = uuid.uuid4()
    day = dt.date.today() - dt.timedelta(days=1)  # the raw table keeps 90 days
    plus_two = dt.timezone(dt.timedelta(hours=2))
    ts = dt.datetime.combine(day, dt.time(7, 8, 9, 123987), plus_two)
    source = msgspec.structs.replace(SOURCE, product="exact-row")
    with_session = envelope(sample_payload(COMMAND), timestamp=ts, source=source,
                            session=Session(id=sid, sequence=7, started_at=ts))  # fmt: skip
    without = envelope(sample_payload(COMMAND), timestamp=ts, source=source)
    received = dt.datetime.combine(day, dt.time(5, 9, 0, 999999), dt.UTC)
    warehouse.insert_arrow("events", [event_block(
        [event_values(with_session), event_values(without)], bid, received)])  # fmt: skip
    got = warehouse.rows(
        "SELECT toString(event_id), batch_id, toString(ts), toString(received), "
        "toString(session_id), session_seq, subject, duration_ms, success, payload, "
        f"event_type, version, os FROM {{db}}.events WHERE batch_id = '{bid}' ORDER BY session_seq"
    )
    payload = with_session.payload  # type: ignore[attr-defined]
    common = (bid, f"{day} 05:08:09.123", f"{day} 05:09:00")
    tail = (payload.command, payload.execution.duration_ms, int(payload.execution.success),
            msgspec.json.encode(payload).decode(), "command_executed", "1.0.0", "linux")  # fmt: skip
    assert [
        (str(with_session.event_id), *common, str(sid), 7, *tail),
        (str(without.event_id), *common, None, None, *tail),
    ] == [(r[0], _text(r[1]), *r[2:]) for r in got]


def test_the_arrow_rows_name_every_column_of_the_events_table(warehouse: Warehouse) -> None:
    """A column added to ``events`` without a place in ``EVENT_SCHEMA`` would be stored as
    its default: the two lists are the same."""
    from rkd.server.rows import EVENT_SCHEMA

    columns = [r[0] for r in warehouse.rows("SELECT name FROM system.columns "
                                            "WHERE database = 'rkd' AND table = 'events'")]  # fmt: skip
    assert sorted(columns) == sorted(EVENT_SCHEMA.names)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_no_table_has_an_address_or_key_column(warehouse: Warehouse) -> None:
    names = {r[0] for r in warehouse.rows("SELECT name FROM system.columns WHERE database = 'rkd'")}
    assert not {n for n in names if any(w in n for w in ("ip", "addr", "key_id", "host"))}


def test_every_report_field_is_stored(warehouse: Warehouse) -> None:
    """Each scalar field of the report schema has a column; the rest are in the columns
    derived from them (counts, latency, privacy) and in ``body``, which holds all."""
    import msgspec.inspect as mi
    from rkd.client.report import CommunityReport

    info = mi.type_info(CommunityReport)
    assert isinstance(info, mi.StructType)
    columns = {r[0] for r in warehouse.rows(
        "SELECT name FROM system.columns WHERE database = 'rkd' AND table = 'reports'")}  # fmt: skip
    derived = {"counts": "count_key", "privacy": "dp_epsilon", "funnel": "body"}
    for f in info.fields:
        assert derived.get(f.name, f.name) in columns, f.name


def test_distributed_mode_writes_and_checks_through_the_all_tables(warehouse: Warehouse) -> None:
    """With ``distributed``, inserts go to ``events_all`` and the duplicate check reads
    ``batches_all`` (stand-ins here: chdb has no cluster; a Null table forwarding to the
    local one plays the Distributed table)."""
    db = "rkd_dist"
    local = Warehouse(warehouse.client, db)
    local.migrate()
    c = warehouse.client
    c.command(f"CREATE TABLE {db}.events_all AS {db}.events ENGINE = Null")
    c.command(
        f"CREATE MATERIALIZED VIEW {db}.forward TO {db}.events AS SELECT * FROM {db}.events_all"
    )
    c.command(f"CREATE VIEW {db}.batches_all AS SELECT * FROM {db}.batches")
    dist = Warehouse(warehouse.client, db, distributed=True)
    bid = uuid.uuid4().hex
    dist.insert_arrow("events", [block(2, bid)])
    assert {bid} == dist.known_batches([bid, uuid.uuid4().hex])
    assert 2 == local.scalar("SELECT count() FROM {db}.events")
    assert 0 == local.scalar("SELECT count() FROM {db}.events_all")


def test_a_failed_write_answers_no_one_yes_and_is_finished_before_the_next_group(
    warehouse: Warehouse,
) -> None:
    """The group's waiters hear the write's error (the app answers 503) once the insert
    and its two same-token retries failed. The server sends that insert again before the
    next group; the sender's retry of the same batch then finds it written: each event is
    stored once, in raw and every rollup."""

    class Failing(Warehouse):
        fail = True
        calls = 0

        def insert_arrow(self, table: str, blocks: Any, token: str = "") -> None:
            self.calls += 1
            if self.fail and blocks:
                raise RuntimeError("disk full")
            super().insert_arrow(table, blocks, token)

    flaky = Failing(warehouse.client, warehouse.db)
    bid = uuid.uuid4().hex
    batch = block(4, bid, product="failing-write")

    async def scenario() -> bool:
        commit = GroupCommit(flaky, Metrics())
        commit.start()
        with pytest.raises(RuntimeError):
            await commit.submit("events", bid, batch, 4)
        assert (3, 1) == (flaky.calls, len(commit.unfinished))
        with pytest.raises(RuntimeError):  # still failing: the next group is not written
            await commit.submit("events", uuid.uuid4().hex, batch, 4)
        flaky.fail = False
        again = await commit.submit("events", bid, batch, 4)
        assert [] == commit.unfinished
        await commit.stop()
        return again

    assert asyncio.run(scenario()) is False  # written by the server's own retry
    assert {"raw": 4, **dict.fromkeys(ROLLUPS, 4)} == counts(warehouse, [bid])


def test_an_insert_that_failed_after_writing_is_retried_without_doubling(
    warehouse: Warehouse,
) -> None:
    """The insert is written, then its answer is lost (the connection drops): the retry
    with the same token is skipped by every table, and the waiter hears success."""

    class LosesTheAnswer(Warehouse):
        calls = 0

        def insert_arrow(self, table: str, blocks: Any, token: str = "") -> None:
            super().insert_arrow(table, blocks, token)
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("connection lost after the write")

    lossy = LosesTheAnswer(warehouse.client, warehouse.db)
    bid = uuid.uuid4().hex

    async def scenario() -> bool:
        commit = GroupCommit(lossy, Metrics())
        commit.start()
        new = await commit.submit("events", bid, block(3, bid, product="lost-answer"), 3)
        await commit.stop()
        return new

    assert asyncio.run(scenario()) is True
    assert {"raw": 3, **dict.fromkeys(ROLLUPS, 3)} == counts(warehouse, [bid])


def test_a_write_that_failed_part_way_is_finished_by_its_retry(warehouse: Warehouse) -> None:
    """The insert fails after some of its tables were written (a view that throws for this
    product, until told not to, stands in for a full disk or a memory limit). Before, the
    group's batch was in `batches` and the sender's retry was taken for a duplicate, so
    the rollups that missed it missed it for good. Now the group is sent again with its
    deduplication token: raw and every rollup hold each event once."""
    db, c = warehouse.db, warehouse.client
    c.command(f"CREATE TABLE {db}.fault_flag (x UInt8) ENGINE = MergeTree ORDER BY x")
    c.command(f"CREATE TABLE {db}.fault_sink (x UInt8) ENGINE = Null")
    c.command(
        f"CREATE MATERIALIZED VIEW {db}.fault_mv TO {db}.fault_sink AS SELECT toUInt8(throwIf("
        f"product = 'part-way' AND (SELECT count() FROM {db}.fault_flag) = 0, 'injected'))"
        f" AS x FROM {db}.events"
    )
    bid = uuid.uuid4().hex
    batch = block(6, bid, product="part-way")

    async def scenario() -> bool:
        commit = GroupCommit(warehouse, Metrics())
        commit.start()
        with pytest.raises(Exception, match="injected"):
            await commit.submit("events", bid, batch, 6)
        c.command(f"INSERT INTO {db}.fault_flag VALUES (1)")  # the fault is gone
        again = await commit.submit("events", bid, batch, 6)
        await commit.stop()
        return again

    try:
        assert asyncio.run(scenario()) is False
        assert {"raw": 6, **dict.fromkeys(ROLLUPS, 6)} == counts(warehouse, [bid])
    finally:
        for kind, name in (("VIEW", "fault_mv"), ("TABLE", "fault_sink"), ("TABLE", "fault_flag")):
            c.command(f"DROP {kind} IF EXISTS {db}.{name}")
