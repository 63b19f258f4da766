"""The server's settings: one frozen value, built once in ``main()`` and passed down."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """Settings that cannot run; one line."""


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    behind_proxy: bool = False  # plain HTTP behind a TLS-terminating proxy
    dsn: str = ""  # default: chdb:///<data_dir>/warehouse
    database: str = "rkd"
    distributed: bool = False  # a cluster: write through the <table>_all Distributed tables
    keys_file: Path | None = None  # default: <data_dir>/keys.toml
    key_rate_per_sec: float = 5.0  # Pro batches per key
    key_burst: float = 20.0
    report_rate_per_sec: float = 200.0  # community reports, all senders
    report_burst: float = 400.0
    bucket_rate_per_sec: float = 20.0  # community reports per coarse bucket
    bucket_burst: float = 100.0
    commit_window_secs: float = 0.02
    body_timeout_secs: float = 30.0  # a request body not all there by then: 408
    max_concurrency: int = 256  # requests at once; beyond, uvicorn answers 503
    vocabulary_files: tuple[Path, ...] = field(default_factory=tuple)
    workers: int = 2  # processes that decode and filter batches (0: in the event loop)

    @property
    def warehouse_dsn(self) -> str:
        return self.dsn or f"chdb://{(self.data_dir / 'warehouse').resolve()}"

    @property
    def keys_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.toml"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def check(self) -> None:
        """Refuse plain HTTP off loopback unless a proxy terminates TLS in front."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if not self.tls and not self.behind_proxy and not _loopback(self.host):
            raise ConfigError(
                "plain HTTP only on loopback: give --tls-cert/--tls-key, or --behind-proxy"
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
