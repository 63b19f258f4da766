"""The server's TLS: 1.3 and nothing older (spec §9.1).

uvicorn's default context accepts TLS 1.2, so the server builds its own here and hands
it to uvicorn through ``Config(ssl_context_factory=...)``.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cert, key)
    return ctx
