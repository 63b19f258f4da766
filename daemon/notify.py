"""The systemd notify protocol: one datagram to $NOTIFY_SOCKET, no libsystemd needed.

`Type=notify` units wait for READY=1 before they count as started, and STOPPING=1
tells systemd that the daemon is shutting down on purpose. Without $NOTIFY_SOCKET (not
under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def sd_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. "READY=1") to the service manager; True if it was sent."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False
    return True
