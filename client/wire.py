"""The wire: frame limits, the client drop report, and the control protocol.

Events travel in batches: ``["batch", client, seq, [event, ...]]``, where each event is
a MessagePack map (an envelope of :data:`rkd.client.schema.Event`), ``client`` the
connection's random id and ``seq`` the number of the batch's first event on that
connection (1, 2, 3... without gaps). The daemon confirms "stored up to N" per client
(:class:`ConfirmRequest`), so a client keeps copies of exactly the events after N.
A lone map is one event without a number (clients before batching). A client's drop
report is an array too (``["client_report", {...}]``), and so is its vocabulary
(``["vocabulary", <toml bytes>]``): the tag that follows the array header tells them apart.
Control requests and replies travel over a REQ/REP socket, tagged by ``op``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from msgspec import Meta, Raw, Struct

MAX_FRAME_BYTES: Final = 64 * 1024  # one event
BATCH_EVENTS: Final = 64  # a client ships its batch at this many events...
BATCH_BYTES: Final = 32 * 1024  # ...or this many bytes of events
# The largest batch: one under BATCH_BYTES, then one event of the largest size, and the header.
MAX_BATCH_BYTES: Final = BATCH_BYTES + MAX_FRAME_BYTES + 64
EVENTS_SOCKET: Final = "events.sock"  # single events: clients from before batches
BATCHES_SOCKET: Final = "batches.sock"  # batches (the same daemon socket, bound twice)
CONTROL_SOCKET: Final = "control.sock"
LOCK_FILE: Final = "daemon.lock"


# The reasons a client may report drops under. The daemon counts anything else as
# "other": reason names come from other processes and become database rows, so the set
# they can make is closed (20,000 invented names once made 640,000 counter rows).
DROP_REASONS: Final = frozenset({
    "encode_error", "oversized", "wrong_family", "internal_error", "spool_full",
    "unconfirmed", "queue_full", "invalid_field", "invalid_argument", "disabled", "other",
})  # fmt: skip
MAX_REPORTED_DROPS: Final = 1 << 32  # per reason and report; more is a lie, not a count


class ClientReport(Struct, frozen=True, array_like=True, tag="client_report"):
    """Counts of events a client dropped since its last report, by reason; and an
    optional sync token the daemon remembers once it has processed the report."""

    drops: dict[str, int]
    sync: int = 0


class VocabularyFrame(Struct, frozen=True, array_like=True, tag="vocabulary"):
    """A client's declared vocabulary (its TOML file's bytes), sent once per connection
    before its first event, so the daemon knows what the product may upload."""

    toml: bytes


VOCABULARY_TAG: Final = b"\x92\xaavocabulary"  # a 2-array, then the tag (fixstr of 10)

Positive63 = Annotated[int, Meta(ge=1, le=(1 << 63) - 1)]


class Batch(Struct, frozen=True, array_like=True, tag="batch"):
    """Events of one client connection, numbered from ``seq`` on (clients build the
    bytes with :func:`batch_prefix` and :func:`array_header`, without encoding twice)."""

    client: Positive63
    seq: Positive63
    events: Annotated[list[Raw], Meta(max_length=BATCH_EVENTS)]


BATCH_TAG: Final = b"\x94\xa5batch"  # a 4-array, then the tag (fixstr of 5)


def is_batch(frame: bytes) -> bool:
    return frame[:7] == BATCH_TAG


def batch_prefix(client: int) -> bytes:
    """The constant start of every batch a connection sends: header, tag, client id."""
    return BATCH_TAG + b"\xcf" + client.to_bytes(8, "big")  # uint64


def array_header(n: int) -> bytes:
    """MessagePack's header of an ``n``-item array."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def is_vocabulary(frame: bytes) -> bool:
    """True for a vocabulary frame (an array whose first item is the tag)."""
    return frame[:12] == VOCABULARY_TAG


