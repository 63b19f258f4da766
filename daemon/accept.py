"""The one path every event takes, from the socket or from a spool file.

room -> decode -> consent gate -> daemon-owned gate -> validate -> firewall -> dedup
-> stamp into the pending buffer -> remember the id. The stages are a tuple of small
callables run by :class:`Intake`'s short loop (structlog's processor chain is the model); each takes the
:class:`Item` in flight and fills it in, or rejects it by raising
:class:`~rkd.daemon.pipeline.Rejected`, which is caught and counted in exactly one
place (:meth:`Intake.__call__`). The daemon builds the tuple (:func:`build_stages`) and
builds it again when its settings change.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog
from rkd.client.config import Settings
from rkd.client.consent import ConsentError, granted_since, read_consent
from rkd.client.schema import Envelope
from rkd.client.wire import is_batch, is_report, is_vocabulary
from rkd.daemon.derived import SESSION_TYPES
from rkd.daemon.firewall import Firewall
from rkd.daemon.pipeline import (
    Rejected,
    decode,
    decode_batch,
    decode_report,
    decode_vocabulary,
    validate,
)
from rkd.daemon.seen import SeenIds, key_of_int
from rkd.daemon.windows import BoundedSet

log = structlog.get_logger("rkd.daemon")

MAX_PENDING: Final = 100_000  # events held while the database cannot be written
# Ids of events refused once, so that a copy of one (a client spools the copies of
# events it could not have confirmed, refused ones included) is a duplicate, not a
# second refusal. A client's copies are bounded well below this. (A refusal that
# depends on the moment, the pending buffer full, comes before decoding: no id.)
REFUSED_IDS_KEPT: Final = 32_768
RKD_PRODUCT: Final = "rkd"  # the daemon's own events; no application may send them


class Item:
    """One frame on its way in: what the stages learnt about it so far."""

    __slots__ = ("envelope", "frame", "key", "now", "origin", "ts_ms", "written")

    def __init__(self, frame: bytes, origin: str, now: dt.datetime,
                 written: dt.datetime | None = None) -> None:  # fmt: skip
        self.frame = frame
        self.origin = origin  # "socket" or "spool": the counters say where duplicates came from
        self.now = now
        self.written = written  # a spool file's modification time; None from the socket
        self.envelope: Any = None  # an Envelope once decoded
        self.ts_ms = 0
        self.key = 0


Stage = Callable[[Item], None]


class Room:
    """Refuse a frame while the pending buffer is full (the database cannot be written)."""

    def __init__(self, pending: list[Any], limit: int = MAX_PENDING) -> None:
        self.pending, self.limit = pending, limit

    def __call__(self, item: Item) -> None:
        if len(self.pending) >= self.limit:
            raise Rejected("buffer_full", counter="dropped.buffer_full")


def decode_stage(item: Item) -> None:
    item.envelope = decode(item.frame)


class ConsentGate:
    """Only what the user consented to: telemetry on, the event's category, and only
    what was recorded after the moment consent to that category was given.

    The moment (``since``, category -> UTC datetime; see :func:`consent_moments`) is
    compared with the event's own timestamp and, for a spool file, with the file's
    modification time (the kernel's clock, not the application's): an event recorded
    while consent was absent is never stored, even once consent is given later, and an
    application whose clock runs ahead cannot date such an event past the moment. There
    is no tolerance for clocks running behind: an event dated before the moment is
    refused (``rejected.before_consent``), as "nothing recorded before consent" says.

    The same holds for the last `rkd delete` (``erased``): an event recorded before it
    was erased with everything else, so a copy that arrives later (a client's spooled
    copies of events the daemon had stored, a spool file written before the deletion)
    is refused as ``rejected.before_deletion``, not stored again.
    """

    def __init__(self, settings: Settings, since: dict[str, dt.datetime] | None = None,
                 erased: dt.datetime | None = None) -> None:  # fmt: skip
        self.enabled = settings.enabled
        self.categories = frozenset(settings.categories)
        self.since = since or {}
        self.erased = erased

    def __call__(self, item: Item) -> None:
        if not self.enabled:
            raise Rejected("disabled")
        category = item.envelope.payload.category
        if category not in self.categories:
            raise Rejected("category_off")
        since = self.since.get(category)  # (None checked here: no call per event)
        if since is not None and _recorded_before(item, since):
            raise Rejected("before_consent")
        if self.erased is not None and _recorded_before(item, self.erased):
            raise Rejected("before_deletion")


def _recorded_before(item: Item, moment: dt.datetime) -> bool:
    """Dated before ``moment``, or in a spool file written before it."""
    return item.envelope.timestamp < moment or (item.written is not None and item.written < moment)


def consent_moments(settings: Settings) -> dict[str, dt.datetime]:
    """Category -> the moment from which its events may be stored (none: no limit).

    - Consent given with `rkd enable` (the consent record's current decision grants it):
      the moment of that consent, per category (:func:`granted_since`).
    - Telemetry turned on by the config file alone (``enabled = true``, no consent
      granted in the record): the file's last change, the latest moment the user could
      have made that decision.
    - Turned on by ``RK_TELEMETRY_ENABLED=true`` (or ``REASONKIT_TELEMETRY``) in the
      daemon's environment: a standing decision of whoever set it (tests, CI, managed
      installs), with no moment, so no limit in time.
    An unreadable record leaves nothing consented: every category's moment is the end of
    time.
    """
    if not settings.enabled or settings.decided_by.startswith("env:"):
        return {}
    try:
        record = read_consent(settings.data_dir)
    except ConsentError:
        return dict.fromkeys(settings.categories, dt.datetime.max.replace(tzinfo=dt.UTC))
    since = granted_since(record)
    if since or settings.decided_by != "config":
        return since
    try:
        mtime = settings.config_path.stat().st_mtime
    except OSError:
        return {}
    return dict.fromkeys(settings.categories, dt.datetime.fromtimestamp(mtime, dt.UTC))


def daemon_owned(item: Item) -> None:
    """Session boundaries and anything in rkd's own name come only from the daemon."""
    env = item.envelope
    payload = env.payload
    if payload.event_type in SESSION_TYPES or env.source.product == RKD_PRODUCT:
        raise Rejected("daemon_owned")
    if payload.event_type == "crash_detected" and payload.component == "daemon":
        raise Rejected("daemon_owned")


