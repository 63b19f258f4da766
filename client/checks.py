"""Cheap local checks of the values an application hands to `Telemetry`.

msgspec validates on decode, in the daemon, so an event the schema rejects would reach
the daemon and vanish there without the application knowing. These checks apply the
schema's own rules (:data:`rkd.client.schema.Ident`, ``Version``, ``Tier``) where the
client can afford them: the constant constructor arguments once, and the identifiers
the typed helpers take (``command(name)``, ``feature(feature_id)``...) through
:class:`Seen`, a bounded cache of values already found valid, so the hot path is one set
lookup (the same few names recur). tests/test_app_feedback.py holds them to the schema's
patterns.

Imports nothing: the constructor checks run before the kill switch is even read.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Final

_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_IDENT_CHARS: Final = _ALNUM + "_.:+-"
_DIGITS: Final = "0123456789"
_SUFFIX_CHARS: Final = _ALNUM + ".-+"
# The schema's closed sets (Literal types), without importing it; a test keeps them equal.
TIERS: Final = ("oss", "pro", "trial", "enterprise")
PROFILES: Final = frozenset({"quick", "balanced", "deep", "paranoid"})
ERROR_CATEGORIES: Final = frozenset({
    "api_error", "rate_limited", "timeout", "network_error", "auth_error", "invalid_input",
    "config_error", "io_error", "parse_error", "cancelled", "internal_error", "unknown",
})  # fmt: skip
DISCOVERY_SOURCES: Final = frozenset({"help", "documentation", "error", "upgrade", "organic"})
FEATURE_STAGES: Final = frozenset({"discovered", "first_use", "milestone", "disabled"})
_IDENT_RULE: Final = "letters, digits and _ . : + -; no spaces or slashes"
IDENT_RULE: Final = f"an identifier ({_IDENT_RULE})"
MAX_CHAIN: Final = 32  # ThinkTools in a command's thinktool_chain
CHAIN_RULE: Final = f"at most {MAX_CHAIN} identifiers ({_IDENT_RULE})"
VERSION_RULE: Final = "a version number such as 1.0.0 or 0.12.3-beta.1"
SCHEMA_RULE: Final = "valid for its type in the schema (see `rkd explain`)"
SEEN_MAX: Final = 4096  # distinct valid identifiers remembered; past that, checked each time


def is_ident(value: object) -> bool:
    """The schema's ``Ident``: ``^[A-Za-z0-9][A-Za-z0-9_.:+\\-]*\\Z``, without ``re``.

    (Longer than 64 characters is valid: the daemon's firewall cuts such values.)
    """
    return (
        isinstance(value, str)
        and value != ""
        and value[0] in _ALNUM
        and not value.strip(_IDENT_CHARS)  # every character is one of them
    )


def is_version(value: object) -> bool:
    """The schema's ``Version``: ``^v?[0-9]+(\\.[0-9]+){0,3}([-+][A-Za-z0-9.\\-+]*)?\\Z``."""
    if not isinstance(value, str):
        return False
    core = value[1:] if value.startswith("v") else value
    cut = min((i for i in (core.find("-"), core.find("+")) if i >= 0), default=len(core))
    parts = core[:cut].split(".")
    return (
        len(parts) <= 4
        and all(p and not p.strip(_DIGITS) for p in parts)
        and not core[cut + 1 :].strip(_SUFFIX_CHARS)
    )


def check_constants(product: object, version: object, tier: object) -> None:
    """Raise for constructor arguments that can never make a valid event.

    These are constants of the application, so a bad one is a programmer error: it
    raises at once, on every machine, whether telemetry is on or not (were it only
    a silent "disabled", it would pass every test and never send a thing).
    """
    for name, value, ok, rule in (
        ("product", product, is_ident(product), IDENT_RULE + ", e.g. reasonkit-core"),
        ("version", version, is_version(version), VERSION_RULE),
        ("tier", tier, tier in TIERS, "one of " + ", ".join(TIERS)),
    ):
        if not isinstance(value, str):
            raise TypeError(f"Telemetry({name}=...) must be a str, not {type(value).__name__}")
        if not ok:
            raise ValueError(f"Telemetry({name}={value!r}): {name} must be {rule}")


class Seen:
    """Identifiers already found valid: a set lookup for the values that recur.

    Bounded (``SEEN_MAX``): an application inventing names stays correct, only slower.
    Invalid values are never kept (they may be text the application should not send).
    """

    __slots__ = ("combos", "ok")

    def __init__(self) -> None:
        self.ok: set[str] = set()
        self.combos: set[tuple[object, ...]] = set()  # whole sets of fields found valid

    def ident(self, value: object) -> bool:
        """True when ``value`` is a valid identifier."""
        try:
            if value in self.ok:
                return True
        except TypeError:  # unhashable: certainly not a str
            return False
        if not is_ident(value):
            return False
        if len(self.ok) < SEEN_MAX:
            self.ok.add(value)  # type: ignore[arg-type]  # is_ident: a str
        return True

    def remember(self, combo: tuple[object, ...]) -> None:
        """Keep a combination of values found valid together (a command's fields)."""
        try:
            if len(self.combos) < SEEN_MAX:
                self.combos.add(combo)
        except TypeError:  # unhashable: checked field by field each time
            pass

    def optional(self, value: object) -> bool:
        """True when ``value`` is None or a valid identifier."""
        return value is None or self.ident(value)

    def chain(self, value: tuple[object, ...]) -> bool:
        """True for a ThinkTool chain the schema accepts: at most 32 identifiers."""
        return len(value) <= MAX_CHAIN and all(map(self.ident, value))


def schema_violation(payload: object) -> str | None:
    """The path of the field of ``payload`` the daemon's decoder rejects, or None.

    Encodes and decodes it as the daemon does (several µs, and loads msgspec): for debug
    mode and captures, never the hot path. Only the path (``tokens.input``) is kept:
    msgspec's message may quote the value. Raises if the payload does not encode.
    """
    import msgspec

    data = msgspec.msgpack.encode(payload)
    try:
        msgspec.msgpack.decode(data, type=type(payload))
    except msgspec.ValidationError as e:
        _, sep, path = str(e).rpartition(" - at `$")
        path = path.rstrip("`").lstrip(".")
        return path if sep and path else "payload"
    return None


def member(value: object, allowed: frozenset[str]) -> bool:
    """``value in allowed``, False for an unhashable value instead of a TypeError."""
    try:
        return value in allowed
    except TypeError:
        return False
