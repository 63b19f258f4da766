"""A product's declared vocabulary: the only string values that may leave the machine.

Pattern matching cannot prove that a command name is not somebody's password; a
declaration can. A product ships one versioned TOML file naming, per field, the values
it sends (``[values]``) and, for open families such as model ids, small anchored
patterns (``[patterns]``); the upload filter (:mod:`rkd.client.upload`) turns every
other value into ``__other__``. ReasonKit's own file ships with rkd
(:func:`reasonkit_vocabulary`).

A vocabulary can come from another process, so it is bounded (size, counts, lengths)
and its patterns are restricted to a syntax that matches in linear time: literals,
character classes, groups, alternation, ``?`` and bounded ``{m,n}`` counts after a
single character or class; no ``*``, ``+``, counted groups or back-references.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

IDENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
MAX_BYTES: Final = 64 * 1024
MAX_VALUES: Final = 2000  # per field
MAX_PATTERNS: Final = 16  # per field
MAX_PATTERN_CHARS: Final = 120
MAX_FIELDS: Final = 64
_FIELD: Final = re.compile(r"[a-z][a-z0-9_]{0,40}(?:\.[a-z][a-z0-9_]{0,40}){0,3}")


class VocabularyError(ValueError):
    """A vocabulary that cannot be used. The message is one line."""


# Values no product has reason to declare by pattern: a pattern matching any of them
# would let names, secrets or addresses through under its field (a catch-all such as
# "[a-z0-9.-]{1,64}" declares everything). Exact values are not probed: declaring
# "home" as a command is a choice, declaring every word is not.
CATCH_ALL_PROBES: Final = (
    "alice", "Bob", "x", "a1", "john.smith", "jdoe42", "S3cr3tPassw0rd", "hunter2",
    "deadbeefdeadbeefdeadbeefdeadbeef", "my-private-project", "10.0.0.1", "192.168.1.20",
    "4011-4923-9875-7086", "db.internal", "runner-x8f2k3-project-1234-concurrent-0",
)  # fmt: skip


def check_pattern(pattern: str) -> None:
    """Raise VocabularyError unless ``pattern`` keeps to the linear-time subset."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise VocabularyError(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    in_class = escaped = False
    previous = ""
    for ch in pattern:
        if escaped:
            if ch.isdigit():
                raise VocabularyError("pattern uses a back-reference")
            escaped, previous = False, "x"
            continue
        if ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch in "*+":
            raise VocabularyError(f"pattern uses an unbounded {ch!r}")
        elif ch == "{" and previous == ")":
            raise VocabularyError("pattern counts a group with {m,n}")
        previous = ch
    try:
        re.compile(pattern)
    except re.error as e:
        raise VocabularyError(f"pattern does not compile: {e}") from None


class Vocabulary:
    """What a product declared: exact values and patterns, per field (a dotted path:
    ``command``, ``tokens.model``, ``source.version``)."""

    def __init__(self, product: str, version: int, values: Mapping[str, frozenset[str]],
                 patterns: Mapping[str, tuple[re.Pattern[str], ...]]) -> None:  # fmt: skip
        self.product, self.version = product, version
        self.values = dict(values)
        self.patterns = dict(patterns)
        self._matched: dict[str, set[str]] = {f: set() for f in self.patterns}

    def declared(self, field: str, value: str) -> bool:
        """Whether ``value`` is declared for ``field`` (a set lookup; a pattern only the
        first time a value is seen)."""
        if value in self.values.get(field, ()):
            return True
        patterns = self.patterns.get(field)
        if not patterns:
            return False
        seen = self._matched[field]
        if value in seen:
            return True
        if any(p.fullmatch(value) for p in patterns):
            if len(seen) < MAX_VALUES:
                seen.add(value)
            return True
        return False

    def fields(self) -> list[str]:
        return sorted({*self.values, *self.patterns})


