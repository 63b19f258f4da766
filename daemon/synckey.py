"""The Pro sync key: a key id and its secret, from ``rkd sync enroll`` or the environment.

Stored in ``<data dir>/sync_key.json`` (0600, a regular file of the user's, replaced
atomically); ``RK_TELEMETRY_SYNC_KEY_ID`` with ``RK_TELEMETRY_SYNC_SECRET`` override it.
The secret never appears in a message, a log line or ``rkd sync status``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec
from rkd.client import cloud
from rkd.client.files import UnsafePath, open_private_file, write_atomic
from rkd.daemon.uplink import SyncKey

KEY_FILE: Final = "sync_key.json"
KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{4,64}")
SECRET: Final = cloud.SECRET_HEX


class SyncKeyError(ValueError):
    """A key that cannot be used; the message never holds the secret."""


class _KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    key_id: str
    secret: str


def check(key_id: str, secret: str) -> SyncKey:
    if not KEY_ID.fullmatch(key_id):
        raise SyncKeyError("the key id must be 4-64 letters, digits, '_' or '-'")
    if not SECRET.fullmatch(secret):
        raise SyncKeyError("the secret must be 64 hex digits (as your Pro account shows it)")
    return SyncKey(key_id, bytes.fromhex(secret))


def read_sync_key(data_dir: Path, env: Mapping[str, str] | None = None) -> SyncKey | None:
    """The key to sign with, or None when not enrolled. SyncKeyError when unusable."""
    env = os.environ if env is None else env
    key_id, secret = (
        env.get("RK_TELEMETRY_SYNC_KEY_ID", ""),
        env.get("RK_TELEMETRY_SYNC_SECRET", ""),
    )
    if key_id or secret:
        if not (key_id and secret):
            raise SyncKeyError("set both RK_TELEMETRY_SYNC_KEY_ID and RK_TELEMETRY_SYNC_SECRET")
        return check(key_id.strip(), secret.strip())
    path = data_dir / KEY_FILE
    try:
        fd = open_private_file(path)
    except FileNotFoundError:
        return None
    except (OSError, UnsafePath) as e:
        raise SyncKeyError(f"{path}: {e}") from None
    try:
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        data = msgspec.json.decode(raw, type=_KeyFile)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise SyncKeyError(f"{path}: not a sync key file (enroll again)") from None
    return check(data.key_id, data.secret)


def write_sync_key(data_dir: Path, key_id: str, secret: str) -> Path:
    check(key_id, secret)
    from rkd.client.files import ensure_private_dir

    ensure_private_dir(data_dir)
    path = data_dir / KEY_FILE
    write_atomic(path, msgspec.json.encode(_KeyFile(key_id, secret)), 0o600)
    return path
