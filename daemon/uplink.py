"""The only code in rkd that opens a network connection: HTTPS to the ingestion server.

TLS 1.3 is the floor (a server that offers only 1.2 is refused), certificates are
verified against the system's CAs or a configured CA file, and optionally pinned: the
SHA-256 of the server certificate's SubjectPublicKeyInfo must be one of the configured
pins. Pro requests are signed (``rkd.client.cloud.sign``). Connect timeout 10 s, 30 s
for each read or write after that.

:func:`deliver` is one round of the retry policy (spec §4.4): up to 3 tries with
full-jitter exponential backoff from 100 ms to 10 s; a 429 waits for its Retry-After;
a 4xx other than 408/429 is final (the batch is quarantined, never retried in a loop).
It runs on the sync worker thread, never on the daemon's event loop, and stops before
the next try as soon as sync is switched off.
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from typing import Final, NamedTuple, TypeVar
from urllib.parse import urlsplit

import msgspec
from rkd.client import cloud

T = TypeVar("T")
CONNECT_TIMEOUT_SECS: Final = 10.0
REQUEST_TIMEOUT_SECS: Final = 30.0
TRIES_PER_ROUND: Final = 3
BACKOFF_INITIAL_SECS: Final = 0.1
BACKOFF_MAX_SECS: Final = 10.0
MAX_RETRY_AFTER_SECS: Final = 3600.0
MAX_ANSWER_BYTES: Final = 64 * 1024


class PinMismatch(ssl.SSLError):
    """The server's key is not one of the pinned ones."""


class SyncKey(NamedTuple):
    key_id: str
    secret: bytes


class Outcome(NamedTuple):
    """How a round ended: ``ok`` (202), ``retry`` (next round), ``wait`` (429: not before
    ``retry_after`` seconds), ``quarantine`` (a final 4xx), ``split`` (413: smaller
    batches), ``stopped`` (sync was switched off meanwhile)."""

    kind: str
    status: int | None
    detail: str  # one line, never a secret or a value from the batch
    attempts: int
    retry_after: float = 0.0
    raw: bytes = b""  # the answer's body: see :meth:`body`

    def body(self, t: type[T]) -> T | None:
        """The answer's body as ``t`` (JSON or MessagePack), or None if it is not one."""
        return _decode(self.raw, t)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on, hostnames checked, TLS 1.3 and nothing older."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


