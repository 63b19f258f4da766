"""Getting frames from an application to the daemon without ever blocking or raising.

Each frame is sent with ``NOBLOCK`` on a PUSH socket in ``IMMEDIATE`` mode, so a send
only succeeds when a live daemon is connected. Whatever cannot be sent right now waits in
a bounded in-memory backlog that later sends drain; a full backlog is written to the
on-disk spool, and at exit the backlog gets at most ``EXIT_BUDGET_SECS`` to reach the
daemon before the rest is spooled. The daemon ingests the spool exactly once. Events are
only dropped (and counted by reason) when the spool is full or a frame is unusable.

zmq is imported and its context created on the first frame, never at import, and
rebuilt in a forked child (which also forgets the parent's backlog: the parent sends it).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
from rkd.client.control import daemon_pid
from rkd.client.spool import write_spool
from rkd.client.wire import EVENTS_SOCKET, ClientReport

if TYPE_CHECKING:
    import zmq

BACKLOG_MAX: Final = 1000  # frames held in memory before spilling to the spool
EXIT_BUDGET_SECS: Final = 0.2  # the most telemetry may add to a process's exit
PROBE_INTERVAL_SECS: Final = 2.0  # how often to look for a daemon that was down
REPORT_INTERVAL_SECS: Final = 10.0
SNDHWM: Final = 10_000


class Transport:
    """Delivers encoded frames to the daemon; thread-safe, fork-aware, never raises."""

    def __init__(self, runtime_dir: Path, spool_dir: Path) -> None:
        self._endpoint = runtime_dir / EVENTS_SOCKET
        self._runtime_dir = runtime_dir
        self._spool_dir = spool_dir
        self._lock = threading.Lock()
        self._pid = -1
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None
        self._backlog: deque[bytes] = deque()
        self._next_probe = 0.0
        self._next_report = 0.0
        self.drops: Counter[str] = Counter()  # every drop, by reason, for this process
        self._unreported: Counter[str] = Counter()
        self.sent = 0
        self.spooled = 0

    # -- public ----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the daemon. Never blocks on the network, never raises."""
        try:
            with self._lock:
                if self._pid != os.getpid():
                    self._start()
                if self._backlog:
                    self._drain()
                if self._backlog or not self._try_send(frame):
                    self._hold(frame)
                if self._unreported and time.monotonic() >= self._next_report:
                    self._report()
        except Exception:  # a bug here must not reach the application
            self.drop("internal_error")

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` frames lost for ``reason``; reported to the daemon later."""
        self.drops[reason] += n
        self._unreported[reason] += n

    def flush(self, budget_secs: float = EXIT_BUDGET_SECS) -> None:
        """Give the backlog up to ``budget_secs`` to reach the daemon, spool the rest."""
        try:
            with self._lock:
                if self._pid != os.getpid():
                    return
                deadline = time.monotonic() + budget_secs
                if self._unreported:
                    self._report()
                self._drain(deadline)
                if self._backlog:
                    self._spill()
        except Exception:
            self.drop("internal_error")

    def close(self) -> None:
        """Flush within the exit budget and release the socket (atexit calls this)."""
        start = time.monotonic()
        self.flush()
        with self._lock:
            sock, ctx, self._sock, self._ctx = self._sock, self._ctx, None, None
            self._pid = -1
        if sock is not None and ctx is not None:
            left_ms = max(0, int((EXIT_BUDGET_SECS - (time.monotonic() - start)) * 1000))
            sock.close(linger=left_ms)  # bounded: the default LINGER is forever
            ctx.term()

    # -- internals (called with the lock held) ----------------------------------------

    def _start(self) -> None:
        first = self._pid == -1
        self._pid = os.getpid()
        self._sock = self._ctx = None
        self._next_probe = 0.0
        if first:
            atexit.register(self.close)
            return
        # A forked child: the parent's socket, context, backlog and counts belong to the
        # parent. The old context is abandoned, not closed: closing it here is unsafe.
        self._backlog.clear()
        self.drops.clear()
        self._unreported.clear()

    def _connect(self) -> bool:
        now = time.monotonic()
        if self._sock is not None:
            return True
        if now < self._next_probe:
            return False
        self._next_probe = now + PROBE_INTERVAL_SECS
        if daemon_pid(self._runtime_dir) is None:
            return False
        import zmq

        ctx = zmq.Context(io_threads=1)
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)  # set again, bounded, at close
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no connected daemon: send raises Again
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.connect(f"ipc://{self._endpoint}")
        self._ctx, self._sock = ctx, sock
        return True

    def _try_send(self, frame: bytes) -> bool:
        if self._sock is None and not self._connect():
            return False
        import zmq

        assert self._sock is not None
        try:
            self._sock.send(frame, zmq.NOBLOCK, copy=len(frame) < 4096)
        except zmq.Again:
            return False
        except zmq.ZMQError:
            return False
        self.sent += 1
        return True

    def _drain(self, deadline: float = 0.0) -> None:
        """Send from the backlog while it goes; with a deadline, wait for the socket."""
        while self._backlog:
            if self._try_send(self._backlog[0]):
                self._backlog.popleft()
                continue
            left = deadline - time.monotonic()
            if left <= 0 or self._sock is None:
                return
            import zmq

            self._sock.poll(max(1, int(min(left, 0.02) * 1000)), zmq.POLLOUT)

    def _hold(self, frame: bytes) -> None:
        self._backlog.append(frame)
        if len(self._backlog) >= BACKLOG_MAX:
            self._spill()

    def _spill(self) -> None:
        frames = list(self._backlog)
        self._backlog.clear()
        try:
            written = write_spool(self._spool_dir, frames)
        except OSError:
            written = 0
        self.spooled += written
        if written < len(frames):
            self.drop("spool_full", len(frames) - written)

    def _report(self) -> None:
        self._next_report = time.monotonic() + REPORT_INTERVAL_SECS
        frame = msgspec.msgpack.encode(ClientReport(dict(self._unreported)))
        self._unreported.clear()
        if not self._try_send(frame):
            self._backlog.append(frame)
