"""What the daemon knows of each client connection: the numbers it took, and wrote.

A client numbers the events it sends on a connection 1, 2, 3... (:class:`rkd.client.wire.Batch`).
The daemon keeps, per connection, the first and the highest number it took from the
socket, and the highest it has *written*: events are numbered in order on one
connection, so everything up to that mark is in the database or was counted as
rejected. That mark is the confirmation (:meth:`ClientLedger.stored`): the client frees
its copies up to it and, if it must leave before the rest is confirmed, spools copies of
exactly the rest.

A number that jumps forward on a known connection is a gap: those events were sent and
never arrived; counted as ``transport.gap``. A client that could neither have its last
events confirmed nor spool them leaves a claim in the drops file
(:mod:`rkd.client.dropfile`); some of those events may still be queued in this daemon
(it was frozen, say), so a claim is settled a little later, once the socket has been
read empty: what was received by then is stored, the rest is counted as
``client_drop.<reason>``. Stored + counted as lost = sent, exactly.

The ledger keeps the most recent :data:`MAX_CLIENTS` connections; a forgotten one's
client learns "stored up to 0", spools its copies, and the daemon stores each once (its
event ids are known). A daemon that stops cleanly leaves the ledger in the database
(:meth:`ClientLedger.dump`) and the next one starts from it (:meth:`ClientLedger.load`),
so a claim made across an upgrade or restart counts only what was never stored. The
saved ledger is removed once loaded: after a crash (SIGKILL) there is none, and the
next daemon starts empty, as before there was one (a claim may then count events the
crashed daemon stored as lost, never the reverse).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from typing import Final

import msgspec
from rkd.client.dropfile import Claim

# The saved ledger: [client, first, written] per connection, oldest first.
_Saved = list[tuple[int, int, int]]
_decode_saved = msgspec.msgpack.Decoder(_Saved).decode

MAX_CLIENTS: Final = 4096
# A jump in a connection's numbers larger than anything a client can have in flight
# (its copies are bounded well below this) is a forged number, not a loss.
MAX_GAP: Final = 1 << 20
MAX_CLAIMS: Final = 4096  # open claims held; more are settled at once
SETTLE_SECS: Final = 2.0  # a claim is settled this long after it was read, socket read empty


class _Conn:
    __slots__ = ("first", "high", "loaded", "written")

    def __init__(self, first: int) -> None:
        self.first = first  # the first number this daemon took (another may have the rest)
        self.high = first - 1  # the highest number taken
        self.written = 0  # the highest number written (0: none yet)
        # From the previous daemon's ledger: numbers sent to it after its last write were
        # lost with its socket, and the client spools their copies when it sees the new
        # pid, so a jump on the first batch after loading is not a gap.
        self.loaded = False


class ClientLedger:
    """Per-connection numbers; all calls come from the daemon's loop."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self._conns: OrderedDict[int, _Conn] = OrderedDict()
        self._taken: set[int] = set()  # connections with numbers taken since the last write
        self._claims: list[tuple[float, Claim]] = []  # (read at, claim), oldest first

    def took(self, client: int, seq: int, n: int) -> None:
        """Events ``seq``..``seq+n-1`` of ``client`` went through the intake."""
        conn = self._conns.get(client)
        if conn is None:
            conn = self._conns[client] = _Conn(seq)
            if len(self._conns) > MAX_CLIENTS:
                self._conns.popitem(last=False)
        else:
            self._conns.move_to_end(client)
            gap = seq - conn.high - 1
            if conn.loaded:
                conn.loaded, gap = False, 0
            if gap > MAX_GAP:
                self.counters["rejected.bad_number"] += 1
            elif gap > 0:
                self.counters["transport.gap"] += gap
        conn.high = max(conn.high, seq + n - 1)
        self._taken.add(client)

    def written(self) -> None:
        """Everything taken so far is in the database (called after each good write)."""
        conns = self._conns
        for client in self._taken:
            conn = conns.get(client)
            if conn is not None:
                conn.written = conn.high
        self._taken.clear()

    def stored(self, client: int) -> int:
        conn = self._conns.get(client)
        return 0 if conn is None else conn.written

    def taken(self, client: int) -> int:
        conn = self._conns.get(client)
        return 0 if conn is None else conn.high

    def unwritten(self, client: int) -> bool:
        conn = self._conns.get(client)
        return conn is not None and conn.high > conn.written

    def dump(self) -> bytes:
        """The connections, for the next daemon: what each had written (numbers taken
        and not written were not stored, so the next daemon counts them from there)."""
        return msgspec.msgpack.encode(
            [(c, conn.first, conn.written) for c, conn in self._conns.items()]
        )

    def load(self, data: object) -> None:
        """Start from a ledger :meth:`dump` made; anything else (none, damaged, hostile)
        is ignored: the ledger starts empty, as it did before there was one to load."""
        if not isinstance(data, bytes):
            return
        try:
            saved = _decode_saved(data)
        except (msgspec.DecodeError, RecursionError):
            return
        for client, first, written in saved[-MAX_CLIENTS:]:
            if 0 < client < 1 << 63 and 0 < first <= written + 1 and written < 1 << 63:
                conn = self._conns[client] = _Conn(first)
                conn.high, conn.written, conn.loaded = written, written, True

    def forget(self) -> None:
        """After `rkd delete`: numbers stay meaningful (clients go on counting), but no
        claim made before the erasure is counted."""
        self._claims.clear()

    # -- claims --------------------------------------------------------------------------

    def claim(self, claims: list[Claim], now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        self._claims.extend((at, c) for c in claims)
        if len(self._claims) > MAX_CLAIMS:
            self.settle(force=True)

    def settle(self, quiet_since: float = 0.0, force: bool = False) -> int:
        """Count the claims read at least SETTLE_SECS before ``quiet_since`` (the last time
        the socket was read empty), or all with ``force``; return how many events."""
        lost = 0
        keep = []
        for at, c in self._claims:
            if not force and at > quiet_since - SETTLE_SECS:
                keep.append((at, c))
                continue
            n = c.last - c.first + 1 - self._received(c)
            if n > 0:
                self.counters[f"client_drop.{c.reason}"] += n
                lost += n
        self._claims = keep
        return lost

    def _received(self, c: Claim) -> int:
        """How many of the claim's numbers this daemon took from the socket."""
        conn = self._conns.get(c.client)
        if conn is None:
            return 0
        return max(0, min(c.last, conn.high) - max(c.first, conn.first) + 1)

    @property
    def open_claims(self) -> int:
        return len(self._claims)