# -- pinning: the SubjectPublicKeyInfo of a DER certificate ------------------------------


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``at``."""
    tag = der[at]
    length = der[at + 1]
    at += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(der[at : at + n], "big")
        at += n
    if at + length > len(der):
        raise ValueError("DER element runs past the end")
    return tag, at, at + length


def spki_of(der_cert: bytes) -> bytes:
    """The SubjectPublicKeyInfo element (whole, as DER) of an X.509 certificate:
    Certificate -> tbsCertificate -> [0] version? serial, signature, issuer, validity,
    subject, subjectPublicKeyInfo (RFC 5280 §4.1)."""
    tag, start, _ = _tlv(der_cert, 0)  # Certificate SEQUENCE
    tag, at, end = _tlv(der_cert, start)  # tbsCertificate SEQUENCE
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, _, nxt = _tlv(der_cert, at)
    if tag == 0xA0:  # explicit version
        at = nxt
    for _ in range(5):  # serial, signature, issuer, validity, subject
        _, _, at = _tlv(der_cert, at)
    tag, _, spki_end = _tlv(der_cert, at)
    if tag != 0x30 or spki_end > end:
        raise ValueError("no subjectPublicKeyInfo")
    return der_cert[at:spki_end]


def spki_pin(der_cert: bytes) -> str:
    """The pin of a certificate: base64 of SHA-256 over its SubjectPublicKeyInfo."""
    return base64.b64encode(hashlib.sha256(spki_of(der_cert)).digest()).decode()


# -- one request ---------------------------------------------------------------------------


class Uplink:
    """Posts bodies to one endpoint; a new connection per request (a round sends one
    batch every few minutes: keeping a connection open would only keep a socket open)."""

    def __init__(self, endpoint: str, ctx: ssl.SSLContext, pins: tuple[str, ...] = (),
                 key: SyncKey | None = None) -> None:  # fmt: skip
        url = urlsplit(endpoint)
        if url.scheme != "https" or not url.hostname:
            raise ValueError("the sync endpoint must be an https URL")
        self.host, self.port = url.hostname, url.port or 443
        self.base = url.path.rstrip("/")
        self.ctx = ctx
        self.pins = frozenset(p.removeprefix("sha256/") for p in pins)
        self.key = key

    def post(self, path: str, body: bytes, batch_id: str = "", signed: bool = True,
             max_answer: int = MAX_ANSWER_BYTES) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One POST; (status, headers lower-cased, body). Raises OSError (timeouts,
        refused, reset), ssl.SSLError (TLS below 1.3, bad certificate, PinMismatch)."""
        import http.client

        full = self.base + path
        headers = {"Content-Type": cloud.CONTENT_TYPE, "Content-Encoding": "gzip",
                   "User-Agent": "rkd-sync/1"}  # fmt: skip
        if signed and self.key is not None:
            ts, nonce = str(int(time.time())), secrets.token_hex(16)
            headers.update({
                cloud.H_KEY_ID: self.key.key_id, cloud.H_TIMESTAMP: ts, cloud.H_NONCE: nonce,
                cloud.H_BATCH_ID: batch_id,
                cloud.H_SIGNATURE: cloud.sign(self.key.secret, "POST", full, ts, nonce, batch_id, body),
            })  # fmt: skip
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                           timeout=CONNECT_TIMEOUT_SECS)  # fmt: skip
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(REQUEST_TIMEOUT_SECS)
            if self.pins:
                der = conn.sock.getpeercert(binary_form=True)
                if der is None or spki_pin(der) not in self.pins:
                    raise PinMismatch("the server's key is not one of the pinned keys")
            conn.request("POST", full, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read(max_answer)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, answer
        finally:
            conn.close()


# -- one round of the retry policy --------------------------------------------------------


def deliver(uplink: Uplink, path: str, body: bytes, batch_id: str, stop: threading.Event,
            rng: random.Random | None = None, sleep: Callable[[float], bool] | None = None,
            signed: bool = True) -> Outcome:  # fmt: skip
    """Send ``body`` until it is taken or the round's tries are used up."""
    rng = rng or random.Random()
    sleep = sleep or stop.wait  # returns True when sync was switched off meanwhile
    detail, status = "", None
    for attempt in range(1, TRIES_PER_ROUND + 1):
        if stop.is_set():
            return Outcome("stopped", status, "sync was switched off", attempt - 1)
        try:
            status, headers, raw = uplink.post(path, body, batch_id, signed)
        except PinMismatch as e:
            return Outcome("retry", None, f"refused the server: {e}", attempt)
        except ssl.SSLError as e:
            detail = f"TLS: {e.reason or type(e).__name__}"
            status = None
        except (OSError, ValueError) as e:  # http.client's errors are OSError or ValueError
            detail = f"network: {type(e).__name__}"
            status = None
        else:
            out = _answer(status, headers, raw, attempt)
            if out is not None:
                return out
            detail = f"server answered {status}"
        if attempt < TRIES_PER_ROUND:
            cap = min(BACKOFF_MAX_SECS, BACKOFF_INITIAL_SECS * 2 ** (attempt - 1))
            if sleep(rng.uniform(0, cap)):  # full jitter
                return Outcome("stopped", status, "sync was switched off", attempt)
    return Outcome("retry", status, detail, TRIES_PER_ROUND)


def _answer(status: int, headers: dict[str, str], raw: bytes, attempt: int) -> Outcome | None:
    """The outcome a status decides, or None to try again within the round."""
    if status in (200, 202):
        return Outcome("ok", status, "accepted", attempt, raw=raw)
    if status == 429:
        return Outcome("wait", status, "rate limited", attempt, _retry_after(headers))
    if status == 413:
        return Outcome("split", status, "too large", attempt)
    if 400 <= status < 500 and status != 408:
        return Outcome("quarantine", status, f"refused: {_reason(raw) or status}", attempt)
    return None  # 408, 5xx, anything else: try again


def _retry_after(headers: dict[str, str]) -> float:
    try:
        secs = float(headers.get("retry-after", "60"))
    except ValueError:
        secs = 60.0  # an HTTP date, or garbage: a minute
    return min(max(secs, 1.0), MAX_RETRY_AFTER_SECS)


def _reason(raw: bytes) -> str:
    """The server's one-line reason, printable and short."""
    problem = _decode(raw, cloud.Problem)
    if problem is None:
        return ""
    return "".join(c for c in problem.error[:120] if c.isprintable())


def _decode(raw: bytes, t: type[T]) -> T | None:
    """A server answer, JSON or MessagePack; None if it is neither."""
    for decode in (msgspec.json.decode, msgspec.msgpack.decode):
        try:
            return decode(raw, type=t)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return None
