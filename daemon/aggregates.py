"""Daily aggregates, kept up to date in the same transaction as the events they count.

Reports read these rows, never the raw events: `rkd metrics` over a million events then
reads a few thousand small rows, and the figures survive the pruning of raw events
(spec §6.3: raw events go after ``retention_days``, aggregates stay).

Three tables, all keyed by the UTC day (``ts_ms // 86_400_000``, days since the epoch)
of the event's own timestamp:

- ``agg_daily(day, dim, key, n)``: counts and sums. ``dim`` is one of :data:`DIMS`.
- ``agg_latency(day, ms, n)``: a histogram of command durations
  (``execution.duration_ms``). ``ms`` is the duration rounded *down* to 11 significant
  bits: exact below 2,048 ms, and above that low by less than 2**-10 (under 0.1 %) of
  the value. Percentiles read from it are exact wherever the durations are.
- ``agg_sessions(day, session_id, events)``: which sessions had events that day (the
  local ``sessions.id``), so distinct sessions over any range of days are exact.

Nothing here is a payload value beyond what the events table already holds (names,
categories, model ids that passed the privacy firewall), and no log line is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import apsw
from rkd.client.clock import DAY_MS
from rkd.client.schema import PAYLOAD_TYPES

if TYPE_CHECKING:
    from rkd.daemon.storage import Record

EXACT_BITS: Final = 11  # durations keep 11 significant bits: exact below 2**11 ms
COMMAND_TYPES: Final = ("command_executed", "command_failed", "command_cancelled")

# What each ``agg_daily.dim`` counts (per UTC day, by ``key``):
DIMS: Final[dict[str, str]] = {
    "event": "events by event_type (every event)",
    "command": "command events by command name",
    "profile": "command events by profile ('none' when no profile was given)",
    "thinktool": "thinktool_completed events by tool_name",
    "error": "error_occurred events by error_category",
    "failed": "command_failed events by error_category ('unknown' when none)",
    "stat": "command sums: duration_ms, success (command_executed with execution.success)"
    " and cache_hit (counts)",
    "tokens_input": "input tokens of command events by model ('unknown' when none)",
    "tokens_output": "output tokens of command events by model",
    "tokens_cached": "cached tokens of command events by model",
}


def latency_bucket(ms: int) -> int:
    """``ms`` rounded down to 11 significant bits: exact below 2,048, then < 0.1 % low."""
    shift = ms.bit_length() - EXACT_BITS
    return ms if shift <= 0 else (ms >> shift) << shift


COMMAND, THINKTOOL, ERROR, OTHER = "command", "thinktool", "error", "other"
KINDS: Final[dict[type[Any], tuple[str, str]]] = {
    p: (p.event_type, COMMAND if p.family == "command"
        else THINKTOOL if p.event_type == "thinktool_completed"
        else ERROR if p.event_type == "error_occurred" else OTHER)
    for p in PAYLOAD_TYPES
}  # fmt: skip
"""Payload class -> (event_type, how it is counted)."""


class Increments:
    """What one batch of records adds to the aggregates, summed in memory.

    This runs for every stored event, so the per-event work is one counter update (two
    for a command, which also records its latency) keyed by everything the rows need;
    :meth:`daily` and :meth:`sessions` expand these into table rows once per batch.
    """

    __slots__ = ("commands", "events", "latency", "named")

    def __init__(self) -> None:
        self.events: Counter[tuple[int, int, str]] = Counter()  # (day, session, event_type)
        self.named: Counter[tuple[int, str, str]] = Counter()  # (day, dim, key)
        self.latency: Counter[tuple[int, int]] = Counter()  # (day, ms bucket)
        # (day, event_type, command, profile, success, cache_hit, error_category, model)
        #   -> [count, duration_ms, input, output, cached]
        self.commands: dict[tuple[Any, ...], list[int]] = {}

    def add(self, records: Iterable[Record]) -> None:
        """Count stored records (their sessions' rowids assigned): the per-event hot path."""
        events, named, command, kinds = self.events, self.named, self._command, KINDS
        for r in records:
            p: Any = r.envelope.payload  # type: ignore[attr-defined]
            day = r.ts_ms // DAY_MS
            event_type, kind = kinds[type(p)]  # class attributes are slow on instances
            events[day, r.session.rowid, event_type] += 1  # type: ignore[index]
            if kind is COMMAND:
                command(day, event_type, p)
            elif kind is THINKTOOL:
                named[day, "thinktool", p.tool_name] += 1
            elif kind is ERROR:
                named[day, "error", p.error_category] += 1

    def _command(self, day: int, event_type: str, p: Any) -> None:
        ex, t = p.execution, p.tokens
        ms = ex.duration_ms
        shift = ms.bit_length() - EXACT_BITS  # latency_bucket(), inlined: the hot path
        self.latency[day, ms if shift <= 0 else (ms >> shift) << shift] += 1
        key = (day, event_type, p.command, p.profile, ex.success, p.cache_hit,
               p.error_category, t.model)  # fmt: skip
        acc = self.commands.get(key)
        if acc is None:
            self.commands[key] = [1, ex.duration_ms, t.input, t.output, t.cached]
        else:
            acc[0] += 1
            acc[1] += ex.duration_ms
            acc[2] += t.input
            acc[3] += t.output
            acc[4] += t.cached

    def daily(self) -> Counter[tuple[int, str, str]]:
        """The ``agg_daily`` increments: (day, dim, key) -> n, zeros included."""
        out = Counter(self.named)
        for (day, _, event_type), n in self.events.items():
            out[day, "event", event_type] += n
        for key, acc in self.commands.items():
            _command_rows(out, key, acc)
        return out

    def sessions(self) -> Counter[tuple[int, int]]:
        """The ``agg_sessions`` increments: (day, session_id) -> events."""
        out: Counter[tuple[int, int]] = Counter()
        for (day, session_id, _), n in self.events.items():
            out[day, session_id] += n
        return out


def _command_rows(out: Counter[tuple[int, str, str]], key: tuple[Any, ...], acc: list[int]) -> None:
    """Add one group of identical-looking command events to the daily rows."""
    day, event_type, command, profile, success, cache_hit, category, model = key
    n, duration, tokens_in, tokens_out, tokens_cached = acc
    out[day, "command", command] += n
    out[day, "profile", profile or "none"] += n
    out[day, "stat", "duration_ms"] += duration
    if event_type == "command_executed" and success:
        out[day, "stat", "success"] += n
    elif event_type == "command_failed":
        out[day, "failed", category or "unknown"] += n
    if cache_hit:
        out[day, "stat", "cache_hit"] += n
    if tokens_in or tokens_out or tokens_cached:
        model = model or "unknown"
        out[day, "tokens_input", model] += tokens_in
        out[day, "tokens_output", model] += tokens_out
        out[day, "tokens_cached", model] += tokens_cached


def increments(records: Iterable[Record]) -> Increments:
    """Sum what ``records`` (with their sessions' rowids assigned) add to each row."""
    inc = Increments()
    inc.add(records)
    return inc


# Sums saturate at SQLite's largest integer: schema-valid durations (up to 2^53 ms) add up
# past 2^63 within a few thousand events, and SQLite would then bind nothing (Python
# raises OverflowError) or silently turn the column into REAL.
MAX_SUM: Final = (1 << 63) - 1


def _plus(col: str) -> str:
    """SQL for ``col + excluded.col``, saturating at :data:`MAX_SUM` (never overflowing)."""
    return f"CASE WHEN {col} > {MAX_SUM} - excluded.{col} THEN {MAX_SUM} ELSE {col} + excluded.{col} END"


# Distinct keys (command names, models, ...) kept per day and dimension: applications
# choose them, and one inventing names would otherwise add a row per name. Past the cap
# a day's new keys are counted under OTHER_KEY (one row more).
MAX_KEYS_PER_DAY: Final = 1000
OTHER_KEY: Final = "other"


def _capped(
    db: apsw.Connection, daily: Counter[tuple[int, str, str]]
) -> Counter[tuple[int, str, str]]:
    """``daily`` with the keys past a day's :data:`MAX_KEYS_PER_DAY` moved to OTHER_KEY."""
    groups: dict[tuple[int, str], set[str]] = {}
    for day, dim, key in daily:
        groups.setdefault((day, dim), set()).add(key)
    moved: dict[tuple[int, str, str], tuple[int, str, str]] = {}
    for (day, dim), keys in groups.items():
        stored = db.execute(
            "SELECT count(*) FROM agg_daily WHERE day = ? AND dim = ? AND key != ?",
            (day, dim, OTHER_KEY),
        ).get
        assert isinstance(stored, int)
        if stored + len(keys) <= MAX_KEYS_PER_DAY:
            continue  # room for all of them (the common case: one query)
        marks = ",".join("?" * len(keys))
        known = {k for (k,) in db.execute(
            f"SELECT key FROM agg_daily WHERE day = ? AND dim = ? AND key IN ({marks})",
            (day, dim, *keys),
        )}  # fmt: skip
        room = MAX_KEYS_PER_DAY - stored  # keys of their own; OTHER_KEY comes on top
        for key in sorted(keys - known - {OTHER_KEY}):
            if room > 0:
                room -= 1
            else:
                moved[day, dim, key] = (day, dim, OTHER_KEY)
    if not moved:
        return daily
    out: Counter[tuple[int, str, str]] = Counter()
    for k, n in daily.items():
        out[moved.get(k, k)] += n
    return out


def upsert(db: apsw.Connection, inc: Increments) -> None:
    """Add ``inc`` to the stored rows (inside the caller's transaction); zeros are skipped."""
    db.executemany(
        "INSERT INTO agg_daily(day, dim, key, n) VALUES (?, ?, ?, ?)"
        f" ON CONFLICT(day, dim, key) DO UPDATE SET n = {_plus('n')}",
        [(*k, min(n, MAX_SUM)) for k, n in _capped(db, inc.daily()).items() if n],
    )
    db.executemany(
        "INSERT INTO agg_latency(day, ms, n) VALUES (?, ?, ?)"
        f" ON CONFLICT(day, ms) DO UPDATE SET n = {_plus('n')}",
        [(*k, min(n, MAX_SUM)) for k, n in inc.latency.items()],
    )
    db.executemany(
        "INSERT INTO agg_sessions(day, session_id, events) VALUES (?, ?, ?)"
        f" ON CONFLICT(day, session_id) DO UPDATE SET events = {_plus('events')}",
        [(*k, n) for k, n in inc.sessions().items()],
    )


def add_records(db: apsw.Connection, records: Iterable[Record]) -> None:
    """Count ``records`` into the daily aggregates; call inside the events' transaction."""
    upsert(db, increments(records))


# -- schema: the migration step that creates the tables and fills them from the events ----

TABLES: Final = ("agg_daily", "agg_latency", "agg_sessions")


def _bucket_sql(expr: str) -> str:
    """SQL for :func:`latency_bucket` of ``expr`` (integer division, no bit functions)."""
    whens = " ".join(
        f"WHEN {expr} < {1 << bits} THEN {expr} / {1 << (bits - EXACT_BITS)}"
        f" * {1 << (bits - EXACT_BITS)}"
        for bits in range(EXACT_BITS + 1, 55)  # Millis allows up to 2**53
    )
    return f"CASE WHEN {expr} < {1 << EXACT_BITS} THEN {expr} {whens} END"


def _backfill_sql() -> str:
    """Statements that fill the tables from the events already stored (same rules)."""
    cmds = f"event_type IN {COMMAND_TYPES!r}"
    day = f"ts_ms / {DAY_MS}"
    j = "json_extract(payload, '$.{}')".format

    def daily(dim: str, key: str, value: str, where: str) -> str:
        return (
            f"INSERT INTO agg_daily(day, dim, key, n) SELECT {day}, '{dim}', {key}, {value}"
            f" FROM events WHERE {where} GROUP BY 1, 3 HAVING {value} > 0;"
        )

    tokens = [
        daily(f"tokens_{t}", f"coalesce({j('tokens.model')}, 'unknown')",
              f"sum({j('tokens.' + t)})", cmds)
        for t in ("input", "output", "cached")
    ]  # fmt: skip
    return "\n".join([
        daily("event", "event_type", "count(*)", "1"),
        daily("command", j("command"), "count(*)", cmds),
        daily("profile", f"coalesce({j('profile')}, 'none')", "count(*)", cmds),
        daily("thinktool", j("tool_name"), "count(*)", "event_type = 'thinktool_completed'"),
        daily("error", j("error_category"), "count(*)", "event_type = 'error_occurred'"),
        daily("failed", f"coalesce({j('error_category')}, 'unknown')", "count(*)",
              "event_type = 'command_failed'"),
        daily("stat", "'duration_ms'", f"sum({j('execution.duration_ms')})", cmds),
        daily("stat", "'success'", "count(*)",
              f"event_type = 'command_executed' AND {j('execution.success')}"),
        daily("stat", "'cache_hit'", "count(*)", f"{cmds} AND {j('cache_hit')}"),
        *tokens,
        f"INSERT INTO agg_latency(day, ms, n) SELECT day, {_bucket_sql('d')}, count(*)"
        f" FROM (SELECT {day} AS day, {j('execution.duration_ms')} AS d FROM events"
        f" WHERE {cmds}) GROUP BY 1, 2;",
        f"INSERT INTO agg_sessions(day, session_id, events) SELECT {day}, session_id,"
        " count(*) FROM events GROUP BY 1, 2;",
    ])  # fmt: skip


MIGRATION: Final = """
    CREATE TABLE agg_daily(
        day INTEGER NOT NULL, dim TEXT NOT NULL, key TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY(day, dim, key)) WITHOUT ROWID;
    CREATE TABLE agg_latency(
        day INTEGER NOT NULL, ms INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY(day, ms)) WITHOUT ROWID;
    CREATE TABLE agg_sessions(
        day INTEGER NOT NULL, session_id INTEGER NOT NULL, events INTEGER NOT NULL,
        PRIMARY KEY(day, session_id)) WITHOUT ROWID;
    """ + _backfill_sql()
"""The storage migration step: create the tables, then count the events already stored."""
