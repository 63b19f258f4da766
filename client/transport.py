"""Getting events from an application to the daemon without ever blocking or raising.

Events go in batches (:class:`rkd.client.wire.Batch`): ``send`` appends the encoded
event to the open batch, which is shipped when it holds BATCH_EVENTS events or
BATCH_BYTES, at once for an event sent after a quiet moment (so sparse events are not
held) or marked urgent (errors), on ``flush``/``close``, and otherwise once its first
event is BATCH_HOLD_SECS old: by the next send, or by a small shipper thread started
the first time anything is held (a ``_thread``, not ``threading``: nothing to import).
The same thread retries a backlog the daemon could not take yet.

A batch is sent with ``NOBLOCK`` on a PUSH socket in ``IMMEDIATE`` mode, so a send only
succeeds when a live daemon is connected. Whatever cannot be sent right now waits in a
bounded in-memory backlog that later sends drain; a full backlog is written to the
on-disk spool. Events are only dropped (and counted by reason) when the spool is full or
an event is unusable.

Each connection has a random id, and its events are numbered 1, 2, 3... as they are
handed to zmq. The daemon confirms "stored up to N" for a connection (a control
request, :class:`rkd.client.wire.ConfirmRequest`); the client keeps a copy of every
event after N. Along the way the question is asked without waiting
(:mod:`rkd.client.confirm`); at exit, within ``EXIT_BUDGET_SECS`` (spooling and
teardown included), it is asked once more and the daemon writes what it has before it
answers. Copies of what it did not confirm are spooled (the daemon stores each event
once: it knows the ids it holds); numbers that could be neither confirmed nor spooled
are left as a claim in the drops file, and the daemon counts as lost exactly those it
never received (:mod:`rkd.client.dropfile`).

zmq is imported and its context created on the first batch, never at import, and
rebuilt in a forked child (which also forgets the parent's backlog: the parent sends it).
After the atexit hook's ``close()``, events go straight to the spool: an atexit handler
that runs later, or another thread, loses nothing. After an explicit ``close()`` the next
event connects again, as the first one did.

A signal handler may emit (or close) while its thread is inside the transport: the lock
is re-entrant only to see that (``_is_owned``); such an event waits in a deque (appends
are atomic) that the interrupted send or flush takes into a batch as soon as it
lets the lock go (the shipper then ships it), and a close or flush from there does
nothing (the interrupted call goes on; atexit closes).

The common case (a batch still open) takes one short path in :meth:`Transport.send`: a
lock, an append and two comparisons; a shipped batch costs one libzmq send.
"""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock; threading itself costs ~1 ms
import atexit
import os
import sys
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Final

from rkd.client.confirm import CONFIRM_EVERY, RollingConfirm
from rkd.client.control import UnsafeRuntimeDir, check_runtime_dir, daemon_pid
from rkd.client.wire import (
    BATCH_BYTES,
    BATCH_EVENTS,
    BATCHES_SOCKET,
    ConfirmRequest,
    array_header,
    batch_prefix,
)

if TYPE_CHECKING:
    import zmq
    from rkd.client.dropfile import Claim
    from rkd.client.files import StrPath

