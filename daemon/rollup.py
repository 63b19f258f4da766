"""Old daily aggregates become monthly (spec §6.3: after a year, daily is downsampled).

Rows of a calendar month (UTC) that ended more than :data:`ROLLUP_AFTER_DAYS` ago are
merged into one row per key dated the month's first day: counts and sums add up, the
latency histogram keeps its buckets (percentiles stay as exact as before), and
``agg_sessions`` keeps one row per session and month (distinct sessions stay exact).
Reports over such a month count it whole on its first day. One month per step, in one
short transaction, so the daemon's loop is never held long; a month already merged has
no rows off its first day and is never touched again.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import apsw

ROLLUP_AFTER_DAYS: Final = 365
_EPOCH: Final = dt.date(1970, 1, 1)

# table -> its key columns besides ``day``, and its value column
_TABLES: Final = {
    "agg_daily": ("dim, key", "n"),
    "agg_latency": ("ms", "n"),
    "agg_sessions": ("session_id", "events"),
}


def month_bounds(day: int) -> tuple[int, int]:
    """The first day of ``day``'s month and of the next one, as days since the epoch."""
    d = _EPOCH + dt.timedelta(days=day)
    first = d.replace(day=1)
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    return (first - _EPOCH).days, (nxt - _EPOCH).days


def _oldest_unmerged_day(db: apsw.Connection, before: int) -> int | None:
    """The oldest day before ``before`` that is not a month's first day (in any table)."""
    not_first = "strftime('%d', day * 86400, 'unixepoch') != '01'"
    days = [
        db.execute(f"SELECT min(day) FROM {t} WHERE day < ? AND {not_first}", (before,)).get
        for t in _TABLES
    ]
    found = [d for d in days if isinstance(d, int)]
    return min(found) if found else None


def rollup_step(db: apsw.Connection, today: int) -> bool:
    """Merge the oldest month due into its first day; False when none is due."""
    due_before, _ = month_bounds(today - ROLLUP_AFTER_DAYS)  # whole months only
    day = _oldest_unmerged_day(db, due_before)
    if day is None:
        return False
    first, nxt = month_bounds(day)
    with db:
        for table, (keys, value) in _TABLES.items():
            db.execute(
                f"INSERT INTO {table}(day, {keys}, {value})"
                f" SELECT ?, {keys}, sum({value}) FROM {table} WHERE day > ? AND day < ?"
                f" GROUP BY {keys}"
                f" ON CONFLICT DO UPDATE SET {value} = {value} + excluded.{value}",
                (first, first, nxt),
            )
            db.execute(f"DELETE FROM {table} WHERE day > ? AND day < ?", (first, nxt))
    return True


def rollup_all(db: apsw.Connection, today: int) -> int:
    """Merge every month due (`rkd prune`); return how many were merged."""
    n = 0
    while rollup_step(db, today):
        n += 1
    return n
