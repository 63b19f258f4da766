"""The daemon's control socket: status, flush, show, delete, prune, reload, sync.

A mixin of :class:`~rkd.daemon.service.Daemon` (state declared in
:class:`~rkd.daemon.state.DaemonState`): one request at a time on the REP socket,
answered on the daemon's own loop, so a request sees and changes the daemon's state with
no lock.
"""

from __future__ import annotations

import os
import time
from typing import Any

import apsw
import msgspec
import structlog
import zmq
from rkd.client.clock import iso_ms
from rkd.client.spool import spool_files
from rkd.client.wire import (
    ControlRequest,
    DaemonStatus,
    DeleteRequest,
    FlushRequest,
    PruneRequest,
    ReloadRequest,
    Reply,
    ShowRequest,
    StatusRequest,
    SyncRequest,
)
from rkd.daemon.firewall import load_salt
from rkd.daemon.state import DaemonState

log = structlog.get_logger("rkd.daemon")


class ControlMixin(DaemonState):
    """Answers control requests (see :meth:`handle`)."""

    def serve_control(self) -> None:
        try:
            parts = self.rep.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            if len(parts) != 1:
                raise msgspec.DecodeError("multipart")
            req = msgspec.msgpack.decode(parts[0], type=ControlRequest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counters["rejected.control_malformed"] += 1
            self._dirty = True
            reply = Reply(ok=False, error="malformed control request")
        else:
            reply = self.handle(req)
        self.rep.send(msgspec.msgpack.encode(reply))

    def handle(self, req: ControlRequest) -> Reply:
        match req:
            case SyncRequest(token=token):
                self.drain(flush=False)  # frames queued before the question count too
                return Reply(ok=True, synced=token in self._synced, pid=os.getpid())
            case StatusRequest():
                return Reply(ok=True, status=self.status())
            case FlushRequest():
                self.drain(flush=False)
                self.ingest_spool()
                n = len(self.pending)
                if not self.flush(force=True):
                    return Reply(ok=False, error="the database cannot be written; events are kept")
                return Reply(ok=True, flushed=n)
            case DeleteRequest():
                return self._delete()
            case PruneRequest():
                removed = self.maintain()
                if removed is None:
                    return Reply(ok=False, error="the database cannot be pruned now; see the log")
                return Reply(ok=True, deleted=removed)
            case ReloadRequest():
                error = self.reload()
                return Reply(ok=error is None, error=error)
            case ShowRequest(limit=limit):
                return Reply(ok=True, pending=len(self.pending), events=self._show(limit))
        return Reply(ok=False, error="unknown request")  # pragma: no cover

    def _show(self, limit: int) -> list[dict[str, Any]]:
        """Pending events as the spec's envelopes, already filtered, oldest first."""
        out = []
        for r in self.pending[: max(0, min(limit, 10_000))]:
            data = msgspec.to_builtins(r.envelope)
            data["session"] = {"id": r.session.uuid, "sequence": r.sequence,
                               "started_at": iso_ms(r.session.started_ms)}  # fmt: skip
            out.append(data)
        return out

    def _delete(self) -> Reply:
        self.drain(flush=False)
        held = len(self.pending)
        self.pending.clear()
        try:
            n = self.storage.delete_all() + held
            self._mark_running()  # delete_all erased the marker with everything else
        except apsw.Error as e:
            return Reply(ok=False, error=f"delete failed: {str(e)[:200]}")
        for f in spool_files(self.settings.spool_dir):
            f.unlink(missing_ok=True)
        self.counters.clear()
        self.firewall.salt = load_salt(self.settings.data_dir, rotate=True)
        self.stamper.rotate()
        self.features.clear()
        self._touched.clear()
        self.events_stored = 0
        self.last_flush_ms = None
        log.info("deleted", events=n)
        return Reply(ok=True, deleted=n)

    def status(self) -> DaemonStatus:
        s = self.stamper.current
        return DaemonStatus(
            pid=os.getpid(),
            started_at=iso_ms(self.started_ms),
            uptime_secs=round(time.monotonic() - self.started_mono, 3),
            enabled=self.settings.enabled,
            db_path=str(self.storage.path),
            events_stored=self.events_stored,
            pending=len(self.pending),
            last_flush=iso_ms(self.last_flush_ms) if self.last_flush_ms else None,
            session_id=s.uuid if s is not None else None,
            counters=dict(self.counters),
            recovered=self.recovered,
        )
