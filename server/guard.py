"""The checks a request passes before any work, in order: size, gunzip, signature,
skew and replay, rate. Each refuses by raising :class:`Refused` (status, reason), which
the app turns into a counted rejection and a :class:`~rkd.client.cloud.Problem` body.

Reasons are fixed words: nothing from the request (no key id, no value) is ever put in
one, so they are safe in a response, a log line and a metric label.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rkd.client import cloud

NONCE_TTL_SECS: Final = 2 * cloud.MAX_SKEW_SECS  # a nonce older than this fails the skew check
MAX_NONCES: Final = 1_000_000  # ~100 MB at most; beyond it, refuse rather than forget
MAX_BUCKETS: Final = 100_000
NONCES_FILE: Final = "nonces.db"  # in the data folder: nonces outlive a restart
NONCE_SWEEP_EVERY: Final = 1000  # inserts between deletions of expired nonces on disk


class Refused(Exception):
    """A request refused before any work: HTTP ``status`` and a fixed ``reason``."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after


async def read_capped(declared: str | None, chunks: AsyncIterator[bytes], cap: int,
                      timeout_secs: float) -> bytes:  # fmt: skip
    """The body, refused (413) past ``cap`` bytes: by Content-Length before reading,
    and while streaming (a chunked or lying sender); 408 if it has not all arrived
    within ``timeout_secs`` (a slow sender would hold a connection slot and its memory)."""
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad_content_length")
        if int(declared) > cap:
            raise Refused(413, "body_too_large")
    try:
        return await asyncio.wait_for(_read(chunks, cap), timeout_secs)
    except TimeoutError:
        raise Refused(408, "body_timeout") from None


async def _read(chunks: AsyncIterator[bytes], cap: int) -> bytes:
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise Refused(413, "body_too_large")
        parts.append(chunk)
    return b"".join(parts)


def gunzip_capped(body: bytes, cap: int) -> bytes:
    """The gunzipped body, never more than ``cap`` bytes in memory: a zip bomb is
    refused (413) after inflating ``cap + 1`` bytes, not at the end."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, cap + 1)
    except zlib.error:
        raise Refused(400, "bad_gzip") from None
    if len(out) > cap or inflater.unconsumed_tail:
        raise Refused(413, "inflated_too_large")
    if not inflater.eof or inflater.unused_data:
        raise Refused(400, "bad_gzip")
    return out


@dataclass(frozen=True)
class Signed:
    """The signature headers of a request, checked for shape only."""

    key_id: str
    timestamp: str
    nonce: str
    batch_id: str
    signature: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Signed:
        values = [headers.get(h, "") for h in (cloud.H_KEY_ID, cloud.H_TIMESTAMP, cloud.H_NONCE,
                                                cloud.H_BATCH_ID, cloud.H_SIGNATURE)]  # fmt: skip
        signed = cls(*values)
        if not (cloud.KEY_ID.fullmatch(signed.key_id) and signed.timestamp.isdigit()
                and cloud.NONCE.fullmatch(signed.nonce) and len(signed.timestamp) <= 12
                and len(signed.signature) == 64):  # fmt: skip
            raise Refused(401, "bad_signature_headers")
        return signed


class Replay:
    """Nonces seen within the skew window; a second use is refused.

    With ``path`` (the server's data folder) they are also kept in a small SQLite file,
    written before the request goes on and read back at start: a request replayed
    after a restart, within the window, is refused as well. (A sender signs every try
    afresh, so a retry never reuses a nonce.)"""

    def __init__(self, path: Path | None = None) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._db: Any = None
        self._inserts = 0
        if path is None:
            return
        import apsw

        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        try:
            self._db = db = apsw.Connection(str(path))
            # One statement per execute(): apsw runs a multi-statement string only as far
            # as its cursor is read, and journal_mode returns a row.
            for sql in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "CREATE TABLE IF NOT EXISTS nonces(nonce TEXT PRIMARY KEY, at REAL NOT NULL)"
                " WITHOUT ROWID",
            ):
                db.execute(sql).fetchall()
            self._sweep(time.time())
            for nonce, at in db.execute("SELECT nonce, at FROM nonces ORDER BY at LIMIT ?",
                                        (MAX_NONCES,)):  # fmt: skip
                self._seen[nonce] = float(at)
        except (apsw.Error, TypeError, ValueError) as e:
            raise OSError(
                f"{path}: not a usable nonce store ({type(e).__name__}); it holds"
                " only the last 10 minutes' nonces: move it aside"
            ) from None

    def check(self, nonce: str, now: float) -> None:
        while self._seen and next(iter(self._seen.values())) < now - NONCE_TTL_SECS:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise Refused(401, "replay")
        if len(self._seen) >= MAX_NONCES:
            raise Refused(503, "busy", retry_after=5)
        self._seen[nonce] = now
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO nonces VALUES (?, ?)", (nonce, now))
            self._inserts += 1
            if self._inserts % NONCE_SWEEP_EVERY == 0:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._db.execute("DELETE FROM nonces WHERE at < ?", (now - NONCE_TTL_SECS,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def verify(signed: Signed, keys: Mapping[str, bytes], method: str, path: str, body: bytes,
           replay: Replay, now: float) -> None:  # fmt: skip
    """Signature (constant time), then skew, then replay: 401 on any."""
    secret = keys.get(signed.key_id)
    # An unknown key costs the same HMAC as a known one (no timing oracle on key ids).
    ok = cloud.signature_ok(secret or b"\0" * 32, signed.signature, method, path,
                            signed.timestamp, signed.nonce, signed.batch_id, body)  # fmt: skip
    if secret is None or not ok:
        raise Refused(401, "bad_signature")
    if abs(now - int(signed.timestamp)) > cloud.MAX_SKEW_SECS:
        raise Refused(401, "skew")
    replay.check(signed.nonce, now)


@dataclass
class Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets by name: ``rate`` per second, ``burst`` at most. A refused take
    says when one token will be there (Retry-After, whole seconds)."""

    rate: float
    burst: float
    buckets: OrderedDict[str, Bucket] = field(default_factory=OrderedDict)

    def take(self, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        b = self.buckets.pop(name, None) or Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        self.buckets[name] = b  # most recent last; the oldest go first when full
        if len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)
        if b.tokens < 1:
            raise Refused(
                429, "rate_limited", retry_after=max(1, int((1 - b.tokens) / self.rate) + 1)
            )
        b.tokens -= 1