def validate_stage(item: Item) -> None:
    item.ts_ms = validate(item.envelope, item.now)


class FirewallStage:
    def __init__(self, firewall: Firewall) -> None:
        self.firewall = firewall

    def __call__(self, item: Item) -> None:
        item.envelope = self.firewall(item.envelope)


class Dedup:
    """Drop an event whose id the daemon holds already (stored or pending). The id is
    remembered by :class:`Remember`, once the event really is pending."""

    def __init__(self, seen: SeenIds) -> None:
        self.seen = seen

    def __call__(self, item: Item) -> None:
        item.key = key_of_int(item.envelope.event_id.int)
        if item.key in self.seen:
            raise Rejected("duplicate", counter=f"{item.origin}.duplicates")


class Remember:
    """The last stage: the event is pending, so its id is held (a stage that failed
    before this one leaves no id behind to drop a later, real copy)."""

    def __init__(self, seen: SeenIds) -> None:
        self.seen = seen

    def __call__(self, item: Item) -> None:
        self.seen.add(item.key)


class Stamp:
    """Into the pending buffer, in its session, with what the daemon derives from it."""

    def __init__(self, stamp: Callable[[Envelope, int, list[Any]], None], pending: list[Any],
                 on_error: Callable[[], None]) -> None:  # fmt: skip
        self.stamp, self.pending, self.on_error = stamp, pending, on_error

    def __call__(self, item: Item) -> None:
        self.stamp(item.envelope, item.ts_ms, self.pending)
        if item.envelope.payload.family == "error":
            self.on_error()  # spec §4.2: errors are written at once


