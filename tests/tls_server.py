"""A small, real TLS ingestion server for the daemon's sync tests, on 127.0.0.1.

It speaks the protocol of ``rkd.client.cloud``: checks the signature, decodes the
batch with the shared schema, and counts each batch id once (as the real server must).
What it answers is scripted per request: ``"ok"``, an HTTP status, ``("retry_after",
secs)``, ``("sleep", secs)`` before answering, or ``"die"`` (close the connection after
reading half the body). A test CA and a certificate for 127.0.0.1 are made per test.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rkd.client import cloud

KEY_ID = "test-key-1"
SECRET = "5ec7e7" + "ab" * 29


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    pin: str  # base64 SHA-256 of the server certificate's SubjectPublicKeyInfo
    der: bytes


def make_certs(folder: Path, host: str = "127.0.0.1") -> Certs:
    """A throwaway CA and a server certificate for ``host`` signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rkd test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    paths = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key", "", b"")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))  # fmt: skip
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    paths.pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    paths.der = cert.public_bytes(serialization.Encoding.DER)
    return paths


@dataclass
class Received:
    batch_id: str
    events: list[Any]
    signature_ok: bool
    headers: dict[str, str]


@dataclass
class Server:
    """The running test server: what it received, and the script it follows."""

    port: int = 0
    script: list[Any] = field(default_factory=list)  # one action per request; then "ok"
    requests: list[Received] = field(default_factory=list)  # every request, retries included
    batches: dict[str, Received] = field(default_factory=dict)  # accepted, once per id
    reports: list[tuple[Any, dict[str, str]]] = field(default_factory=list)  # (report, headers)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def events(self) -> list[Any]:
        with self.lock:
            return [e for b in self.batches.values() for e in b.events]

    def wait(self, n: int, timeout: float = 20.0, what: str = "events") -> list[Any]:
        """Wait until ``n`` events were accepted; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"server got {len(self.events())} {what}, wanted {n}")


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            with server.lock:
                action = server.script.pop(0) if server.script else "ok"
            length = int(self.headers.get("Content-Length", "0"))
            if action == "die":
                self.rfile.read(length // 2)
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = self.rfile.read(length)
            h = {k: v for k, v in self.headers.items()}
            if self.path == cloud.REPORTS_PATH:
                from rkd.client.report import decode_report

                report = decode_report(gzip.decompress(body))
                with server.lock:
                    server.reports.append((report, h))
                server.arrived.set()
                self._answer(202, b'{"accepted": 1}')
                return
            ok = cloud.signature_ok(
                bytes.fromhex(SECRET), h.get(cloud.H_SIGNATURE, ""), "POST", self.path,
                h.get(cloud.H_TIMESTAMP, ""), h.get(cloud.H_NONCE, ""),
                h.get(cloud.H_BATCH_ID, ""), body,
            )  # fmt: skip
            batch = cloud.decode_batch(gzip.decompress(body))
            rec = Received(batch.batch_id, [msgspec.to_builtins(e) for e in batch.events], ok, h)
            with server.lock:
                server.requests.append(rec)
            server.arrived.set()
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(action[1])
                action = "ok"
            if not ok:
                self._answer(401, b'{"error": "bad signature"}')
            elif action == "ok":
                with server.lock:
                    dup = batch.batch_id in server.batches
                    server.batches.setdefault(batch.batch_id, rec)
                n = len(batch.events)
                answer = {
                    "accepted": 0 if dup else n,
                    "duplicates": n if dup else 0,
                    "rejected": {},
                }
                self._answer(202, msgspec.json.encode(answer))
            elif isinstance(action, tuple) and action[0] == "retry_after":
                self._answer(429, b'{"error": "slow down"}', {"Retry-After": str(action[1])})
            else:
                self._answer(int(action), b'{"error": "scripted"}')

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients that hang up mid-request (tests do, on purpose) are not errors to print.
    socketserver printed each to sys.stderr from a handler thread that may outlive its
    test, into whatever test captured stderr next: a CliRunner's output, for one."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextlib.contextmanager
def serve(certs: Certs, tls12_only: bool = False, port: int = 0) -> Iterator[Server]:
    """Run a server for the ``with`` block (on ``port``, or a free one)."""
    server = Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert, certs.key)
    if tls12_only:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    httpd = _QuietServer(("127.0.0.1", port), _handler(server))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- the fixtures the sync tests share (import them into a test module to use them) --------


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def server(certs: Certs) -> Iterator[Server]:
    with serve(certs) as srv:
        yield srv
