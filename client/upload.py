"""The upload filter: the one function that makes what may leave the machine.

Whatever rkd uploads (Pro sync batches, community reports) is built from the output of
:func:`upload_filter` and nothing else. Every string the schema holds is kept only if
the product declared it for that field; any other value becomes ``__other__``.
Numbers, booleans and the schema's closed enumerations stay as they are (they cannot
carry anything else); free text does not exist in the schema. An event from a product
other than the vocabulary's is not uploadable at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec
from rkd.client.fields import StringField, set_at, string_fields, values_getter
from rkd.client.schema import BY_EVENT_TYPE, Envelope, Event, Source
from rkd.client.vocabulary import Vocabulary

OTHER: Final = "__other__"


class NotUploadable(ValueError):
    """An event the vocabulary does not cover (another product's)."""


def upload_filter(envelope: Envelope, vocabulary: Vocabulary) -> dict[str, Any]:
    """The envelope as builtins, ready to encode, with every undeclared string replaced
    by ``__other__`` (the local copy is not changed)."""
    source: Source = envelope.source
    if source.product != vocabulary.product:
        raise NotUploadable(f"events of {source.product!r} are not in this vocabulary")
    payload = _declared_only(envelope.payload, vocabulary, "")  # type: ignore[attr-defined]
    source = _declared_only(source, vocabulary, "source.")
    return msgspec.to_builtins(  # type: ignore[no-any-return]
        msgspec.structs.replace(envelope, payload=payload, source=source)
    )


def upload_filter_stored(event: dict[str, Any], vocabulary: Vocabulary) -> dict[str, Any]:
    """:func:`upload_filter` for a stored event held as builtins (``rkd export``'s
    envelope): stored strings may hold the firewall's placeholders ("[EMAIL]"), which
    do not decode as the schema until they are replaced. Every undeclared string is
    replaced, then the result is validated against the schema (which drops any key it
    does not know), so what comes out is exactly what :func:`upload_filter` would make.
    Raises NotUploadable for another product's event or one that does not validate."""
    source = event.get("source")
    if not isinstance(source, dict) or source.get("product") != vocabulary.product:
        raise NotUploadable("not an event of this vocabulary's product")
    payload_type = BY_EVENT_TYPE.get(event.get("event_type"))  # type: ignore[arg-type]
    payload = event.get("payload")
    if payload_type is None or not isinstance(payload, dict):
        raise NotUploadable("not an event of this schema")
    for obj, cls, prefix in ((payload, payload_type, ""), (source, Source, "source.")):
        for f, field in _plan(cls, prefix):
            parent = get_in(obj, f.path[:-1]) if len(f.path) > 1 else obj
            if not isinstance(parent, dict) or parent.get(f.path[-1]) is None:
                continue
            value = parent[f.path[-1]]
            if f.many:
                parent[f.path[-1]] = [_keep(field, v, vocabulary) for v in value]
            else:
                parent[f.path[-1]] = _keep(field, value, vocabulary)
    try:
        valid = msgspec.convert(event, Event)
    except msgspec.ValidationError as e:
        raise NotUploadable(f"does not validate: {e}") from None
    return msgspec.to_builtins(valid)  # type: ignore[no-any-return]


def _keep(field: str, value: Any, vocabulary: Vocabulary) -> Any:
    return value if isinstance(value, str) and vocabulary.declared(field, value) else OTHER


_PLANS: dict[tuple[type, str], tuple[tuple[StringField, str], ...]] = {}
_GETTERS: dict[tuple[type, str], Callable[[Any], tuple[Any, ...]]] = {}


def _plan(cls: type, prefix: str) -> tuple[tuple[StringField, str], ...]:
    """The string fields of a Struct type, each with its vocabulary name (a fixed set
    per type, built once). The source's product is checked whole, not by value."""
    plan = _PLANS.get((cls, prefix))
    if plan is None:
        plan = _PLANS[(cls, prefix)] = tuple(
            (f, prefix + ".".join(f.path))
            for f in string_fields(cls)
            if not (prefix and f.path == ("product",))
        )
    return plan


def values_of(cls: type, prefix: str) -> Callable[[Any], tuple[Any, ...]]:
    """The values of :func:`_plan`'s fields, in one call (fields.values_getter)."""
    getter = _GETTERS.get((cls, prefix))
    if getter is None:
        getter = _GETTERS[(cls, prefix)] = values_getter([f for f, _ in _plan(cls, prefix)])
    return getter


def _declared_only(obj: Any, vocabulary: Vocabulary, prefix: str) -> Any:
    for f, field in _plan(type(obj), prefix):
        value = f.get(obj)
        if value is None:
            continue
        if f.many:
            new: Any = tuple(v if vocabulary.declared(field, v) else OTHER for v in value)
        else:
            new = value if vocabulary.declared(field, value) else OTHER
        if new != value:
            obj = set_at(obj, f.path, new)
    return obj


def undeclared_fields(envelope: Envelope, vocabulary: Vocabulary) -> list[str]:
    """The fields of ``envelope`` holding a value ``vocabulary`` does not declare (what
    :func:`upload_filter` would send as ``__other__``), in schema order."""
    payload, source = envelope.payload, envelope.source  # type: ignore[attr-defined]
    return undeclared_in(payload, "", vocabulary) + undeclared_in(source, "source.", vocabulary)


def undeclared_in(obj: Any, prefix: str, vocabulary: Vocabulary) -> list[str]:
    """:func:`undeclared_fields` of one part of an envelope (its payload, or its source
    with ``prefix`` "source.")."""
    cls = type(obj)
    return undeclared_values(cls, prefix, values_of(cls, prefix)(obj), vocabulary)


def undeclared_values(cls: type, prefix: str, values: tuple[Any, ...],
                      vocabulary: Vocabulary) -> list[str]:  # fmt: skip
    """:func:`undeclared_in` of the ``values`` :func:`values_of` read from a ``cls``."""
    return [
        field
        for (f, field), value in zip(_plan(cls, prefix), values, strict=True)
        if value is not None and _undeclared(field, f.many, value, vocabulary)
    ]


def undeclared_in_builtins(payload_type: type, payload: dict[str, Any],
                           source: dict[str, Any], vocabulary: Vocabulary) -> list[str]:  # fmt: skip
    """:func:`undeclared_fields` for an event held as builtins (a stored row whose
    strings may hold the firewall's placeholders, which do not decode as the schema)."""
    out = []
    for obj, cls, prefix in ((payload, payload_type, ""), (source, Source, "source.")):
        for f, field in _plan(cls, prefix):
            if _undeclared(field, f.many, get_in(obj, f.path), vocabulary):
                out.append(field)
    return out


def get_in(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested dicts, or None where a part is missing."""
    for name in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(name)
    return obj


def _undeclared(field: str, many: bool, value: Any, vocabulary: Vocabulary) -> bool:
    if value is None:
        return False
    if many:
        return not all(vocabulary.declared(field, v) for v in value)
    return not vocabulary.declared(field, value)
