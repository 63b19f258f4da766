"""The server privacy filter (spec §6.1 "double-check PII"): the last look before a row
is written.

A well-behaved daemon uploads only what its upload filter produced, so on honest
traffic this changes nothing. It is here for the other kind: a modified client, a bug.

- events in rkd's own name, or session boundaries, come only from a user's daemon and
  are never uploaded: a batch holding one is refused whole (:class:`Forged`);
- an event of a product without a vocabulary on this server is dropped and counted;
- every string the schema holds is kept only if the product declared it for that field
  *and* the daemon's scanner finds nothing in it; anything else becomes ``__other__``.
  Undeclared values and scanner findings (by category) are counted.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, get_args

import msgspec
from rkd.client.fields import StringField, set_at, string_fields
from rkd.client.report import CommunityReport
from rkd.client.schema import Envelope, ErrorCategory, Profile, Source
from rkd.client.upload import OTHER
from rkd.client.vocabulary import Vocabulary
from rkd.daemon.redact import Scanner

RKD_PRODUCT: Final = "rkd"
SESSION_TYPES: Final = frozenset(("session_started", "session_ended"))
EARLIEST: Final = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
MAX_FUTURE: Final = dt.timedelta(days=1)
CLEAN_CACHE_MAX: Final = 50_000


class Forged(Exception):
    """A batch that holds an event only a user's daemon writes, and never uploads."""


def daemon_owned(env: Envelope) -> bool:
    payload: Any = env.payload  # type: ignore[attr-defined]
    if payload.event_type in SESSION_TYPES or env.source.product == RKD_PRODUCT:
        return True
    return bool(payload.event_type == "crash_detected" and payload.component == "daemon")


class PrivacyFilter:
    """``filter(envelope)`` -> the envelope with only declared, clean strings, or None
    (dropped). ``counts`` gathers what it did: ``undeclared``, ``pii.<category>``,
    ``dropped.<reason>``."""

    def __init__(self, vocabularies: Mapping[str, Vocabulary]) -> None:
        self.vocabularies = dict(vocabularies)
        self.scanner = Scanner()  # everything on: secrets, PII and paths
        self._plans: dict[type, tuple[StringField, ...]] = {}
        self._clean: set[str] = set()  # values the scanner found nothing in
        self._kept: set[tuple[str, str, str]] = set()  # (product, field, value): clean, declared
        self._kept_sources: set[Source] = set()  # sources kept whole before

    def __call__(self, env: Envelope, now: dt.datetime, counts: Counter[str]) -> Envelope | None:
        if daemon_owned(env):
            raise Forged("daemon_owned")
        vocabulary = self.vocabularies.get(env.source.product)
        if vocabulary is None:
            counts["dropped.undeclared_product"] += 1
            return None
        if not EARLIEST <= env.timestamp <= now + MAX_FUTURE:
            counts["dropped.timestamp"] += 1
            return None
        payload = self._strings(env.payload, vocabulary, "", counts)  # type: ignore[attr-defined]
        source = env.source
        if source not in self._kept_sources:
            source = self._strings(source, vocabulary, "source.", counts)
            if source is env.source:
                _remember(self._kept_sources, source)
        if payload is env.payload and source is env.source:  # type: ignore[attr-defined]
            return env
        return msgspec.structs.replace(env, payload=payload, source=source)

    def _plan(self, cls: type) -> tuple[StringField, ...]:
        plan = self._plans.get(cls)
        if plan is None:
            plan = self._plans[cls] = string_fields(cls)
        return plan

    def _strings(self, obj: Any, vocabulary: Vocabulary, prefix: str, counts: Counter[str]) -> Any:
        for f in self._plan(type(obj)):
            if prefix and f.path == ("product",):
                continue  # the vocabulary was chosen by it
            value = f.get(obj)
            if value is None:
                continue
            field = prefix + ".".join(f.path)
            if f.many:
                new: Any = tuple(
                    self._value(field, v, f.max_len, vocabulary, counts) for v in value
                )
                new = value if new == value else new
            else:
                new = self._value(field, value, f.max_len, vocabulary, counts)
            if new is not value:
                obj = set_at(obj, f.path, new)
        return obj

    def _value(self, field: str, value: str, max_len: int, vocabulary: Vocabulary,
               counts: Counter[str]) -> str:  # fmt: skip
        key = (vocabulary.product, field, value)
        if value == OTHER or key in self._kept:
            return value
        if len(value) > max_len:
            counts["undeclared"] += 1
            counts["too_long"] += 1
            return OTHER
        clean = value in self._clean or self._scan(value, counts)
        declared = vocabulary.declared(field, value)
        if not declared:
            counts["undeclared"] += 1
        elif clean:
            _remember(self._kept, key)
            return value
        return OTHER

    def _scan(self, value: str, counts: Counter[str]) -> bool:
        """Whether the scanner finds nothing in ``value``; findings are counted."""
        _, hits = self.scanner.redact(value)
        for category, n in hits.items():
            counts[f"pii.{category}"] += n
        if hits:
            return False
        _remember(self._clean, value)
        return True


def _remember(cache: set[Any], value: Any) -> None:
    if len(cache) >= CLEAN_CACHE_MAX:
        cache.clear()
    cache.add(value)


# Report dimensions -> the vocabulary field (or closed enumeration) that declares them.
_REPORT_FIELDS: Final = {"command": "command", "thinktool": "tool_name", "feature": "feature_id",
                         "model": "tokens.model"}  # fmt: skip
_CLOSED: Final = {"profile": frozenset(get_args(Profile)),
                  "error_category": frozenset(get_args(ErrorCategory))}  # fmt: skip


def filter_report(report: CommunityReport, vocabulary: Vocabulary,
                  counts: Counter[str]) -> CommunityReport:  # fmt: skip
    """The report with undeclared platform values and count keys folded into
    ``__other__`` (their counts summed there), each one counted as ``undeclared``."""
    changes: dict[str, Any] = {}
    for name in ("os", "arch"):
        value = getattr(report, name)
        if value != OTHER and not vocabulary.declared(f"source.{name}", value):
            counts["undeclared"] += 1
            changes[name] = OTHER
    folded = {d: _fold(d, values, vocabulary, counts) for d, values in report.counts.items()}
    if folded != report.counts:
        changes["counts"] = folded
    return msgspec.structs.replace(report, **changes) if changes else report


def _fold(dimension: str, values: dict[str, int], vocabulary: Vocabulary,
          counts: Counter[str]) -> dict[str, int]:  # fmt: skip
    out: dict[str, int] = {}
    for key, n in values.items():
        closed = _CLOSED.get(dimension)
        field = _REPORT_FIELDS.get(dimension, dimension)
        ok = key in closed if closed is not None else vocabulary.declared(field, key)
        if not ok and key != OTHER:
            counts["undeclared"] += 1
            key = OTHER
        out[key] = out.get(key, 0) + n
    return out