BACKLOG_MAX: Final = 4096  # events held in memory before spilling to the spool...
BACKLOG_MAX_BYTES: Final = 4 * 1024 * 1024  # ...or this many bytes of them
BATCH_HOLD_SECS: Final = 0.002  # a batch this old is shipped with the next event
EXIT_BUDGET_SECS: Final = 0.2  # the most telemetry may add to a process's exit
# Of that budget, kept for what comes after the confirmation: teardown, and spooling
# whatever is unconfirmed, per event (5,000 copies took 3-5 ms to spool alone, up to
# 44 ms with four processes spooling at once on a loaded machine).
TEARDOWN_RESERVE_SECS: Final = 0.03
SPOOL_SECS_PER_EVENT: Final = 10e-6
PROBE_INTERVAL_SECS: Final = 2.0  # how often to look for a daemon that was down
REPORT_INTERVAL_SECS: Final = 10.0
# Batches queued in this process for the daemon (up to 64 events each): a burst of up to
# ~16,000 events goes to zmq at once, without waiting in the backlog for the next event.
SNDHWM: Final = 256
# Copies of sent events kept until the daemon confirms it has them. Covers what can be
# in flight: this socket's SNDHWM, the daemon's RCVHWM (8 batches) and kernel buffers.
# Beyond it the oldest copies go, and their numbers are claimed at exit like any other
# unconfirmed ones.
UNCONFIRMED_MAX: Final = 24_000
UNCONFIRMED_MAX_BYTES: Final = 16 * 1024 * 1024
CONNECT_WAIT_SECS: Final = 0.005  # once per connection: for the handshake, so a first burst goes
RETRY_SECS: Final = 0.05  # the shipper's wait before trying a held backlog again
BACKLOG_WAIT_SECS: Final = 0.002  # flush(): between tries of a backlog the daemon cannot take
_NOBLOCK: Final = 1  # zmq.NOBLOCK (ZMQ_DONTWAIT), a plain int: zmq is not imported yet
_monotonic = time.monotonic


def _client_id() -> int:
    """A connection's id: random, in 1 .. 2^63 - 1."""
    return (int.from_bytes(os.urandom(8), "big") >> 1) or 1


