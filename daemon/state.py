"""What the daemon's parts share: its state and the loop's own operations, declared once.

:class:`~rkd.daemon.service.Daemon` is assembled from mixins (control requests, derived
events, spool ingestion) that live in modules of their own. Each mixin derives from
:class:`DaemonState`, which only declares (for readers and the type checker) what the
daemon holds and the loop operations the mixins call; the daemon sets and defines them.
Nothing here runs.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zmq
    from rkd.client.config import Settings
    from rkd.client.schema import Envelope
    from rkd.daemon.derived import FeatureCounter
    from rkd.daemon.firewall import Firewall
    from rkd.daemon.sessions import SessionStamper
    from rkd.daemon.storage import Record, SessionRow, Storage
    from rkd.daemon.windows import BoundedSet, RecentIds


class DaemonState:
    """The daemon's state (set in ``Daemon.__init__``) and loop operations."""

    settings: Settings
    storage: Storage
    counters: Counter[str]  # reasons -> counts, written with every batch
    events_stored: int
    last_flush_ms: int | None
    pending: list[Record]  # stamped events not yet written, oldest first
    firewall: Firewall
    stamper: SessionStamper
    features: FeatureCounter
    started_ms: int
    started_mono: float
    recovered: Any  # the note of a damaged database moved aside, or None
    rep: zmq.Socket[Any]
    _synced: BoundedSet  # sync tokens of client reports processed
    _recent: RecentIds  # ids of recently accepted events (spool de-duplication)
    _spooled: BoundedSet  # ids of the newest events stored from the spool
    _touched: list[SessionRow]  # sessions that ended without an event to say so
    _dirty: bool  # counters changed since the last write

    if TYPE_CHECKING:  # defined by Daemon; declared here for the mixins

        def drain(self, flush: bool = True) -> int: ...
        def ingest(self, frame: bytes, now: dt.datetime) -> tuple[Envelope, int] | None: ...
        def flush(self, force: bool = False) -> bool: ...
        def maintain(self) -> int | None: ...
        def reload(self) -> str | None: ...
        def _accept(self, envelope: Envelope, ts_ms: int) -> None: ...
        def _write(self, records: list[Record], ledger: tuple[str, int] | None) -> bool: ...
        def _log_once(self, key: str, event: str, **fields: Any) -> None: ...

        # from the other mixins
        def ingest_spool(self) -> int: ...
        def _stamp(self, envelope: Envelope, ts_ms: int, out: list[Record]) -> None: ...
        def _mark_running(self) -> None: ...
