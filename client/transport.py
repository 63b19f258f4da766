"""Getting frames from an application to the daemon without ever blocking or raising.

Each frame is sent with ``NOBLOCK`` on a PUSH socket in ``IMMEDIATE`` mode, so a send
only succeeds when a live daemon is connected. Whatever cannot be sent right now waits in
a bounded in-memory backlog that later sends drain; a full backlog is written to the
on-disk spool. Events are only dropped (and counted by reason) when the spool is full or
a frame is unusable.

A frame zmq accepted is not yet a frame the daemon has: it may sit in a queue when the
process exits. So at exit, within ``EXIT_BUDGET_SECS``, the client sends a sync token
*on the same connection* (frames on one connection stay in order) and asks the daemon
over the control socket whether it has processed that token. If it has, everything sent
before it is safe; if the daemon does not confirm in time, the client spools copies of
the unconfirmed frames and the daemon, which remembers the ids of recent events, stores
each of them at most once. While the process runs, the same question is asked along the
way without waiting (:mod:`rkd.client.confirm`), so a long-running application keeps only
the copies of the last few thousand frames.

zmq is imported and its context created on the first frame, never at import, and
rebuilt in a forked child (which also forgets the parent's backlog: the parent sends it).

The common case (connected, nothing held back, nothing to report) takes one short path
in :meth:`Transport.send`: a lock, two checks and libzmq's send, ~1 µs.
"""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock; threading itself costs ~1 ms
import atexit
import os
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Final

import msgspec
from rkd.client.confirm import RollingConfirm, sync_report
from rkd.client.control import UnsafeRuntimeDir, check_runtime_dir, daemon_pid
from rkd.client.wire import EVENTS_SOCKET, ClientReport, SyncRequest

if TYPE_CHECKING:
    from pathlib import Path

    import zmq

BACKLOG_MAX: Final = 1000  # frames held in memory before spilling to the spool
EXIT_BUDGET_SECS: Final = 0.2  # the most telemetry may add to a process's exit
TEARDOWN_RESERVE_SECS: Final = 0.04  # of that, kept for spooling the copies and teardown
PROBE_INTERVAL_SECS: Final = 2.0  # how often to look for a daemon that was down
REPORT_INTERVAL_SECS: Final = 10.0
SNDHWM: Final = 10_000
# Copies of sent frames kept until the daemon confirms it has them. Bounds what can be
# in flight: this socket's SNDHWM, the daemon's RCVHWM (10,000) and kernel buffers.
UNCONFIRMED_MAX: Final = 24_000
_NOBLOCK: Final = 1  # zmq.NOBLOCK (ZMQ_DONTWAIT), a plain int: zmq is not imported yet


