"""The keys file: the Pro key ids the server accepts, and their secrets.

A TOML file, mode 0600, one line per key under ``[keys]``: ``k_3f9a... = "<64 hex>"``.
``rkd-server keys add`` appends one (the only time the secret is shown); removing a
line revokes a key (the server reads the file at start and on SIGHUP-free restarts).
The key id authenticates and rate-limits a request; it is never stored with events.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from rkd.client import cloud


class KeysError(ValueError):
    """A keys file that cannot be used; the message never holds a secret."""


def load_keys(path: Path) -> dict[str, bytes]:
    """Key id -> secret. A missing file is no keys (Pro uploads all refused)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    if path.stat().st_mode & 0o077:
        raise KeysError(f"{path} is readable by others: chmod 600 it")
    try:
        table = tomllib.loads(text).get("keys", {})
    except tomllib.TOMLDecodeError:
        raise KeysError(f"{path} is not valid TOML") from None
    keys = {}
    for key_id, secret in table.items():
        if not cloud.KEY_ID.fullmatch(key_id):
            raise KeysError(f"{path}: a key id is 4-64 letters, digits, _ or -")
        if not (isinstance(secret, str) and len(secret) == 64 and _hex(secret)):
            raise KeysError(f"{path}: the secret of {key_id} is not 64 hex digits")
        keys[key_id] = bytes.fromhex(secret)
    return keys


def add_key(path: Path) -> tuple[str, str]:
    """A new key appended to the file (created 0600): its id and secret (hex)."""
    key_id, secret = f"k_{secrets.token_hex(8)}", secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("# rkd-server keys: key id = secret (hex). Keep this file 0600.\n[keys]\n")
        f.write(f'{key_id} = "{secret}"\n')
    return key_id, secret


def _hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