class Transport:
    """Delivers encoded events to the daemon; thread-safe, fork-aware, never raises."""

    def __init__(
        self, runtime_dir: StrPath, spool_dir: StrPath, hello: bytes | None = None
    ) -> None:
        self._endpoint = os.path.join(runtime_dir, BATCHES_SOCKET)
        # Sent first on every connection (the product's vocabulary frame). Until it went,
        # events wait in the backlog, so the ship path never has to check for it.
        self._hello = hello
        self._hello_due = False
        self._runtime_dir = runtime_dir
        self._spool_dir = spool_dir
        # Re-entered only to be noticed (_is_owned: the C RLock tracks its owner atomically).
        self._lock: Any = _thread.RLock()
        self._started = False
        self._zmq: Any = None
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None
        self._raw_send: Any = None  # libzmq's send for self._sock, without pyzmq's wrapper
        self._zmq_error: type[Exception] = OSError  # zmq.ZMQError once zmq is loaded
        self._batch: list[bytes] = []  # the open batch
        self._batch_bytes = 0
        self._batch_since = 0.0  # when its first event came
        self._last_ship = -1.0  # when a batch last left (for "after a quiet moment")
        self._backlog: deque[bytes] = deque()  # events held back (not yet numbered)
        self._backlog_bytes = 0
        self._deferred: deque[bytes] = deque()  # sent from a signal handler, see above
        self._unconfirmed: deque[bytes] = deque()  # copies; at most UNCONFIRMED_MAX(_BYTES)
        self._unconfirmed_bytes = 0
        self._closed = False  # the atexit hook's close() ran: events go straight to the spool
        self._hooked = False  # the atexit and fork hooks are registered
        self._shipper: Any = None  # the shipper thread's wake-up lock (None: not started)
        self._armed = False  # the shipper was woken and has not run yet
        self._next_probe = 0.0
        self._next_report = 0.0
        self.drops: Counter[str] = Counter()  # every drop, by reason, for this process
        self._unreported: Counter[str] = Counter()
        self.client = 0  # this connection's id (0: none yet)
        self._prefix = b""  # batch_prefix(self.client)
        self.sent = 0  # events numbered on this connection: 1..sent
        self.stored = 0  # the daemon confirmed 1..stored (or they were spooled or claimed)
        self.spooled = 0
        self._daemon_pid = 0
        self._rolling = RollingConfirm()

    # -- public ----------------------------------------------------------------------

    def send(self, frame: bytes, urgent: bool = False) -> None:
        """Queue one encoded event for the daemon. Never blocks on the network, never raises."""
        try:
            if self._lock._is_owned():  # a signal handler, inside this thread's own call
                self._deferred.append(frame)
                return
            with self._lock:
                if self._deferred:
                    self._undefer()
                batch = self._batch
                batch.append(frame)
                self._batch_bytes += len(frame)
                if urgent or len(batch) >= BATCH_EVENTS or self._batch_bytes >= BATCH_BYTES:
                    self._ship()
                else:
                    now = _monotonic()
                    if len(batch) == 1:
                        if now - self._last_ship >= BATCH_HOLD_SECS:
                            self._ship(now)  # the first event after a quiet moment: at once
                        else:
                            self._batch_since = now
                            if not self._armed:
                                self._arm()
                    elif now - self._batch_since >= BATCH_HOLD_SECS:
                        self._ship(now)
            if self._deferred:  # a signal handler sent one while the lock was held above
                self._take_deferred()
        except Exception:  # a bug here must not reach the application
            self.drop("internal_error")

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` events lost for ``reason``; reported to the daemon later. (From a
        signal handler inside a locked call, the RLock lets this one in: counting is safe.)"""
        with self._lock:
            self._count(reason, n)

    def _count(self, reason: str, n: int = 1) -> None:
        self.drops[reason] += n
        self._unreported[reason] += n

    def flush(self, budget_secs: float = EXIT_BUDGET_SECS) -> None:
        """Within ``budget_secs``: deliver the open batch and the backlog, and have the
        daemon confirm everything sent so far. What cannot be sent is spooled; what was
        sent but not confirmed stays for a later confirmation (a daemon that is merely
        busy will get it; at exit, close() spools it).

        The lock is let go while waiting for the daemon, so other threads' emits never
        wait for it (close(), at exit, holds it throughout: nothing may slip between)."""
        try:
            if self._lock._is_owned():  # a signal handler: the interrupted call goes on
                return
            end = _monotonic() + budget_secs
            with self._lock:
                if not self._ship_open():
                    return
                self._drain()
            # Only a connected daemon is waited for (none: the backlog is spooled at once).
            while self._backlog and self._sock is not None and _monotonic() < end:
                time.sleep(BACKLOG_WAIT_SECS)  # the socket is the lock's: no poll out here
                with self._lock:
                    self._drain()
            self._confirm(end, final=False)
            with self._lock:
                if self._backlog:
                    self._spill()
            if self._deferred:
                self._take_deferred()
        except Exception:
            self.drop("internal_error")

    def _ship_open(self) -> bool:
        """Ship the open batch (with what a signal handler sent); whether the transport
        has started at all (if not, there is nothing more to deliver)."""
        if self._deferred:
            self._undefer()
        if self._batch:
            self._ship()
        return self._started

    def _flush_leaving(self, budget_secs: float) -> None:
        """close()'s flush, lock held throughout: what cannot be confirmed in time is
        spooled (copies) or claimed, and what could not be spooled is reported."""
        if not self._ship_open():
            return
        # Leaving: spooling and teardown come out of the same budget, and against a
        # daemon that is provably gone (nobody holds its lock) nothing is waited for.
        end = _monotonic() + budget_secs
        if self._sock is not None and not self._daemon_alive():
            end = 0.0
        self._drain(self._until(end, final=True))
        if not self._confirm(end, final=True):
            self._spill_copies()
        if self._backlog:
            self._spill()
        if self._unreported:  # what the spool could not take, counted
            self._report(final=True)

    def close(self) -> None:
        """Flush within the exit budget and release the socket. One hold of the lock: an
        event another thread sends meanwhile waits. The next event connects again."""
        self._close(final=False)

    def _at_exit(self) -> None:
        """The atexit hook (and multiprocessing's finalizer in a worker): close, and from
        then on spool every event at once (a later atexit handler's, another thread's):
        nothing would ship it later."""
        self._close(final=True)

    def _close(self, final: bool) -> None:
        sock = ctx = None
        try:
            if self._lock._is_owned():  # a signal handler: the interrupted call goes on,
                return  # and the atexit hook closes
            with self._lock:
                self._flush_leaving(EXIT_BUDGET_SECS)
                self._closed = self._closed or final
                sock, ctx, self._sock, self._ctx = self._sock, self._ctx, None, None
                self._rolling.close()
                self._rolling = RollingConfirm()
                wake = self._shipper
                if wake is not None and not self._armed:
                    wake.release()  # the thread waits to be woken: it wakes, and ends
                self._shipper, self._armed = None, False  # (or ends at its next turn)
                self._started = False  # an event after an explicit close() connects again
        except Exception:
            self.drop("internal_error")
        if sock is not None and ctx is not None:
            sock.close(linger=0)  # everything unconfirmed was spooled or claimed
            ctx.term()

    # -- internals (called with the lock held) ----------------------------------------

    def _ship(self, now: float | None = None) -> None:
        """Send the open batch now, or hold its events back if the daemon cannot take it."""
        frames = self._batch
        self._batch = []
        self._batch_bytes = 0
        self._last_ship = _monotonic() if now is None else now
        sock = self._sock
        if sock is None or self._backlog or self._unreported:
            self._ship_slow(frames)
        else:
            try:
                self._raw_send(
                    sock,
                    self._prefix + self._number(len(frames)) + b"".join(frames),
                    _NOBLOCK,
                    True,
                )
            except self._zmq_error:  # zmq.Again included: the daemon takes no frames now
                self._hold(frames)
                return
            self._sent(frames)
        if self.sent >= self._rolling.next_at:
            self._rolling.step(self)

    def _take_deferred(self) -> None:
        """Take what a signal handler sent while this thread held the lock, just let go
        (the handler ran inside the locked call: its event could only be set aside)."""
        with self._lock:
            self._undefer()

    def _undefer(self) -> None:
        """Take events a signal handler sent into batches (lock held)."""
        deferred = self._deferred
        while deferred:
            frame = deferred.popleft()
            self._batch.append(frame)
            self._batch_bytes += len(frame)
            if len(self._batch) >= BATCH_EVENTS or self._batch_bytes >= BATCH_BYTES:
                self._ship()
        if self._batch and not self._armed:
            self._batch_since = _monotonic()
            self._arm()

    def _number(self, n: int) -> bytes:
        """The batch header after the prefix: the first event's number, the array's."""
        return b"\xcf" + (self.sent + 1).to_bytes(8, "big") + array_header(n)

    def _ship_slow(self, frames: list[bytes]) -> None:
        """Shipping when not connected, holding events back, or owing a drop report."""
        if self._closed:  # after the atexit hook: nothing would ship it later
            self._spool_or_count(frames)
            if self._unreported:
                self._report(final=True)
            return
        if not self._started:
            self._start()
        if self._backlog:
            self._drain()
        if self._backlog or not self._try_send(frames):
            self._hold(frames)
        if self._unreported and _monotonic() >= self._next_report:
            self._report()

    def _arm(self) -> None:
        """Wake the shipper (starting it the first time): it ships the open batch once it
        is BATCH_HOLD_SECS old, and retries a held backlog every RETRY_SECS."""
        if self._closed:  # after the atexit hook nothing would ship it later: spool now
            self._ship()
            return
        self._armed = True
        wake = self._shipper
        if wake is None:
            wake = self._shipper = _thread.allocate_lock()
            wake.acquire()
            _thread.start_new_thread(self._ship_held, (wake,))
        wake.release()

    def _ship_held(self, wake: Any) -> None:
        """The shipper thread: sleeps until woken, waits for the hold, ships what is due.
        It ends when the transport lets it go (close, or a fork: the child's has its own)."""
        while True:
            wake.acquire()
            pause = BATCH_HOLD_SECS
            while True:
                time.sleep(pause)
                with self._lock:
                    if self._shipper is not wake:
                        return
                    try:
                        pause = self._ship_due()
                    except Exception:
                        self._count("internal_error")
                        pause = 0.0
                    if not pause:
                        self._armed = False  # the next held event wakes it again
                        break

    def _ship_due(self) -> float:
        """One turn of the shipper (lock held): ship the batch if it is due, try the
        backlog; how long to wait before the next turn (0: nothing is held)."""
        if self._deferred:
            self._undefer()
        if self._batch and _monotonic() - self._batch_since >= BATCH_HOLD_SECS:
            self._ship()
        if self._backlog:
            self._drain()
        if self._backlog:  # the daemon takes nothing now (down: connects are rate-limited)
            return RETRY_SECS if self._sock is not None else PROBE_INTERVAL_SECS
        return BATCH_HOLD_SECS if self._batch else 0.0

    def _start(self) -> None:
        self._started = True
        self._sock = self._ctx = None
        self._next_probe = 0.0
        if not self._hooked:  # once: a forked child inherits both
            self._hooked = True
            atexit.register(self._at_exit)
            os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child: the parent's socket, queues and counts are the parent's.

        The old context is abandoned, not closed: closing it in the child is unsafe.
        """
        self._lock = _thread.RLock()
        self._sock = self._ctx = None
        self._next_probe = 0.0
        self._rolling = RollingConfirm()  # the parent's socket stays the parent's
        self._shipper, self._armed = None, False  # threads do not survive a fork
        self._batch = []
        self._batch_bytes = 0
        self._backlog.clear()
        self._backlog_bytes = 0
        self._unconfirmed.clear()
        self._unconfirmed_bytes = 0
        # multiprocessing's workers leave by os._exit, where atexit never runs: it calls
        # its own finalizers first, so closing is one of them. A worker's bootstrap
        # clears the finalizers it inherited and then runs its after-fork callbacks:
        # the finalizer is registered from one (already loaded: no import).
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.register_after_fork(self, Transport._in_worker)
        self.drops.clear()
        self._unreported.clear()
        self.client = self.sent = self.stored = 0

    def _in_worker(self) -> None:
        mp_util = sys.modules["multiprocessing.util"]
        mp_util.Finalize(self, Transport._at_exit, args=(self,), exitpriority=10)

    def _connect(self) -> bool:
        now = _monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + PROBE_INTERVAL_SECS
        try:  # another user's folder or socket is never connected to: events are spooled
            # A daemon from before batches has no batches socket: events are spooled, and
            # it stores them from there (it would refuse a batch on its events socket).
            if not check_runtime_dir(self._runtime_dir, BATCHES_SOCKET):
                return False
        except UnsafeRuntimeDir:
            return False
        pid = daemon_pid(self._runtime_dir)
        if pid is None:
            return False
        self._daemon_pid = pid  # the daemon our events go to (see confirmed())
        import zmq

        ctx = zmq.Context(io_threads=1)
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)  # LINGER defaults to forever: exit could hang
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no connected daemon: send raises Again
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.connect(f"ipc://{self._endpoint}")
        self._zmq, self._ctx, self._sock, self._zmq_error = zmq, ctx, sock, zmq.ZMQError
        self._hello_due = self._hello is not None
        # A new connection numbers its events from 1 (a forked child's included).
        self.client = _client_id()
        self._prefix = batch_prefix(self.client)
        self.sent = self.stored = 0
        self._rolling.next_at = CONFIRM_EVERY  # a one-shot process never asks along the way
        # pyzmq's Socket.send is a Python wrapper (routing ids, groups) around the
        # backend's send; calling the backend's directly saves ~0.5 µs a frame.
        base = zmq.backend.Socket
        self._raw_send = base.send if isinstance(sock, base) else type(sock).send
        # In IMMEDIATE mode nothing is taken until the handshake is done (well under a
        # millisecond over ipc): wait for it once, or a first burst waits in the backlog.
        sock.poll(max(1, int(CONNECT_WAIT_SECS * 1000)), zmq.POLLOUT)
        return True

    def _send_frame(self, frame: bytes) -> bool:
        """One frame (the vocabulary or a batch) if the socket takes it now."""
        if self._sock is None and not self._connect():
            return False
        try:
            if self._hello_due:
                self._raw_send(self._sock, self._hello, _NOBLOCK, True)
                self._hello_due = False
            self._raw_send(self._sock, frame, _NOBLOCK, True)
        except self._zmq_error:  # zmq.Again included: the daemon is not taking frames now
            return False
        return True

    def _try_send(self, frames: list[bytes]) -> bool:
        if self._sock is None and not self._connect():
            return False
        if not self._send_frame(self._prefix + self._number(len(frames)) + b"".join(frames)):
            return False
        self._sent(frames)
        return True

    def _sent(self, frames: list[bytes]) -> None:
        """``frames`` were numbered and handed to zmq: keep their copies, within bounds
        (the oldest go first; their numbers are claimed at exit if never confirmed)."""
        self.sent += len(frames)
        copies = self._unconfirmed
        copies.extend(frames)
        self._unconfirmed_bytes += sum(map(len, frames))
        while len(copies) > UNCONFIRMED_MAX or self._unconfirmed_bytes > UNCONFIRMED_MAX_BYTES:
            self._unconfirmed_bytes -= len(copies.popleft())

    def _drain(self, deadline: float = 0.0) -> None:
        """Send the backlog in batches while it goes; with a deadline, wait for the socket."""
        backlog = self._backlog
        while backlog:
            frames: list[bytes] = []
            size = 0
            for frame in backlog:
                frames.append(frame)
                size += len(frame)
                if len(frames) >= BATCH_EVENTS or size >= BATCH_BYTES:
                    break
            if self._try_send(frames):
                for _ in frames:
                    backlog.popleft()
                self._backlog_bytes -= size
                continue
            if not self._wait_writable(deadline):
                return

    def _wait_writable(self, deadline: float) -> bool:
        left = deadline - _monotonic()
        if left <= 0 or self._sock is None:
            return False
        self._sock.poll(max(1, int(min(left, 0.02) * 1000)), self._zmq.POLLOUT)
        return True

    def _daemon_alive(self) -> bool:
        """Whether a daemon holds the lock in our runtime folder (a killed one does not)."""
        try:
            return daemon_pid(self._runtime_dir) is not None
        except OSError:
            return True  # cannot tell: wait for it as before

    def _until(self, end: float, final: bool) -> float:
        """How long to wait for the daemon when everything must be done by ``end``: when
        leaving, what spooling the events still held would take is kept back (it shrinks
        as the daemon confirms)."""
        if not final:
            return end
        held = len(self._unconfirmed) + len(self._backlog)
        return end - TEARDOWN_RESERVE_SECS - SPOOL_SECS_PER_EVENT * held

    def _confirm(self, end: float, final: bool) -> bool:
        """Have the daemon write and confirm every event sent so far; whether it did.

        Each question is asked on a control socket of its own, so flush() asks without
        the lock and applies each answer with it, if still about this connection (close()
        holds the lock throughout: re-entering it here costs nothing)."""
        from rkd.client.control import DaemonUnavailable, request

        while True:
            with self._lock:
                if self.stored >= self.sent:
                    return True
                if self._sock is None or self._ctx is None:
                    return False
                client, ctx = self.client, self._ctx
                ask = ConfirmRequest(client=client, upto=self.sent, flush=True)
                left = self._until(end, final) - _monotonic()
            if left <= 0:
                return False
            try:
                reply = request(self._runtime_dir, ask, timeout_ms=max(1, int(left * 1000)),
                                ctx=ctx)  # fmt: skip
            except DaemonUnavailable:
                return False
            if not reply.ok:  # a daemon that does not know the question: spool the copies
                return False
            with self._lock:
                if self.client != client or not self.confirmed(reply.pid, reply.stored):
                    return False
                if self.stored >= ask.upto:
                    return self.stored >= self.sent
                pause = min(0.005, max(0.0, self._until(end, final) - _monotonic()))
            time.sleep(pause)

    def confirmed(self, pid: int, stored: int) -> bool:
        """The daemon ``pid`` has this connection's events up to number ``stored``.

        If that is not the daemon our events went to (it was killed and another one
        started), events the first one held may be lost: their copies are spooled (the
        new daemon stores those it does not have, once) and False is returned.
        """
        if pid and pid != self._daemon_pid:
            known, self._daemon_pid = self._daemon_pid, pid
            if known > 0:  # (not a pid we could read at connect: nothing to compare)
                self._spill_copies()
                return False
        if stored > self.stored:
            self.release_copies(min(stored, self.sent))
        return True

    def release_copies(self, mark: int) -> None:
        """Events up to number ``mark`` are confirmed: drop their copies.

        The copies are of the last ``len(_unconfirmed)`` events sent, so the oldest one
        is number ``sent - len(_unconfirmed) + 1``.
        """
        copies = self._unconfirmed
        for _ in range(mark - (self.sent - len(copies))):
            self._unconfirmed_bytes -= len(copies.popleft())
        self.stored = max(self.stored, mark)

    def _hold(self, frames: list[bytes]) -> None:
        self._backlog.extend(frames)
        self._backlog_bytes += sum(map(len, frames))
        if len(self._backlog) >= BACKLOG_MAX or self._backlog_bytes >= BACKLOG_MAX_BYTES:
            self._spill()
        elif not self._armed:
            self._arm()  # the shipper tries again soon, if no event comes first

    def _spill(self) -> None:
        """Spool the backlog; what does not fit is lost and counted as ``spool_full``."""
        frames = list(self._backlog)
        self._backlog.clear()
        self._backlog_bytes = 0
        self._spool_or_count(frames)

    def _spool_or_count(self, frames: list[bytes]) -> None:
        written = self._spool(frames)
        if written < len(frames):
            self._count("spool_full", len(frames) - written)

    def _spill_copies(self) -> None:
        """Spool copies of sent-but-unconfirmed events (the daemon drops those it has).

        Numbers that are neither confirmed nor spooled (a copy the spool could not take,
        or one that was let go beyond UNCONFIRMED_MAX) are claimed in the drops file: the
        daemon may have them; it counts as lost the ones it does not.
        """
        from rkd.client.dropfile import Claim

        first = self.sent - len(self._unconfirmed) + 1  # the oldest copy's number
        frames = list(self._unconfirmed)
        self._unconfirmed.clear()
        self._unconfirmed_bytes = 0
        claims: list[Claim] = []
        if first > self.stored + 1:
            claims.append(Claim(self.client, self.stored + 1, first - 1, "unconfirmed"))
        written = self._spool(frames)
        if written < len(frames):
            claims.append(Claim(self.client, first + written, self.sent, "unconfirmed"))
        self.stored = self.sent
        if claims:
            self._claim(claims)

    def _claim(self, claims: list[Claim]) -> None:
        from rkd.client.dropfile import add_drops

        if not add_drops(self._spool_dir, {}, claims):  # nowhere to say it: this process knows
            self.drops["unconfirmed"] += sum(c.last - c.first + 1 for c in claims)

    def _spool(self, frames: list[bytes]) -> int:
        from rkd.client.spool import write_spool  # only when something must be spooled

        try:
            written = write_spool(self._spool_dir, frames)
        except OSError:
            written = 0
        self.spooled += written
        return written

    def _report(self, final: bool = False) -> None:
        """Tell the daemon what was lost, in the drops file beside the spool (the daemon
        reads it on its next scan): never in a frame, which could itself be lost with
        the process (queued behind a frozen daemon's full socket). At most every
        REPORT_INTERVAL_SECS, and at exit."""
        from rkd.client.dropfile import add_drops

        self._next_report = _monotonic() + REPORT_INTERVAL_SECS
        drops = dict(self._unreported)
        self._unreported.clear()
        if not add_drops(self._spool_dir, drops) and not final:
            self._unreported.update(drops)  # tried again at the next report