class Transport:
    """Delivers encoded frames to the daemon; thread-safe, fork-aware, never raises."""

    def __init__(self, runtime_dir: Path, spool_dir: Path, hello: bytes | None = None) -> None:
        self._endpoint = runtime_dir / EVENTS_SOCKET
        # Sent first on every connection (the product's vocabulary frame). Until it went,
        # frames wait in the backlog, so ``send``'s fast path never has to check for it.
        self._hello = hello
        self._hello_due = False
        self._runtime_dir = runtime_dir
        self._spool_dir = spool_dir
        self._lock = _thread.allocate_lock()
        self._started = False
        self._zmq: Any = None
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None
        self._raw_send: Any = None  # libzmq's send for self._sock, without pyzmq's wrapper
        self._zmq_error: type[Exception] = OSError  # zmq.ZMQError once zmq is loaded
        self._backlog: deque[bytes] = deque()
        self._unconfirmed: deque[bytes] = deque(maxlen=UNCONFIRMED_MAX)
        self._next_probe = 0.0
        self._next_report = 0.0
        self.drops: Counter[str] = Counter()  # every drop, by reason, for this process
        self._unreported: Counter[str] = Counter()
        self.sent = 0
        self.spooled = 0
        self._daemon_pid = 0
        self._rolling = RollingConfirm()

    # -- public ----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the daemon. Never blocks on the network, never raises."""
        try:
            with self._lock:
                sock = self._sock
                if sock is None or self._backlog or self._unreported:
                    self._send_slow(frame)
                else:
                    try:
                        self._raw_send(sock, frame, _NOBLOCK, True)  # True: copy (small frames)
                    except self._zmq_error:  # zmq.Again included: the daemon takes no frames
                        self._hold(frame)
                        return
                    self.sent += 1
                    self._unconfirmed.append(frame)
                if self.sent >= self._rolling.next_at:
                    self._rolling.step(self)
        except Exception:  # a bug here must not reach the application
            self.drop("internal_error")

    def _send_slow(self, frame: bytes) -> None:
        """``send`` when not connected, holding frames back, or owing a drop report."""
        if not self._started:
            self._start()
        if self._backlog:
            self._drain()
        if self._backlog or not self._try_send(frame):
            self._hold(frame)
        if self._unreported and time.monotonic() >= self._next_report:
            self._report()

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` frames lost for ``reason``; reported to the daemon later."""
        self.drops[reason] += n
        self._unreported[reason] += n

    def flush(self, budget_secs: float = EXIT_BUDGET_SECS, final: bool = False) -> None:
        """Within ``budget_secs``: deliver the backlog and have the daemon confirm
        everything sent so far. What cannot be sent is spooled; what was sent but not
        confirmed is spooled only when ``final`` (the process is leaving), otherwise it
        stays for a later confirmation: a daemon that is merely busy will get it."""
        try:
            with self._lock:
                if not self._started:
                    return
                # Leaving: spooling and teardown come out of the same budget, and against
                # a daemon that is provably gone (nobody holds its lock) nothing is waited for.
                reserve = TEARDOWN_RESERVE_SECS if final else 0.0
                deadline = time.monotonic() + budget_secs - reserve
                if final and self._sock is not None and not self._daemon_alive():
                    deadline = 0.0
                if self._unreported:
                    self._report()
                self._drain(deadline)
                if not self._confirm(deadline) and final:
                    self._spill_copies()
                if self._backlog:
                    self._spill()
                if final and self._unreported:  # what the spool could not take, counted
                    self._report()
        except Exception:
            self.drop("internal_error")

    def close(self) -> None:
        """Flush within the exit budget and release the socket (atexit calls this)."""
        self.flush(final=True)
        with self._lock:
            sock, ctx, self._sock, self._ctx = self._sock, self._ctx, None, None
            self._started = False
            self._rolling.close()
        if sock is not None and ctx is not None:
            sock.close(linger=0)  # everything unconfirmed was spooled: nothing to wait for
            ctx.term()

    # -- internals (called with the lock held) ----------------------------------------

    def _start(self) -> None:
        self._started = True
        self._sock = self._ctx = None
        self._next_probe = 0.0
        atexit.register(self.close)
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child: the parent's socket, queues and counts are the parent's.

        The old context is abandoned, not closed: closing it in the child is unsafe.
        """
        self._lock = _thread.allocate_lock()
        self._sock = self._ctx = None
        self._next_probe = 0.0
        self._rolling = RollingConfirm()  # the parent's socket stays the parent's
        self._backlog.clear()
        self._unconfirmed.clear()
        self.drops.clear()
        self._unreported.clear()

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + PROBE_INTERVAL_SECS
        try:  # another user's folder or socket is never connected to: frames are spooled
            if not check_runtime_dir(self._runtime_dir, EVENTS_SOCKET):
                return False
        except UnsafeRuntimeDir:
            return False
        pid = daemon_pid(self._runtime_dir)
        if pid is None:
            return False
        self._daemon_pid = pid  # the daemon our frames go to (see confirmed())
        import zmq

        ctx = zmq.Context(io_threads=1)
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)  # LINGER defaults to forever: exit could hang
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no connected daemon: send raises Again
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.connect(f"ipc://{self._endpoint}")
        self._zmq, self._ctx, self._sock, self._zmq_error = zmq, ctx, sock, zmq.ZMQError
        self._hello_due = self._hello is not None
        # pyzmq's Socket.send is a Python wrapper (routing ids, groups) around the
        # backend's send; calling the backend's directly saves ~0.5 µs a frame.
        base = zmq.backend.Socket
        self._raw_send = base.send if isinstance(sock, base) else type(sock).send
        return True

    def _try_send(self, frame: bytes, event: bool = True) -> bool:
        if self._sock is None and not self._connect():
            return False
        try:
            if self._hello_due:
                self._raw_send(self._sock, self._hello, _NOBLOCK, True)
                self._hello_due = False
            self._raw_send(self._sock, frame, _NOBLOCK, True)
        except self._zmq_error:  # zmq.Again included: the daemon is not taking frames now
            return False
        if event:
            self.sent += 1
            self._unconfirmed.append(frame)
        return True

    def _drain(self, deadline: float = 0.0) -> None:
        """Send from the backlog while it goes; with a deadline, wait for the socket."""
        while self._backlog:
            if self._try_send(self._backlog[0]):
                self._backlog.popleft()
                continue
            if not self._wait_writable(deadline):
                return

    def _wait_writable(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0 or self._sock is None:
            return False
        self._sock.poll(max(1, int(min(left, 0.02) * 1000)), self._zmq.POLLOUT)
        return True

    def _daemon_alive(self) -> bool:
        """Whether a daemon holds the lock in our runtime folder (a killed one does not)."""
        from rkd.client.control import daemon_pid

        try:
            return daemon_pid(self._runtime_dir) is not None
        except OSError:
            return True  # cannot tell: wait for it as before

    def _confirm(self, deadline: float) -> bool:
        """Have the daemon confirm every frame sent so far (see the module docstring)."""
        if not self._unconfirmed:
            return True
        if self._sock is None or self._ctx is None:
            return False
        token, report = sync_report()
        while not self._try_send(report, event=False):
            if not self._wait_writable(deadline):
                return False
        from rkd.client.control import DaemonUnavailable, request

        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = request(self._runtime_dir, SyncRequest(token=token),
                                timeout_ms=max(1, int(left * 1000)), ctx=self._ctx)  # fmt: skip
            except DaemonUnavailable:
                return False
            if reply.synced:
                return self.confirmed(reply.pid, self.sent)
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        return False

    def confirmed(self, pid: int, mark: int) -> bool:
        """The daemon ``pid`` has every frame sent before the ``mark``-th.

        If that is not the daemon our frames went to (it was killed and another one
        started), frames the first one held may be lost: their copies are spooled (the
        new daemon stores those it does not have, once) and False is returned.
        """
        if pid and pid != self._daemon_pid:
            known, self._daemon_pid = self._daemon_pid, pid
            if known > 0:  # (not a pid we could read at connect: nothing to compare)
                self._spill_copies()
                return False
        self.release_copies(mark)
        return True

    def release_copies(self, mark: int) -> None:
        """The daemon has every frame sent before the ``mark``-th: drop their copies.

        The copies are the last ``len(_unconfirmed)`` frames sent, so the oldest one is
        number ``sent - len(_unconfirmed)``.
        """
        for _ in range(mark - (self.sent - len(self._unconfirmed))):
            self._unconfirmed.popleft()

    def _hold(self, frame: bytes) -> None:
        self._backlog.append(frame)
        if len(self._backlog) >= BACKLOG_MAX:
            self._spill()

    def _spill(self) -> None:
        """Spool the backlog; what does not fit is lost and counted as ``spool_full``."""
        frames = list(self._backlog)
        self._backlog.clear()
        self._spool(frames, "spool_full")

    def _spill_copies(self) -> None:
        """Spool copies of sent-but-unconfirmed frames (the daemon drops those it has).

        A copy that does not fit is counted as ``unconfirmed``: the daemon may well have
        it, but nothing proves it.
        """
        frames = list(self._unconfirmed)
        self._unconfirmed.clear()
        self._spool(frames, "unconfirmed")

    def _spool(self, frames: list[bytes], reason: str) -> None:
        from rkd.client.spool import write_spool  # only when something must be spooled

        try:
            written = write_spool(self._spool_dir, frames)
        except OSError:
            written = 0
        self.spooled += written
        if written < len(frames):
            self.drop(reason, len(frames) - written)

    def _report(self) -> None:
        """Tell the daemon what was lost: in-band when the socket takes the report now,
        otherwise in the drops file beside the spool (the daemon reads it on its next
        scan), so the count is never held in a frame that could itself be lost."""
        self._next_report = time.monotonic() + REPORT_INTERVAL_SECS
        drops = dict(self._unreported)
        self._unreported.clear()
        frame = msgspec.msgpack.encode(ClientReport(drops))
        if not self._try_send(frame, event=False):
            from rkd.client.dropfile import add_drops

            add_drops(self._spool_dir, drops)  # if even this fails, nothing can be done
