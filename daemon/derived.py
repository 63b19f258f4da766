"""Feature adoption the daemon derives from the events it stores (spec §2.1, §2.4).

Every stored command event is a use of its command (``command.<name>`` or
``command.<name>.<subcommand>``) and, when it names one, of its profile
(``profile.<name>``); every ``thinktool_completed`` is a use of its ThinkTool
(``thinktool.<name>``). These are the same things `rkd metrics` counts. The daemon keeps
a use count per (product, feature) and adds ``feature_first_use`` at the first use and a
``feature_adoption`` milestone at 5, 10, 25, 50 and 100 uses, right after the event that
reached it.

The counts are written in the same transaction as the events that moved them, so after a
crash both are lost together and no milestone is skipped or repeated. Names the privacy
firewall replaced (``[EMAIL]``…) are not features and are not counted. At most
:data:`MAX_FEATURES` features are tracked; later new ones are counted as
``features.untracked``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any, Final

import apsw
from rkd.client.schema import (
    PAYLOAD_TYPES,
    FeatureAdoption,
    FeatureFirstUse,
    ThinkToolCompleted,
)
from rkd.daemon.aggregates import COMMAND_TYPES

# Types the daemon writes: only it may write the session ones (clients are refused).
SESSION_TYPES: Final = frozenset(("session_started", "session_ended"))
DERIVED_TYPES: Final = (*sorted(SESSION_TYPES), "feature_first_use", "feature_adoption")
MILESTONES: Final = frozenset((5, 10, 25, 50, 100))
MAX_FEATURES: Final = 10_000
MAX_ID: Final = 64  # the schema's identifier length

FeatureKey = tuple[str, str]  # (product, feature_id)

# Schema step 3 (see storage.MIGRATIONS): session ends and feature use counts. Sessions
# before the newest are over; uses are counted from the events already stored, with the
# same names feature_ids() gives.
MIGRATION: Final = f"""
    ALTER TABLE sessions ADD COLUMN ended_ms INTEGER;
    UPDATE sessions SET ended_ms = last_ms WHERE id < (SELECT max(id) FROM sessions);
    CREATE TABLE features(
        product TEXT NOT NULL, feature_id TEXT NOT NULL,
        uses INTEGER NOT NULL, first_ms INTEGER NOT NULL,
        PRIMARY KEY(product, feature_id)) WITHOUT ROWID;
    INSERT INTO features(product, feature_id, uses, first_ms)
    SELECT product, fid, count(*), min(ts_ms) FROM (
        SELECT s.product AS product, e.ts_ms AS ts_ms,
               'command.' || json_extract(e.payload, '$.command')
               || coalesce('.' || json_extract(e.payload, '$.subcommand'), '') AS fid
        FROM events e JOIN sources s ON s.id = e.source_id
        WHERE e.event_type IN {COMMAND_TYPES!r}
        UNION ALL
        SELECT s.product, e.ts_ms, 'profile.' || json_extract(e.payload, '$.profile')
        FROM events e JOIN sources s ON s.id = e.source_id
        WHERE e.event_type IN {COMMAND_TYPES!r}
          AND json_extract(e.payload, '$.profile') IS NOT NULL
        UNION ALL
        SELECT s.product, e.ts_ms, 'thinktool.' || json_extract(e.payload, '$.tool_name')
        FROM events e JOIN sources s ON s.id = e.source_id
        WHERE e.event_type = 'thinktool_completed')
    WHERE fid IS NOT NULL AND instr(fid, '[') = 0 AND length(fid) <= {MAX_ID}
    GROUP BY product, fid;
"""
TABLES: Final = ("features",)


def feature_ids(payload: Any) -> tuple[str, ...]:
    """The features one (already filtered) payload is a use of; usually none."""
    event_type = payload.event_type
    if event_type in COMMAND_TYPES:
        sub = payload.subcommand
        ids = [f"command.{payload.command}" + (f".{sub}" if sub else "")]
        if payload.profile:
            ids.append(f"profile.{payload.profile}")
    elif type(payload) is ThinkToolCompleted:
        ids = [f"thinktool.{payload.tool_name}"]
    else:
        return ()
    return tuple(i for i in ids if "[" not in i and len(i) <= MAX_ID)


def _reader(payload_type: type[Any]) -> Callable[[Any], Any] | None:
    """The payload fields :func:`feature_ids` reads for this type (None: no features)."""
    if payload_type.event_type in COMMAND_TYPES:
        return attrgetter("command", "subcommand", "profile")
    if payload_type is ThinkToolCompleted:
        return attrgetter("tool_name")
    return None


_READS: Final = {p: _reader(p) for p in PAYLOAD_TYPES}
IDS_CACHE_MAX: Final = 4096


class FeatureCounter:
    """Use counts per (product, feature), loaded at start and written with the events."""

    def __init__(self, uses: dict[FeatureKey, int]) -> None:
        self.uses = uses
        self.changed: dict[FeatureKey, tuple[int, int]] = {}  # key -> (uses, first_ms)
        self.untracked = 0
        # feature_ids() by the fields it reads: the same few names recur event after event.
        self._ids: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def _feature_ids(self, payload: Any) -> tuple[str, ...]:
        cls = type(payload)
        read = _READS.get(cls)
        if read is None:
            return ()  # a type that is no use of a feature
        memo = (cls, read(payload))
        ids = self._ids.get(memo)
        if ids is None:
            if len(self._ids) >= IDS_CACHE_MAX:
                self._ids.clear()
            ids = self._ids[memo] = feature_ids(payload)
        return ids

    def use(self, product: str, payload: Any, ts_ms: int) -> list[Any]:
        """Count the uses in one stored payload; return the adoption payloads they reach."""
        out: list[Any] = []
        uses, changed = self.uses, self.changed
        for fid in self._feature_ids(payload):
            key = (product, fid)
            n = uses.get(key, 0) + 1
            if n == 1 and len(uses) >= MAX_FEATURES:
                self.untracked += 1
                continue
            uses[key] = n
            previous = changed.get(key)
            changed[key] = (n, ts_ms if previous is None else previous[1])
            if n == 1:
                out.append(FeatureFirstUse(feature_id=fid))
            elif n in MILESTONES:
                out.append(
                    FeatureAdoption(feature_id=fid, feature_event="milestone", milestone_count=n)
                )
        return out

    def snapshot(self) -> tuple[dict[FeatureKey, int], dict[FeatureKey, tuple[int, int]]]:
        """A copy to go back to if a batch is not written after all."""
        return dict(self.uses), dict(self.changed)

    def restore(
        self, snap: tuple[dict[FeatureKey, int], dict[FeatureKey, tuple[int, int]]]
    ) -> None:
        self.uses, self.changed = dict(snap[0]), dict(snap[1])

    def clear(self) -> None:
        """Forget everything (after `rkd delete`)."""
        self.uses.clear()
        self.changed.clear()


def load_uses(db: apsw.Connection) -> dict[FeatureKey, int]:
    return {(p, f): n for p, f, n in db.execute("SELECT product, feature_id, uses FROM features")}


def write_uses(db: apsw.Connection, changed: Iterable[tuple[FeatureKey, tuple[int, int]]]) -> None:
    """Upsert changed counts inside the caller's transaction (first_ms is kept once set)."""
    db.executemany(
        "INSERT INTO features(product, feature_id, uses, first_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(product, feature_id) DO UPDATE SET uses = excluded.uses",
        [(p, f, n, first) for (p, f), (n, first) in changed],
    )