def parse_vocabulary(data: bytes) -> Vocabulary:
    """A vocabulary from the bytes of its TOML file; VocabularyError (one line) if it
    is too big, malformed, or declares anything that could not be an identifier."""
    if len(data) > MAX_BYTES:
        raise VocabularyError(f"vocabulary larger than {MAX_BYTES} bytes")
    try:
        doc: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        raise VocabularyError(f"vocabulary is not valid TOML: {str(e)[:120]}") from None
    product, version = doc.get("product"), doc.get("version")
    if not isinstance(product, str) or not IDENT.fullmatch(product):
        raise VocabularyError("vocabulary needs a product name (an identifier)")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise VocabularyError("vocabulary needs a version (a positive integer)")
    values = {f: frozenset(_strings(f, v, MAX_VALUES)) for f, v in _table(doc, "values")}
    for field, vs in values.items():
        bad = next((v for v in vs if not IDENT.fullmatch(v)), None)
        if bad is not None:
            raise VocabularyError(
                f"values.{field}: not an identifier (an entry of length {len(bad)})"
            )
    patterns: dict[str, tuple[re.Pattern[str], ...]] = {}
    for field, ps in _table(doc, "patterns"):
        strings = _strings(field, ps, MAX_PATTERNS)
        for p in strings:
            try:
                check_pattern(p)
            except VocabularyError as e:
                raise VocabularyError(f"patterns.{field}: {e}") from None
        patterns[field] = tuple(re.compile(p) for p in strings)
        broad = next((p for p in patterns[field] for x in CATCH_ALL_PROBES if p.fullmatch(x)), None)
        if broad is not None:
            raise VocabularyError(f"patterns.{field}: a pattern matches names and secrets alike")
    if len({*values, *patterns}) > MAX_FIELDS:
        raise VocabularyError(f"vocabulary declares more than {MAX_FIELDS} fields")
    return Vocabulary(product, version, values, patterns)


def _table(doc: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise VocabularyError(f"{name} must be a table")
    for field in table:
        if not _FIELD.fullmatch(field.removesuffix("[]")):
            raise VocabularyError(f"{name}: {field[:40]!r} is not a field name")
    return [(f.removesuffix("[]"), v) for f, v in table.items()]


def _strings(field: str, value: Any, limit: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VocabularyError(f"{field}: expected a list of strings")
    if len(value) > limit:
        raise VocabularyError(f"{field}: more than {limit} entries")
    return value


def read_vocabulary_bytes(source: bytes | os.PathLike[str] | Traversable) -> bytes:
    """The bytes of a vocabulary given as bytes, a file path or a package resource
    (``importlib.resources.files(pkg) / "telemetry.toml"``); at most MAX_BYTES read."""
    if isinstance(source, bytes):
        return source
    try:
        if isinstance(source, os.PathLike):
            with open(source, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        else:
            data = source.read_bytes()
    except OSError as e:
        raise VocabularyError(
            f"cannot read the vocabulary: {e.strerror or type(e).__name__}"
        ) from None
    if len(data) > MAX_BYTES:
        raise VocabularyError(f"vocabulary larger than {MAX_BYTES} bytes")
    return data


def vocabulary_frame(source: bytes | os.PathLike[str] | Traversable, product: str) -> bytes:
    """The frame a client sends first on each connection: its vocabulary, checked here
    (parsed, and declaring ``product``) so a mistake shows in the application's tests."""
    import msgspec
    from rkd.client.wire import MAX_FRAME_BYTES, VocabularyFrame

    data = read_vocabulary_bytes(source)
    vocabulary = parse_vocabulary(data)
    if vocabulary.product != product:
        raise VocabularyError(f"the vocabulary is {vocabulary.product!r}'s, not {product!r}'s")
    frame = msgspec.msgpack.encode(VocabularyFrame(data))
    if len(frame) > MAX_FRAME_BYTES:
        raise VocabularyError(f"vocabulary larger than a frame ({MAX_FRAME_BYTES} bytes)")
    return frame


def reasonkit_vocabulary() -> Vocabulary:
    """ReasonKit's own vocabulary, shipped with rkd (what `rkd demo` sends)."""
    return _shipped("reasonkit.toml")


def rkd_vocabulary() -> Vocabulary:
    """The vocabulary of the daemon's own events (product ``rkd``: sessions, crashes)."""
    return _shipped("rkd.toml")


def _shipped(name: str) -> Vocabulary:
    from importlib.resources import files

    return parse_vocabulary(files("rkd.client").joinpath(name).read_bytes())
