"""Confirming delivery while the application runs, without ever waiting for it.

The transport keeps a copy of every event it sent until the daemon confirms it is
stored (see :mod:`rkd.client.transport`). At exit one blocking question settles that; a
process that runs for days would meanwhile hold up to ``UNCONFIRMED_MAX`` copies. So
every :data:`CONFIRM_EVERY` events the transport asks along the way: a
:class:`~rkd.client.wire.ConfirmRequest` on a DEALER socket to the control socket,
``NOBLOCK``, whose answer it picks up on a later send. The answer "stored up to N"
releases the copies of events 1..N at once. No answer only means asking again later.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
from rkd.client.wire import CONTROL_SOCKET, ConfirmRequest, Reply

if TYPE_CHECKING:
    from rkd.client.transport import Transport

CONFIRM_EVERY: Final = 2048  # events sent between two questions
RECHECK_EVERY: Final = 256  # events sent between two looks for an outstanding answer
ANSWER_WAIT_SECS: Final = 2.0  # a question unanswered this long is dropped and asked anew
_NOBLOCK: Final = 1  # zmq.NOBLOCK


class RollingConfirm:
    """One outstanding question at a time; all calls come with the transport's lock held."""

    def __init__(self) -> None:
        self.sock: Any = None  # DEALER to the control socket, made on first use
        self.asking = False  # a question is outstanding
        self.client = 0  # the connection it was asked for
        self.asked_at = 0.0
        self.next_at = CONFIRM_EVERY  # look again when the transport's `sent` gets here

    def step(self, t: Transport) -> None:
        """Collect an answer if one came, ask a new question if none is outstanding."""
        if self.asking:
            self._collect(t)
        if not self.asking:
            self._ask(t)
        self.next_at = t.sent + (RECHECK_EVERY if self.asking else CONFIRM_EVERY)

    def _ask(self, t: Transport) -> None:
        if t._sock is None or t._ctx is None or not t.client:
            return
        try:
            if self.sock is None:
                self.sock = t._ctx.socket(t._zmq.DEALER)
                self.sock.setsockopt(t._zmq.LINGER, 0)
                self.sock.connect(f"ipc://{os.path.join(t._runtime_dir, CONTROL_SOCKET)}")
            ask = ConfirmRequest(client=t.client, upto=t.sent)
            self.sock.send_multipart([b"", msgspec.msgpack.encode(ask)], _NOBLOCK)
        except t._zmq_error:
            return  # not now: the next look asks again
        self.asking, self.client, self.asked_at = True, t.client, time.monotonic()

    def _collect(self, t: Transport) -> None:
        try:
            parts = self.sock.recv_multipart(_NOBLOCK)
        except t._zmq_error:  # no answer yet
            if time.monotonic() - self.asked_at > ANSWER_WAIT_SECS:
                self.close()  # a daemon that went away: start over on a fresh socket
            return
        self.asking = False
        try:
            reply = msgspec.msgpack.decode(parts[-1], type=Reply)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return
        if reply.ok and self.client == t.client:  # (a new connection numbers anew)
            t.confirmed(reply.pid, reply.stored)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock, self.asking = None, False
