"""The daemon's control socket: status, flush, show, delete, prune, reload, sync.

:class:`Control` decodes one request at a time from the REP socket and answers it by
calling the operations the daemon offers (:class:`Operations`), on the daemon's own
loop, so a request sees and changes the daemon's state with no lock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final, Protocol

import msgspec
import zmq
from rkd.client.wire import (
    ConfirmRequest,
    ControlRequest,
    DaemonStatus,
    DeleteRequest,
    FlushRequest,
    PruneRequest,
    RefilterRequest,
    ReloadRequest,
    Reply,
    ShowRequest,
    StatusRequest,
    SyncNowRequest,
    SyncRequest,
)

MAX_SHOW: Final = 10_000


class Operations(Protocol):
    """What a control request may ask of the daemon."""

    def synced(self, token: int) -> tuple[bool, int]: ...  # (processed?, daemon pid)
    def confirm(self, client: int, upto: int, flush: bool) -> tuple[int, int]: ...  # (stored, pid)
    def status(self) -> DaemonStatus: ...
    def flush_all(self) -> int | None: ...  # events written, None: cannot write now
    def delete_all(self) -> tuple[int, int]: ...  # (events, cloud sessions); ControlError
    def prune_now(self) -> int | None: ...
    def reload(self) -> str | None: ...  # None, or the error
    def show(self, limit: int) -> tuple[int, list[dict[str, Any]]]: ...  # (pending, events)
    def refilter(self) -> dict[str, int]: ...  # raises ControlError
    def sync_now(self) -> str | None: ...  # None, or why nothing can be sent


class ControlError(Exception):
    """A request that failed; the message is the one-line answer."""


class Control:
    """Answers control requests (see :meth:`handle`)."""

    def __init__(self, ops: Operations, counters: Counter[str]) -> None:
        self.ops, self.counters = ops, counters

    def serve(self, rep: zmq.Socket[Any]) -> None:
        """Answer the request waiting on ``rep``, if any (a REP socket must answer)."""
        try:
            parts = rep.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            if len(parts) != 1:
                raise msgspec.DecodeError("multipart")
            req = msgspec.msgpack.decode(parts[0], type=ControlRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            self.counters["rejected.control_malformed"] += 1
            reply = Reply(ok=False, error="malformed control request")
        else:
            try:
                reply = self.handle(req)
            except ControlError as e:
                reply = Reply(ok=False, error=str(e))
            except Exception:
                # The daemon's guard logs and counts it; the client still gets an answer.
                rep.send(msgspec.msgpack.encode(Reply(ok=False, error="internal error")))
                raise
        try:
            answer = msgspec.msgpack.encode(reply)
        except Exception:  # a REP socket that does not answer refuses every later request
            rep.send(msgspec.msgpack.encode(Reply(ok=False, error="internal error")))
            raise
        rep.send(answer)

    def handle(self, req: ControlRequest) -> Reply:
        ops = self.ops
        match req:
            case ConfirmRequest(client=client, upto=upto, flush=flush):
                stored, pid = ops.confirm(client, upto, flush)
                return Reply(ok=True, stored=stored, pid=pid)
            case SyncRequest(token=token):
                synced, pid = ops.synced(token)
                return Reply(ok=True, synced=synced, pid=pid)
            case StatusRequest():
                return Reply(ok=True, status=ops.status())
            case FlushRequest():
                n = ops.flush_all()
                if n is None:
                    return Reply(ok=False, error="the database cannot be written; events are kept")
                return Reply(ok=True, flushed=n)
            case DeleteRequest():
                deleted, cloud = ops.delete_all()
                return Reply(ok=True, deleted=deleted, cloud_erasure=cloud)
            case PruneRequest():
                removed = ops.prune_now()
                if removed is None:
                    return Reply(ok=False, error="the database cannot be pruned now; see the log")
                return Reply(ok=True, deleted=removed)
            case ReloadRequest():
                error = ops.reload()
                return Reply(ok=error is None, error=error)
            case SyncNowRequest():
                error = ops.sync_now()
                return Reply(ok=error is None, error=error)
            case RefilterRequest():
                return Reply(ok=True, refiltered=ops.refilter())
            case ShowRequest(limit=limit):
                pending, events = ops.show(max(0, min(limit, MAX_SHOW)))
                return Reply(ok=True, pending=pending, events=events)
        return Reply(ok=False, error="unknown request")  # pragma: no cover