def build_stages(
    settings: Settings,
    firewall: Firewall,
    seen: SeenIds,
    pending: list[Any],
    stamp: Callable[[Envelope, int, list[Any]], None],
    on_error: Callable[[], None],
    erased: dt.datetime | None = None,
) -> tuple[Stage, ...]:
    """The daemon's stages, in order (``erased``: the moment of the last `rkd delete`)."""
    return (
        Room(pending),
        decode_stage,
        ConsentGate(settings, consent_moments(settings), erased),
        daemon_owned,
        validate_stage,
        FirewallStage(firewall),
        Dedup(seen),
        Stamp(stamp, pending, on_error),
        Remember(seen),
    )


class Intake:
    """Runs each frame through the stages; counts every rejection, by reason, here."""

    def __init__(self, stages: Sequence[Stage], counters: Counter[str],
                 on_report: Callable[[dict[str, int], int], None],
                 on_vocabulary: Callable[[bytes], None] = lambda data: None,
                 on_batch: Callable[[int, int, int], None] = lambda c, s, n: None) -> None:  # fmt: skip
        self.stages = tuple(stages)
        self.counters = counters
        self.on_report = on_report
        self.on_vocabulary = on_vocabulary  # raises Rejected when it refuses one
        self.on_batch = on_batch  # (client, first number, events): all went through
        self.dirty = False  # counters changed since the owner last wrote them
        self._logged: set[str] = set()
        self.refused = BoundedSet(REFUSED_IDS_KEPT)  # keys of refused events (dump/load)

    def __call__(self, frame: bytes, origin: str, now: dt.datetime,
                 written: dt.datetime | None = None) -> int:  # fmt: skip
        """How many events of the frame joined the pending buffer."""
        if not is_report(frame):
            return self.event(frame, origin, now, written)
        try:
            if is_batch(frame):
                if origin != "socket":  # clients spool events, never batches
                    raise Rejected("malformed")
                return self.batch(frame, now)
            if is_vocabulary(frame):
                self.on_vocabulary(decode_vocabulary(frame))
            else:
                self.on_report(*decode_report(frame))
        except Rejected as r:
            self._rejected(r, origin)
        return 0

    def event(self, frame: bytes, origin: str, now: dt.datetime,
              written: dt.datetime | None = None) -> int:  # fmt: skip
        """One event frame through the stages: 1 when it joined the pending buffer."""
        try:
            item = Item(frame, origin, now, written)
            for stage in self.stages:
                stage(item)
        except Rejected as r:
            if item.envelope is not None and r.reason != "duplicate":
                r = self._refused_again(r, item)
            self._rejected(r, origin)
            return 0
        self.counters["accepted"] += 1
        return 1

    def batch(self, frame: bytes, now: dt.datetime) -> int:
        """A client's numbered batch: each event through the stages, then its numbers
        to the ledger (every one is now pending or counted as rejected)."""
        b = decode_batch(frame)
        event = self.event
        n = 0
        for raw in b.events:
            n += event(bytes(raw), "socket", now)
        self.on_batch(b.client, b.seq, len(b.events))
        return n

    def _refused_again(self, r: Rejected, item: Item) -> Rejected:
        """A refused event is counted once: its copy (from the spool, or sent twice)
        counts as a duplicate."""
        key = key_of_int(item.envelope.event_id.int)
        if key in self.refused:
            return Rejected("duplicate", counter=f"{item.origin}.duplicates")
        self.refused.add(key)
        return r

    def _rejected(self, r: Rejected, origin: str) -> None:
        self.counters[r.counter] += 1
        self.dirty = True
        if r.counter not in self._logged:
            self._logged.add(r.counter)
            log.warning("frame_rejected", reason=r.reason, origin=origin,
                        note="further occurrences are only counted")  # fmt: skip