def is_report(frame: bytes) -> bool:
    """True for a report frame (a MessagePack array: fixarray 0x90-0x9f, array16/32)."""
    return bool(frame) and (0x90 <= frame[0] <= 0x9F or frame[0] in (0xDC, 0xDD))


# -- control protocol -------------------------------------------------------------------


class Request(Struct, frozen=True, tag_field="op"):
    """Base of control requests."""


class StatusRequest(Request, frozen=True, tag="status"):
    """Ask for the daemon's status."""


class FlushRequest(Request, frozen=True, tag="flush"):
    """Write everything pending to the database now, and ingest the spool."""


class DeleteRequest(Request, frozen=True, tag="delete"):
    """Erase every stored event, the pending buffer and the spool."""


class PruneRequest(Request, frozen=True, tag="prune"):
    """Apply retention and the size cap now."""


class ReloadRequest(Request, frozen=True, tag="reload"):
    """Re-read config and consent now (after `rkd enable`/`disable`)."""


class ShowRequest(Request, frozen=True, tag="show"):
    """The pending (not yet written) events, after the privacy firewall."""

    limit: int = 1000


class RefilterRequest(Request, frozen=True, tag="refilter"):
    """`rkd audit --fix`: run today's firewall and vocabularies over what is stored."""


class SyncNowRequest(Request, frozen=True, tag="sync_now"):
    """`rkd sync now`: start the next upload round at once."""


class SyncRequest(Request, frozen=True, tag="sync"):
    """Has the daemon processed the client report carrying this token? (Clients before
    batching; see ConfirmRequest.)"""

    token: int


class ConfirmRequest(Request, frozen=True, tag="confirm"):
    """Up to which event number is this client's connection stored (or settled: counted
    as rejected)? With ``flush`` (an explicit flush, or the client is leaving), the
    daemon first takes what is queued and writes what is pending, so that the answer
    reaches ``upto`` if it can."""

    client: int
    upto: int = 0
    flush: bool = False


ControlRequest = (
    ConfirmRequest
    | SyncRequest
    | StatusRequest
    | FlushRequest
    | DeleteRequest
    | ReloadRequest
    | ShowRequest
    | PruneRequest
    | RefilterRequest
    | SyncNowRequest
)


class EffectiveSettings(Struct, frozen=True, kw_only=True):
    """The settings a daemon is actually using (from the config it last read), so that
    `rkd status` and `rkd prune` can show them and say when the file differs."""

    config_path: str
    db_path: str
    decided_by: str
    batch_size: int
    flush_interval_secs: float
    max_db_size_mb: int
    retention_days: int
    categories: list[str]


class DaemonStatus(Struct, frozen=True, kw_only=True):
    """The daemon's view of itself, as returned to `rkd status`."""

    pid: int
    started_at: str
    uptime_secs: float
    enabled: bool
    db_path: str
    events_stored: int
    pending: int
    last_flush: str | None
    session_id: str | None
    counters: dict[str, int]
    recovered: str | None = None  # JSON: when a damaged database was moved aside, and where
    spool_quarantined: int = 0  # spool files kept aside because they could not be ingested
    settings: EffectiveSettings | None = None  # None: an older daemon that does not say
    database_bytes: int = 0  # the database file and its WAL, as the size cap counts them
    sync: dict[
        str, Any
    ] = {}  # mode, problem, in_flight, next_attempt_in_secs, queue_depth, batches


class Reply(Struct, frozen=True, kw_only=True):
    """A control reply: ``ok`` and either a result or a one-line error."""

    ok: bool
    error: str | None = None
    status: DaemonStatus | None = None
    flushed: int = 0
    deleted: int = 0
    pending: int = 0
    synced: bool = False
    events: list[dict[str, Any]] = []
    pid: int = 0  # the answering daemon's pid (sync replies): a restart shows as a new pid
    refiltered: dict[str, int] = {}  # `rkd audit --fix`: scanned, rewritten, retagged, removed
    cloud_erasure: int = 0  # `rkd delete`: uploaded sessions the server is asked to erase
    stored: int = 0  # confirm replies: the client's events up to this number are stored
