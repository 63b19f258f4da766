"""The vocabularies the daemon knows, by product: what each product may ever upload.

Three sources, in order of precedence:

1. shipped with rkd: ReasonKit's own (``client/reasonkit.toml``) and that of the
   daemon's own events (``client/rkd.toml``);
2. files the user put in ``~/.config/reasonkit/vocabularies/*.toml`` (theirs, not
   group- or world-writable, read at start and on reload);
3. learnt from clients: an application built with ``Telemetry(..., vocabulary=...)``
   sends its file once per connection. Kept in the database, so what the daemon learnt
   outlives it.

A learnt vocabulary comes from another process, so it is checked as any input:
bounded and parsed by :func:`rkd.client.vocabulary.parse_vocabulary` (which also
refuses catch-all patterns), never replacing a shipped or file vocabulary, never an
older version, and at most :data:`MAX_LEARNT` products. A refusal is counted
(``vocabulary.refused.<reason>``) and logged once; the frame is dropped, nothing else
changes. Every event is tagged by the fields whose value its product's vocabulary does
not declare (:meth:`Vocabularies.undeclared`), so ``rkd show`` can point at a typo.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import structlog
from rkd.client.config import Settings
from rkd.client.upload import undeclared_in, undeclared_in_builtins, undeclared_values, values_of
from rkd.client.vocabulary import (
    MAX_BYTES,
    Vocabulary,
    VocabularyError,
    parse_vocabulary,
    reasonkit_vocabulary,
    rkd_vocabulary,
)
from rkd.daemon.pipeline import Rejected

log = structlog.get_logger("rkd.daemon")

MAX_LEARNT: Final = 32  # products learnt from clients
MAX_FILES: Final = 32
NO_VOCABULARY: Final = "*"  # the tag of an event whose product declared nothing
TAG_CACHE_MAX: Final = 4096  # payload strings whose undeclared fields are known


def vocabulary_dir(settings: Settings) -> Path:
    """Where the user puts vocabulary files: beside config.toml."""
    return settings.config_path.parent / "vocabularies"


class Vocabularies:
    """Product -> Vocabulary, with where each came from."""

    def __init__(self, files_dir: Path | None, counters: Counter[str],
                 learnt: Iterable[bytes] = ()) -> None:  # fmt: skip
        self.files_dir = files_dir
        self.counters = counters
        self.fixed: dict[str, Vocabulary] = {}  # shipped and files: never replaced by a client
        self.origin: dict[str, str] = {}
        self.learnt: dict[str, Vocabulary] = {}
        self._digests: dict[str, bytes] = {}  # product -> SHA-256 of what it sent last
        self._logged: set[str] = set()
        self._last_source: tuple[Any, Any, list[str]] = (None, None, [])  # see undeclared()
        self._payload_fields: dict[tuple[Any, type, tuple[Any, ...]], list[str]] = {}
        self.load_fixed()
        for data in learnt:
            try:
                v = parse_vocabulary(data)
            except VocabularyError:
                continue  # an older rkd accepted it; this one would not: forget it
            if v.product not in self.fixed:
                self.learnt[v.product] = v
                self._digests[v.product] = hashlib.sha256(data).digest()
                self.origin[v.product] = "learnt"

    def get(self, product: str) -> Vocabulary | None:
        return self.fixed.get(product) or self.learnt.get(product)

    def all(self) -> dict[str, Vocabulary]:
        return {**self.learnt, **self.fixed}

    def load_fixed(self) -> None:
        """(Re)read the shipped vocabulary and the user's files."""
        fixed = {}
        origin = {}
        for v in (reasonkit_vocabulary(), rkd_vocabulary()):
            fixed[v.product], origin[v.product] = v, "shipped"
        for path, data in self._files():
            try:
                v = parse_vocabulary(data)
            except VocabularyError as e:
                self._refuse("file", f"{path.name}: {e}")
                continue
            if v.product in fixed:
                self._refuse("shadowed", f"{path.name}: {v.product} is declared already")
                continue
            fixed[v.product], origin[v.product] = v, f"file:{path.name}"
        self.fixed = fixed
        self.origin = {**{p: "learnt" for p in self.learnt}, **origin}
        for product in [p for p in self.learnt if p in fixed]:
            del self.learnt[product]

    def _files(self) -> list[tuple[Path, bytes]]:
        if self.files_dir is None:
            return []
        try:
            names = sorted(n for n in os.listdir(self.files_dir) if n.endswith(".toml"))
        except OSError:
            return []
        out = []
        for name in names[:MAX_FILES]:
            path = self.files_dir / name
            try:
                out.append((path, _read_owned(path)))
            except (OSError, VocabularyError) as e:
                self._refuse("file", f"{name}: {e}")
        return out

    def learn(self, data: bytes) -> Vocabulary | None:
        """A client's vocabulary frame: the vocabulary when it is new to the daemon (the
        caller stores it), None when known; raises Rejected (counted by the intake)
        when refused."""
        digest = hashlib.sha256(data).digest()
        if digest in self._digests.values():
            return None  # what this client's product sent before: once per connection
        try:
            v = parse_vocabulary(data)
        except VocabularyError:
            raise Rejected("vocabulary_invalid", counter="vocabulary.refused.invalid") from None
        if v.product in self.fixed:
            raise Rejected("vocabulary_shadowed", counter="vocabulary.refused.shadowed")
        old = self.learnt.get(v.product)
        if old is not None and v.version <= old.version:
            raise Rejected("vocabulary_stale", counter="vocabulary.refused.stale")
        if old is None and len(self.learnt) >= MAX_LEARNT:
            raise Rejected("vocabulary_too_many", counter="vocabulary.refused.too_many")
        self.learnt[v.product] = v
        self._digests[v.product] = digest
        self.origin[v.product] = "learnt"
        self.counters["vocabulary.learnt"] += 1
        log.info("vocabulary_learnt", product=v.product, version=v.version)
        return v

    def undeclared(self, envelope: object) -> str | None:
        """The event's tag: None when every string is declared, else the undeclared
        fields joined by commas, or ``*`` when its product declared nothing."""
        source = envelope.source  # type: ignore[attr-defined]
        v = self.get(source.product)
        if v is None:
            return NO_VOCABULARY
        # One client sends one source, decoded once into one object (pipeline.SplitDecoder):
        # its part of the tag is worked out once per source and vocabulary, not per event.
        last_v, last_source, source_fields = self._last_source
        if last_v is not v or last_source is not source:
            source_fields = undeclared_in(source, "source.", v)
            self._last_source = (v, source, source_fields)
        # Likewise a payload's part, by its type and strings (they recur event after event).
        payload = envelope.payload  # type: ignore[attr-defined]
        cls = type(payload)
        key = (v, cls, values_of(cls, "")(payload))
        payload_fields = self._payload_fields.get(key)
        if payload_fields is None:
            if len(self._payload_fields) >= TAG_CACHE_MAX:
                self._payload_fields.clear()
            payload_fields = self._payload_fields[key] = undeclared_values(cls, "", key[2], v)
        fields = payload_fields + source_fields
        return ",".join(fields) if fields else None

    def undeclared_builtins(self, payload_type: type, payload: dict[str, Any],
                            source: dict[str, Any]) -> str | None:  # fmt: skip
        """:meth:`undeclared` for a stored row held as builtins."""
        v = self.get(source["product"])
        if v is None:
            return NO_VOCABULARY
        fields = undeclared_in_builtins(payload_type, payload, source, v)
        return ",".join(fields) if fields else None

    def _refuse(self, reason: str, detail: str) -> None:
        self.counters[f"vocabulary.refused.{reason}"] += 1
        if detail not in self._logged:
            self._logged.add(detail)
            log.warning("vocabulary_refused", reason=reason, detail=detail)


def _read_owned(path: Path) -> bytes:
    """A vocabulary file's bytes, if it is a regular file of ours that nobody else can
    change (it widens what may leave the machine)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise VocabularyError("not a regular file of yours")
        if st.st_mode & 0o022:
            raise VocabularyError("writable by others")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise VocabularyError(f"larger than {MAX_BYTES} bytes")
    return data
