"""Confirming delivery while the application runs, without ever waiting for it.

The transport keeps a copy of every frame it sent until the daemon confirms it has it
(see :mod:`rkd.client.transport`). At exit one blocking question settles that; a process
that runs for days would meanwhile hold up to ``UNCONFIRMED_MAX`` copies (~8 MB). So
every :data:`CONFIRM_EVERY` frames the transport asks along the way: it sends a sync
token on the event connection and a ``SyncRequest`` for it on a DEALER socket to the
control socket, both ``NOBLOCK``, and picks the answer up on a later send. A yes
releases the copies of every frame sent before the token. No answer, or a no (the
token is still queued behind other frames), only means asking again later.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
from rkd.client.wire import CONTROL_SOCKET, ClientReport, Reply, SyncRequest

if TYPE_CHECKING:
    from rkd.client.transport import Transport

CONFIRM_EVERY: Final = 2048  # frames sent between two questions
RECHECK_EVERY: Final = 256  # frames sent between two looks for an outstanding answer
ANSWER_WAIT_SECS: Final = 2.0  # a question unanswered this long is dropped and asked anew
_NOBLOCK: Final = 1  # zmq.NOBLOCK


def sync_report() -> tuple[int, bytes]:
    """A new sync token and the client report that carries it on the event connection."""
    token = int.from_bytes(os.urandom(8)) % (1 << 62) + 1  # as secrets.randbits(62) + 1
    return token, msgspec.msgpack.encode(ClientReport({}, sync=token))


class RollingConfirm:
    """One outstanding question at a time; all calls come with the transport's lock held."""

    def __init__(self) -> None:
        self.sock: Any = None  # DEALER to the control socket, made on first use
        self.token = 0  # the outstanding question's token; 0: none
        self.mark = 0  # frames sent before that token
        self.asked_at = 0.0
        self.next_at = CONFIRM_EVERY  # look again when the transport's `sent` gets here

    def step(self, t: Transport) -> None:
        """Collect an answer if one came, ask a new question if none is outstanding."""
        if self.token:
            self._collect(t)
        if not self.token:
            self._ask(t)
        self.next_at = t.sent + (RECHECK_EVERY if self.token else CONFIRM_EVERY)

    def _ask(self, t: Transport) -> None:
        if t._sock is None or t._ctx is None:
            return
        token, report = sync_report()
        try:
            t._raw_send(t._sock, report, _NOBLOCK, True)
            if self.sock is None:
                self.sock = t._ctx.socket(t._zmq.DEALER)
                self.sock.setsockopt(t._zmq.LINGER, 0)
                self.sock.connect(f"ipc://{t._runtime_dir / CONTROL_SOCKET}")
            self.sock.send_multipart(
                [b"", msgspec.msgpack.encode(SyncRequest(token=token))], _NOBLOCK
            )
        except t._zmq_error:
            return  # not now: the next look asks again
        self.token, self.mark, self.asked_at = token, t.sent, time.monotonic()

    def _collect(self, t: Transport) -> None:
        try:
            parts = self.sock.recv_multipart(_NOBLOCK)
        except t._zmq_error:  # no answer yet
            if time.monotonic() - self.asked_at > ANSWER_WAIT_SECS:
                self.close()  # a daemon that went away: start over on a fresh socket
            return
        self.token = 0
        try:
            reply = msgspec.msgpack.decode(parts[-1], type=Reply)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return
        if reply.synced:
            t.confirmed(reply.pid, self.mark)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock, self.token = None, 0
