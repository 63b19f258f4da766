"""§7 from Pro raw events (the ``events`` table): exact, but with no install id.

Pro uploads carry a random session id per session (30 minutes idle, and daily) and
nothing that links sessions: "users" here are sessions, so DAU from raw events is
sessions per day, not people. A cell's contributors are the distinct sessions behind it
(an event without a session counts as its own). Session duration is the span between a
session's first and last uploaded event (the daemon's session_started / session_ended
never leave the machine), so it undercounts a session by its idle tail.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, NamedTuple

from rkd.client.dp import Estimate
from rkd.server.analytics.community import query
from rkd.server.analytics.estimate import Cell
from rkd.server.warehouse import Warehouse

WHERE: Final = "product = {product:String} AND toDate(ts) BETWEEN {start:Date} AND {end:Date}"
COMMANDS: Final = "('command_executed', 'command_failed', 'command_cancelled')"
CONTRIBUTORS: Final = "uniqExact(ifNull(toString(session_id), toString(event_id)))"
PERCENTILES: Final = (0.5, 0.95, 0.99)


def _exact(value: float, contributors: int) -> Cell:
    return Cell(Estimate(float(value), 0.0), int(contributors))


def sessions_per_day(
    wh: Warehouse, product: str, start: dt.date, end: dt.date
) -> dict[dt.date, Cell]:
    """Distinct sessions with an uploaded event, per UTC day."""
    rows = query(wh, f"SELECT toDate(ts) AS d, uniqExact(session_id) FROM {{db}}.events"
                     f" WHERE {WHERE} AND session_id IS NOT NULL GROUP BY d",
                 product=product, start=start, end=end)  # fmt: skip
    return {d: _exact(n, n) for d, n in rows}


class SessionStats(NamedTuple):
    sessions: int
    duration_ms_p50: float
    duration_ms_mean: float
    queries_mean: float  # commands per session


def session_stats(wh: Warehouse, product: str, start: dt.date, end: dt.date) -> SessionStats | None:
    """Session length (first to last event) and commands per session over the period."""
    rows = query(
        wh,
        "SELECT count(), quantileExact(0.5)(dur), avg(dur), avg(q) FROM ("
        " SELECT session_id, dateDiff('millisecond', min(ts), max(ts)) AS dur,"
        f" countIf(event_type IN {COMMANDS}) AS q FROM {{db}}.events"
        f" WHERE {WHERE} AND session_id IS NOT NULL GROUP BY session_id)",
        product=product, start=start, end=end,
    )  # fmt: skip
    n, p50, mean, q = rows[0]
    return SessionStats(int(n), float(p50), float(mean), float(q)) if n else None


def by_subject(wh: Warehouse, product: str, start: dt.date, end: dt.date,
               event_types: tuple[str, ...]) -> dict[str, Cell]:  # fmt: skip
    """Events per subject (command, tool, error category, install method, ...)."""
    rows = query(
        wh,
        f"SELECT subject, count(), {CONTRIBUTORS} FROM {{db}}.events WHERE {WHERE}"
        " AND event_type IN {types:Array(String)} GROUP BY subject",
        product=product, start=start, end=end, types=list(event_types),
    )  # fmt: skip
    return {s: _exact(n, c) for s, n, c in rows}


def by_type(wh: Warehouse, product: str, start: dt.date, end: dt.date,
            event_types: tuple[str, ...]) -> dict[str, Cell]:  # fmt: skip
    """Events per event type (e.g. the upgrade prompts: Pro-feature interest)."""
    rows = query(
        wh,
        f"SELECT event_type, count(), {CONTRIBUTORS} FROM {{db}}.events WHERE {WHERE}"
        " AND event_type IN {types:Array(String)} GROUP BY event_type",
        product=product, start=start, end=end, types=list(event_types),
    )  # fmt: skip
    return {t: _exact(n, c) for t, n, c in rows}


def latency(wh: Warehouse, product: str, start: dt.date, end: dt.date) -> tuple[list[float], int]:
    """Command latency p50/p95/p99 (ms, exact) and the sessions behind it."""
    rows = query(
        wh,
        f"SELECT quantilesExact{PERCENTILES}(duration_ms), {CONTRIBUTORS}, count()"
        f" FROM {{db}}.events WHERE {WHERE} AND event_type IN {COMMANDS}"
        " AND duration_ms IS NOT NULL",
        product=product, start=start, end=end,
    )  # fmt: skip
    qs, contributors, n = rows[0]
    return ([float(x) for x in qs] if n else []), int(contributors)


def success_rate(wh: Warehouse, product: str, start: dt.date, end: dt.date) -> Cell | None:
    """Commands that succeeded over all commands (executed, failed, cancelled)."""
    rows = query(
        wh,
        f"SELECT countIf(success = 1), count(), {CONTRIBUTORS} FROM {{db}}.events"
        f" WHERE {WHERE} AND event_type IN {COMMANDS}",
        product=product, start=start, end=end,
    )  # fmt: skip
    ok, n, c = rows[0]
    return _exact(ok / n, c) if n else None


def confidence(wh: Warehouse, product: str, start: dt.date, end: dt.date) -> dict[str, Cell]:
    """Mean ThinkTool confidence score (0..1) per tool."""
    rows = query(
        wh,
        "SELECT subject, avg(JSONExtractFloat(payload, 'confidence_score')), "
        f"{CONTRIBUTORS} FROM {{db}}.events WHERE {WHERE}"
        " AND event_type = 'thinktool_completed' AND JSONHas(payload, 'confidence_score')"
        " AND JSONType(payload, 'confidence_score') != 'Null' GROUP BY subject",
        product=product, start=start, end=end,
    )  # fmt: skip
    return {s: _exact(v, c) for s, v, c in rows}


def discovery_sources(wh: Warehouse, product: str, start: dt.date, end: dt.date) -> dict[str, Cell]:
    """How features were found: discovery_source of feature discoveries and first uses."""
    rows = query(
        wh,
        "SELECT JSONExtractString(payload, 'discovery_source') AS src, count(), "
        f"{CONTRIBUTORS} FROM {{db}}.events WHERE {WHERE}"
        " AND event_type IN ('feature_discovered', 'feature_first_use') AND src != ''"
        " GROUP BY src",
        product=product, start=start, end=end,
    )  # fmt: skip
    return {s: _exact(n, c) for s, n, c in rows}


def stickiness(wh: Warehouse, product: str, start: dt.date, end: dt.date) -> dict[str, Cell]:
    """Per feature: installs that reached the 5-use milestone over installs that used it
    a first time (the daemon sends each once per install; ratio of the two counts)."""
    rows = query(
        wh,
        "SELECT subject, countIf(event_type = 'feature_first_use') AS first,"
        " countIf(event_type = 'feature_adoption'"
        "   AND JSONExtractString(payload, 'feature_event') = 'milestone'"
        "   AND JSONExtractInt(payload, 'milestone_count') = 5) AS again"
        f" FROM {{db}}.events WHERE {WHERE}"
        " AND event_type IN ('feature_first_use', 'feature_adoption') GROUP BY subject",
        product=product, start=start, end=end,
    )  # fmt: skip
    return {s: _exact(again / first, first) for s, first, again in rows if first}


def events_processed(wh: Warehouse, start: dt.date, end: dt.date) -> int:
    """Raw events stored for the period, all products (from the daily rollup, which
    outlives the 90-day raw table)."""
    rows = query(wh, "SELECT sum(events) FROM {db}.events_daily"
                     " WHERE day BETWEEN {start:Date} AND {end:Date}", start=start, end=end)  # fmt: skip
    return int(rows[0][0] or 0)
