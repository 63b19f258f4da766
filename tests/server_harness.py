"""A real `rkd-server run` for tests and the benchmark: a test CA made here, TLS 1.3 on
127.0.0.1, a keys file, signed requests over stdlib http.client."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rkd.client import cloud

KEY_ID = "k_test0001"
SECRET = bytes(range(32))


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rkd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    root: Path
    port: int
    ca: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def context(self, tls12_only: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if tls12_only:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def connection(self, timeout: float = 30.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(),
                                           timeout=timeout)  # fmt: skip

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        _, _, text = self.request("GET", "/metrics")
        want = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        )
        for line in text.decode().splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(root: Path, *extra: str, keys: dict[str, bytes] | None = None) -> RunningServer:
    """`rkd-server run` with TLS on a free port; waits (30 s at most) for /healthz."""
    ca, cert, key = make_ca(root)
    data = root / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    keys_file = data / "keys.toml"
    lines = "".join(f'{k} = "{s.hex()}"\n' for k, s in (keys or {KEY_ID: SECRET}).items())
    keys_file.write_text("[keys]\n" + lines)
    keys_file.chmod(0o600)
    port = free_port()
    log_path = root / "server.log"
    cmd = [sys.executable, "-c", "from rkd.server.main import main; main()", "run",
           "--data-dir", str(data), "--port", str(port), "--tls-cert", str(cert),
           "--tls-key", str(key), *extra]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    server = RunningServer(root, port, ca, proc, log_path, list(extra))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not answer /healthz within 30 s")


def signed_headers(path: str, body: bytes, batch_id: str, *, key_id: str = KEY_ID,
                   secret: bytes = SECRET, timestamp: int | None = None,
                   nonce: str | None = None) -> dict[str, str]:  # fmt: skip
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    return {
        "Content-Type": cloud.CONTENT_TYPE, "Content-Encoding": "gzip",
        cloud.H_KEY_ID: key_id, cloud.H_TIMESTAMP: ts, cloud.H_NONCE: nonce,
        cloud.H_BATCH_ID: batch_id,
        cloud.H_SIGNATURE: cloud.sign(secret, "POST", path, ts, nonce, batch_id, body),
    }  # fmt: skip


def batch_body(events: list[Any], batch_id: str | None = None) -> tuple[str, bytes]:
    batch_id = batch_id or uuid.uuid4().hex
    raw = msgspec.msgpack.encode({"batch_id": batch_id, "events": events})
    return batch_id, gzip.compress(raw, 1)


def post_batch(server: RunningServer, events: list[Any], batch_id: str | None = None,
               **sign: Any) -> tuple[int, dict[str, str], dict[str, Any]]:  # fmt: skip
    batch_id, body = batch_body(events, batch_id)
    status, headers, data = server.request(
        "POST", cloud.EVENTS_PATH, body, signed_headers(cloud.EVENTS_PATH, body, batch_id, **sign)
    )
    return status, headers, json.loads(data)
