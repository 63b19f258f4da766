"""The privacy firewall stage: every string of every event is scanned before it is kept.

Runs in the daemon on each decoded event, before the pending buffer (so what `rkd show`
shows is already filtered), and is the same function that will check events a last time
before any byte leaves the machine. Layers, in order:

1. the schema's allow-list (undeclared fields never decode; closed enumerations are
   safe by construction and skipped here);
2. the scanner (`rkd.daemon.redact`) over each remaining string, placeholders in place of
   findings; with ``block_sensitive`` any finding drops the whole event;
3. each string cut to its declared maximum length, after scanning the whole of it;
4. ``query_hash`` re-hashed with the per-install salt.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections import Counter
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

import msgspec
from rkd.client.config import PrivacyConfig
from rkd.client.fields import StringField, set_at, string_fields, values_getter
from rkd.client.files import ensure_private_dir, open_private_file, write_atomic
from rkd.client.schema import Envelope, Payload, Source
from rkd.daemon.detectors import DEFAULT_ALLOWED_DOMAINS
from rkd.daemon.pipeline import Rejected
from rkd.daemon.redact import Scanner

SALT_FILE: Final = ".rk_salt"
CLEAN_CACHE_MAX: Final = 50_000  # strings known to hold nothing private; cleared when full


def load_salt(data_dir: Path, rotate: bool = False) -> bytes:
    """The per-install salt (32 random bytes, file 0600), created or rotated on demand.

    The data folder is made private first (a loose one of ours tightened to 0700) and a
    loose salt file tightened to 0600. A symlink, or a folder or file of another user,
    raises UnsafePath (a PermissionError): the salt is never read from, nor written
    through, a path someone else controls.
    """
    path = data_dir / SALT_FILE
    ensure_private_dir(data_dir)
    if not rotate:
        try:
            fd = open_private_file(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        else:
            with open(fd, "rb") as f:
                salt = f.read(33)
            if len(salt) == 32:
                return salt
    salt = secrets.token_bytes(32)
    write_atomic(path, salt)
    return salt


SCAN_MARGIN: Final = 256  # characters scanned past a field's declared maximum length


class Firewall:
    """The stage: ``firewall(envelope)`` returns the filtered envelope or raises Rejected.

    The hot path is a clean event whose strings were all seen before (command, tool and
    model names repeat): a set lookup per string and no allocation. Only strings found
    clean are cached, never one that held a secret.
    """

    def __init__(
        self, privacy: PrivacyConfig, salt: bytes, counters: Counter[str] | None = None
    ) -> None:
        self.scanner = Scanner(
            strip_pii=privacy.strip_pii,
            redact_file_paths=privacy.redact_file_paths,
            allowed_domains=(*DEFAULT_ALLOWED_DOMAINS, *privacy.allowed_domains),
        )
        self.block = privacy.block_sensitive
        self.salt = salt
        self.salt_hashes = True  # False: leave salted fields alone (`rkd audit --fix`)
        self._plans: dict[
            type, tuple[tuple[StringField, ...], Callable[[Any], tuple[Any, ...]]]
        ] = {}
        self._clean: set[str] = set()
        self._clean_sources: set[Source] = set()
        self._clean_values: set[tuple[type, tuple[Any, ...]]] = set()  # see _filter
        self._found: Counter[str] | None = None
        # Findings by category, as "firewall.<category>" (the daemon's counters).
        self.counters: Counter[str] = Counter() if counters is None else counters

    def __call__(self, env: Envelope) -> Envelope:
        self._found = None
        payload = self._filter(env.payload)  # type: ignore[attr-defined]
        source = env.source
        if source not in self._clean_sources:
            source = self._filter(source)
            if source is env.source and self._found is None:
                self._remember(self._clean_sources, source)
        if self._found is not None:
            self._count(self._found)
        if payload is env.payload and source is env.source:  # type: ignore[attr-defined]
            return env
        return msgspec.structs.replace(env, payload=payload, source=source)

    def clean(self, value: str, max_len: int) -> str:
        """One string through the scanner (for `rkd audit --fix`, which holds stored
        rows as builtins); findings wait for :meth:`settle`."""
        return self._string(value, max_len)

    def settle(self) -> None:
        """Count what :meth:`clean` found since the last call; Rejected under
        block_sensitive if it found anything but a cut."""
        found, self._found = self._found, None
        if found is not None:
            self._count(found)

    def _count(self, found: Counter[str]) -> None:
        for category, n in found.items():
            self.counters[f"firewall.{category}"] += n
        if self.block and any(k != "truncated" for k in found):
            raise Rejected("sensitive")

    def _plan(self, cls: type) -> tuple[tuple[StringField, ...], Callable[[Any], tuple[Any, ...]]]:
        plan = self._plans.get(cls)
        if plan is None:
            fields = string_fields(cls)
            plan = self._plans[cls] = (fields, values_getter(fields))
        return plan

    def _filter(self, obj: Payload | Source) -> Any:
        clean = self._clean
        cls = type(obj)
        fields, values = self._plan(cls)
        found = values(obj)
        # The same strings recur event after event (one command, one model, one tool):
        # a type and its strings found clean together are not looked at again.
        key = (cls, found)
        if key in self._clean_values:
            return obj
        original = obj
        for f, value in zip(fields, found, strict=True):
            if value is None or (value in clean and not f.salted):
                continue
            if f.salted:
                if not self.salt_hashes:
                    continue
                new: Any = self._salted(value)
            elif f.many:
                if clean.issuperset(value):  # one C call for the common case
                    continue
                new = tuple(self._string(v, f.max_len) for v in value)
                new = value if new == value else new
            else:
                new = self._string(value, f.max_len)
            if new is not value:
                obj = set_at(obj, f.path, new)
        if obj is original and self.salt_hashes:  # (a salted field always changes)
            self._remember(self._clean_values, key)
        return obj

    def _string(self, value: str, max_len: int) -> str:
        if value in self._clean:
            return value
        if len(value) > max_len + SCAN_MARGIN:
            # Only the first max_len characters are kept; the margin lets a secret that
            # starts inside them still be recognised whole. The scan stays bounded: a
            # 60 KB string cost ~57 ms to scan and stalled the loop.
            value = value[: max_len + SCAN_MARGIN]
        new, hits = self.scanner.redact(value)
        if hits:
            self._found = (self._found or Counter()) + hits
        elif len(value) <= max_len:
            self._remember(self._clean, value)
        if len(new) > max_len:
            self._found = self._found or Counter()
            self._found["truncated"] += 1
            return new[:max_len]
        return value if new == value else new

    @staticmethod
    def _remember(cache: set[Any], value: Any) -> None:
        if len(cache) >= CLEAN_CACHE_MAX:
            cache.clear()
        cache.add(value)

    def _salted(self, hex_digest: str) -> str:
        return hmac.new(self.salt, bytes.fromhex(hex_digest), sha256).hexdigest()
