"""Talking to a running daemon: is one up, and a request/reply with a deadline."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import msgspec
from rkd.client.wire import CONTROL_SOCKET, LOCK_FILE, ControlRequest, Reply


class DaemonUnavailable(Exception):
    """No daemon answered in time. The message is one line for the user."""


def daemon_pid(runtime_dir: Path) -> int | None:
    """Pid of the daemon holding the lock in ``runtime_dir``, or None if none runs.

    The daemon holds an exclusive ``flock`` for its whole life, so a stale lock file or
    socket left by a killed daemon does not look alive.
    """
    try:
        fd = os.open(runtime_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    except OSError:
        return None
    finally:
        os.close(fd)  # closing also releases the shared lock we may have taken
    return None


def request(
    runtime_dir: Path, req: ControlRequest, timeout_ms: int = 5000, ctx: Any = None
) -> Reply:
    """Send one control request; raise DaemonUnavailable when nobody answers in time."""
    if daemon_pid(runtime_dir) is None:
        raise DaemonUnavailable("the rkd daemon is not running (start it with 'rkd run')")
    import zmq

    if ctx is None:
        ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)  # LINGER defaults to forever: exit could hang
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    try:
        sock.connect(f"ipc://{runtime_dir / CONTROL_SOCKET}")
        sock.send(msgspec.msgpack.encode(req))
        return msgspec.msgpack.decode(sock.recv(), type=Reply)
    except zmq.Again:
        raise DaemonUnavailable(f"the rkd daemon did not answer within {timeout_ms} ms") from None
    except (zmq.ZMQError, msgspec.DecodeError) as e:
        raise DaemonUnavailable(f"cannot talk to the rkd daemon: {e}") from None
    finally:
        sock.close(linger=0)
