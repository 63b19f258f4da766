"""The one wall clock of rkd: epoch milliseconds, UTC datetimes, RFC 3339 text.

Everything that dates an event, a file or a flush reads the wall clock through here
(``time.time``/``time.time_ns`` at call time, so a test can shift it). Durations and
timers use ``time.monotonic`` directly: they must not jump with the wall clock.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Final

DAY_MS: Final = 86_400_000  # one UTC day in milliseconds: aggregates are keyed by ts_ms // DAY_MS


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def utc_now() -> dt.datetime:
    """Wall-clock time as an aware UTC datetime (from the same clock as :func:`now_ms`)."""
    return dt.datetime.fromtimestamp(time.time(), dt.UTC)


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as RFC 3339 UTC with milliseconds (``...T12:00:00.000Z``)."""
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
