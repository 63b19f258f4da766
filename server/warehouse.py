"""The warehouse: ClickHouse through clickhouse-connect, embedded (chdb) or remote.

One code path for both deployments: the DSN picks the engine. ``chdb:///path`` runs
ClickHouse inside this process on a data folder (the default; one machine, no server
install); ``http(s)://user:pass@host:8123/`` talks to a ClickHouse server or cluster.

Every call is blocking; the ingester makes all of them from one worker thread, which
also makes the duplicate check and the insert that follows it one critical section.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

import clickhouse_connect
import msgspec
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from rkd.server import ddl

INSERT_SETTINGS: Final = {
    "date_time_input_format": "best_effort",  # RFC 3339, as msgspec writes datetimes
    "input_format_json_read_objects_as_strings": 1,  # an event's payload: stored as its JSON
    # One thread parses the group (a few MB): on 2 cores the parsing threads only added
    # work (16.8 against 21.2 ms of CPU per 4,000 rows, and 8% less for the whole insert
    # with its views; interleaved, same process). The decode workers use the other core.
    "input_format_parallel_parsing": 0,
}
# The events' Arrow inserts: the four views run on the engine's pool, not one after the
# other on the calling thread (with Arrow input all of the insert ran on it): group
# commits 47 against 60 and 72 against 82 ms in alternating bench runs.
ARROW_SETTINGS: Final = {"parallel_view_processing": 1}
_json: Final = msgspec.json.Encoder()


def connect(dsn: str) -> Client:
    """A clickhouse-connect client for ``dsn`` (``chdb:///abs/path`` or ``http(s)://``)."""
    return clickhouse_connect.get_client(dsn=dsn)


class Warehouse:
    """The tables of ``schema.sql`` in database ``db``, behind a few typed calls."""

    def __init__(self, client: Client, db: str = "rkd", distributed: bool = False) -> None:
        """``distributed``: write and check through the ``<table>_all`` Distributed tables
        of ``rkd-server schema --cluster`` (a cluster), not the local tables."""
        self.client, self.db = client, db
        self.suffix = "_all" if distributed else ""

    def close(self) -> None:
        self.client.close()

    # -- schema ------------------------------------------------------------------------------

    def version(self) -> int:
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.db}.schema_migrations (version UInt32, "
            "why String, applied DateTime('UTC')) ENGINE = MergeTree ORDER BY version"
        )
        rows = self.client.query(f"SELECT max(version) FROM {self.db}.schema_migrations")
        return int(rows.result_rows[0][0] or 0)

    def migrate(self) -> list[int]:
        """Apply the DDL's migrations above the recorded version, in order; the applied."""
        current = self.version()
        applied = []
        for m in ddl.migrations():
            if m.version <= current:
                continue
            for statement in m.statements:
                self.client.command(statement.replace("{db}", self.db))
            self.client.insert(
                f"{self.db}.schema_migrations",
                [[m.version, m.why, dt.datetime.now(dt.UTC)]],
                column_names=["version", "why", "applied"],
            )
            applied.append(m.version)
        return applied

    def parses(self, statement: str) -> bool:
        """Whether the engine's parser accepts ``statement`` (nothing is run)."""
        self.client.query("SELECT formatQuery({q:String})", parameters={"q": statement})
        return True

    # -- writes ------------------------------------------------------------------------------

    def known_batches(self, batch_ids: Sequence[str]) -> set[str]:
        """Which of ``batch_ids`` the warehouse holds already."""
        if not batch_ids:
            return set()
        rows = self.client.query(
            f"SELECT DISTINCT batch_id FROM {self.db}.batches{self.suffix} WHERE batch_id IN {{ids:Array(String)}}",
            parameters={"ids": list(batch_ids)},
        )
        return {_text(r[0]) for r in rows.result_rows}

    def insert_json(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        """Insert ``rows`` (one dict per row, columns by name) in one statement."""
        lines = [_json.encode(r) for r in rows]
        self.insert_lines(table, [b"\n".join(lines)] if lines else [])
        return len(lines)

    def insert_lines(self, table: str, blocks: Sequence[bytes]) -> None:
        """Insert JSONEachRow ``blocks`` in one statement: the materialized views see the
        same block, so raw and rollups move together."""
        data = b"\n".join(b for b in blocks if b)
        if data:
            self.client.raw_insert(self._written(table), None, insert_block=data,
                                   fmt="JSONEachRow", settings=INSERT_SETTINGS)  # fmt: skip

    def insert_arrow(self, table: str, blocks: Sequence[bytes], token: str = "") -> None:
        """Insert Arrow IPC streams (``rows.event_block``'s) in one statement, as one
        stream of their record batches: the views see one insert, as with ``insert_lines``.

        ``token``: the insert's deduplication token. The same insert sent again with it
        is skipped by every table that has it, raw and views alike, and written to those
        that missed it (a failure part-way: migration 3)."""
        read = [pa.ipc.open_stream(b).read_all() for b in blocks if b]
        if read:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, read[0].schema) as writer:
                for t in read:
                    writer.write_table(t)
            settings: dict[str, Any] = dict(ARROW_SETTINGS)
            if token:
                settings.update(insert_deduplication_token=token,
                                deduplicate_blocks_in_dependent_materialized_views=1)  # fmt: skip
            self.client.raw_insert(self._written(table), None,
                                   insert_block=sink.getvalue().to_pybytes(), fmt="ArrowStream",
                                   settings=settings)  # fmt: skip

    def _written(self, table: str) -> str:
        return f"{self.db}.{table}{self.suffix if table in ddl.WRITTEN else ''}"

    # -- the user's rights (Art. 15, Art. 17) ------------------------------------------------

    def access(self, session_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
        """Every raw event held for these sessions, as stored."""
        rows = self.client.query(
            f"SELECT event_id, event_type, ts, product, version, payload FROM {self.db}.events"
            " WHERE session_id IN {ids:Array(UUID)} ORDER BY ts",
            parameters={"ids": [str(s) for s in session_ids]},
        )
        names = rows.column_names
        return [dict(zip(names, r, strict=True)) for r in rows.result_rows]

    def erase(self, session_ids: Sequence[uuid.UUID]) -> int:
        """Delete every raw event of these sessions; the number deleted. Aggregates hold
        no session and stay."""
        params = {"ids": [str(s) for s in session_ids]}
        where = "session_id IN {ids:Array(UUID)}"
        found = self.client.query(
            f"SELECT count() FROM {self.db}.events WHERE {where}", parameters=params
        )
        n = int(found.result_rows[0][0])
        if n:
            self.client.command(
                f"ALTER TABLE {self.db}.events DELETE WHERE {where}",
                parameters=params, settings={"mutations_sync": 2},
            )  # fmt: skip
        self.insert_json("erasures", [{"day": dt.date.today().isoformat(), "requests": 1,
                                       "sessions": len(session_ids), "events_deleted": n}])  # fmt: skip
        return n

    # -- reads (tests, health) ---------------------------------------------------------------

    def scalar(self, sql: str) -> Any:
        return self.client.query(sql.replace("{db}", self.db)).result_rows[0][0]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.client.query(sql.replace("{db}", self.db)).result_rows]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
