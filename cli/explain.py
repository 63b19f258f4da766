"""`rkd explain`: what is collected and why, generated from the schema itself.

Every event type, every field with its type and meaning, the consent category it
belongs to and why that category is collected; the consent levels of spec §1.3 and what
is never collected (§1.2). Nothing here is a hand-kept list of events or fields, so the
explanation cannot drift from what the code accepts.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec.inspect as mi
from rkd.client.schema import CATEGORIES, PAYLOAD_TYPES, SCHEMA_VERSION, Payload

NEVER_COLLECTED: Final = (  # spec §1.2, hard constraints
    ("Query content", "User prompts, questions, input text"),
    ("Response content", "AI responses, generated text"),
    ("API keys", "ANTHROPIC_API_KEY, OPENAI_API_KEY"),
    ("Personal information", "Name, email, phone, address"),
    ("File contents", "Code, documents, data files"),
    ("Network data", "IP addresses, hostnames"),
    ("System identifiers", "MAC address, hardware IDs"),
    ("Credentials", "Passwords, tokens, certificates"),
    ("Geolocation", "GPS, precise location"),
)
CONSENT_LEVELS: Final = {  # spec §1.3: category -> consent level
    "command_usage": "Local", "performance": "Local", "thinktool_usage": "Local",
    "error_types": "Local", "session_metadata": "Local",
}  # fmt: skip
AGGREGATE_SHARING: Final = (
    "Aggregated sharing (daily totals, averages) is a separate opt-in that does not exist "
    "yet; nothing leaves this machine."
)


def type_name(t: mi.Type) -> str:
    """A short readable name for a msgspec type."""
    match t:
        case mi.Metadata(type=inner):
            return type_name(inner)
        case mi.StrType(pattern=p) if p == r"^[0-9a-f]{64}\Z":
            return "sha256"
        case mi.StrType(pattern=p) if p and "v?[0-9]" in p:
            return "version"
        case mi.StrType():
            return "identifier" if t.pattern else "string"
        case mi.LiteralType(values=values):
            return "one of " + "|".join(str(v) for v in values)
        case mi.UnionType(types=types):
            names = [type_name(x) for x in types if not isinstance(x, mi.NoneType)]
            return " or ".join(names) + (" (optional)" if len(names) < len(types) else "")
        case mi.VarTupleType(item_type=item) | mi.ListType(item_type=item):
            return f"list of {type_name(item)}"
        case mi.StructType(cls=cls):
            return cls.__name__
        case mi.IntType():
            return "integer"
        case mi.FloatType():
            return "number"
        case mi.BoolType():
            return "boolean"
        case mi.UUIDType():
            return "uuid"
        case mi.DateTimeType():
            return "timestamp"
    return type(t).__name__.removesuffix("Type").lower()


def summary(doc: str | None) -> str:
    """A docstring's first paragraph as one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _description(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        d = (t.extra_json_schema or {}).get("description")
        return d or _description(t.type)
    if isinstance(t, mi.UnionType):
        return next((d for x in t.types if (d := _description(x))), "")
    if isinstance(t, mi.StructType):
        return summary(t.cls.__doc__)
    return ""


def fields(t: mi.Type, prefix: str = "") -> list[dict[str, str]]:
    """Every field of a Struct type, nested Structs flattened to dotted names."""
    info = t.type if isinstance(t, mi.Metadata) else t
    assert isinstance(info, mi.StructType)
    out = []
    for f in info.fields:
        inner = f.type.type if isinstance(f.type, mi.Metadata) else f.type
        if isinstance(inner, mi.UnionType):
            structs = [x for x in inner.types if isinstance(x, mi.StructType)]
            inner = structs[0] if structs else inner
        name = prefix + f.name
        if isinstance(inner, mi.StructType):
            out += fields(inner, name + ".")
        else:
            out.append(
                {"name": name, "type": type_name(f.type), "description": _description(f.type)}
            )
    return out


def event(cls: type[Payload]) -> dict[str, Any]:
    return {
        "event_type": cls.event_type,
        "family": cls.family,
        "category": cls.category,
        "description": summary(cls.__doc__),
        "fields": fields(mi.type_info(cls)),
    }


def explain(settings: Any = None) -> dict[str, Any]:
    """The whole explanation as plain data (the `--json` output)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "categories": [
            {"name": k, "why": v, "consent_level": CONSENT_LEVELS.get(k, "Local")}
            for k, v in CATEGORIES.items()
        ],
        "aggregate_sharing": AGGREGATE_SHARING,
        "never_collected": [{"category": c, "examples": e} for c, e in NEVER_COLLECTED],
        "envelope": [
            f
            for f in fields(mi.type_info(_envelope_type()))
            if not f["name"].startswith("payload.")
        ],
        "events": [event(cls) for cls in PAYLOAD_TYPES],
        "vocabulary": vocabulary(),
        "other_vocabularies": other_vocabularies(settings) if settings is not None else [],
    }


def other_vocabularies(settings: Any) -> list[dict[str, Any]]:
    """The vocabularies of other products rkd knows here: the user's files and those
    learnt from applications (read-only; nothing when there is no database yet)."""
    import contextlib
    from collections import Counter

    import apsw
    from rkd.daemon.storage import StorageError, reading
    from rkd.daemon.vocabularies import Vocabularies, vocabulary_dir

    learnt: list[bytes] = []
    # A damaged or older database (`rkd status` says so): nothing learnt; explain goes on.
    with contextlib.suppress(StorageError, apsw.Error), reading(settings.db_path) as db:
        if db is not None:
            learnt = [bytes(b) for (b,) in db.execute("SELECT body FROM vocabularies")]
    known = Vocabularies(vocabulary_dir(settings), Counter(), learnt)
    return [{**vocabulary(v), "origin": known.origin.get(p, "learnt")}
            for p, v in sorted(known.all().items()) if known.origin.get(p) != "shipped"]  # fmt: skip


def vocabulary(v: Any = None) -> dict[str, Any]:
    """A declared vocabulary (ReasonKit's by default): per field, what may ever be
    uploaded (anything else goes as ``__other__``)."""
    from rkd.client.vocabulary import reasonkit_vocabulary

    v = v or reasonkit_vocabulary()
    return {
        "product": v.product,
        "version": v.version,
        "fields": {
            f: {"values": sorted(v.values.get(f, ())),
                "patterns": [p.pattern for p in v.patterns.get(f, ())]}
            for f in v.fields()
        },
    }  # fmt: skip


def vocabulary_markdown() -> str:
    """The README's "What can leave your machine" table, made from the shipped
    vocabulary files (a test keeps the README equal to it; scripts/readme_vocabulary
    rewrites it)."""
    from rkd.client.vocabulary import reasonkit_vocabulary, rkd_vocabulary

    lines = []
    for v in (reasonkit_vocabulary(), rkd_vocabulary()):
        lines += [f"**{v.product}**, vocabulary version {v.version}:", "",
                  "| field | declared values | declared patterns |", "|---|---|---|"]  # fmt: skip
        for name in v.fields():
            values = ", ".join(f"`{x}`" for x in sorted(v.values.get(name, ())))
            patterns = ", ".join(f"`{p.pattern}`" for p in v.patterns.get(name, ()))
            lines.append(f"| `{name}` | {values} | {patterns.replace('|', '&#124;')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _envelope_type() -> type:
    from rkd.client.schema import ENVELOPES

    return ENVELOPES[PAYLOAD_TYPES[0]]


def render(doc: dict[str, Any]) -> str:
    lines = ["What rkd collects, and why", "===========================", ""]
    lines.append(
        "Nothing is collected until you consent (`rkd enable`); it all stays on this machine."
    )
    lines += ["", "Consent categories (spec §1.3):"]
    lines += [f"  {c['name']:<17} {c['consent_level']:<6} {c['why']}" for c in doc["categories"]]
    lines += ["  " + AGGREGATE_SHARING, "", "Never collected, under any setting (spec §1.2):"]
    lines += [f"  {n['category']:<21} {n['examples']}" for n in doc["never_collected"]]
    lines += ["", "Every event carries (the envelope):"]
    lines += [f"  {f['name']:<24} {f['description']}" for f in doc["envelope"]]
    lines.append("  payload                  the event's own fields, below")
    for e in doc["events"]:
        lines += ["", f"{e['event_type']}  [{e['category']}]  {e['description']}"]
        lines += [
            f"  {f['name']:<28} {f['type']:<22} {f['description']}".rstrip() for f in e["fields"]
        ]
    voc = doc["vocabulary"]
    lines += ["", "What may leave this machine, only with cloud sync or community reports on"
              f" (`rkd sync status`): {voc['product']}'s declared vocabulary, version"
              f" {voc['version']}. Any other value is sent as __other__."]  # fmt: skip
    lines += _fields_text(voc["fields"])
    for other in doc.get("other_vocabularies", []):
        lines += ["", f"{other['product']}'s declared vocabulary, version {other['version']}"
                  f" ({other['origin']}):"]  # fmt: skip
        lines += _fields_text(other["fields"])
    return "\n".join(lines)


def _fields_text(fields: dict[str, Any]) -> list[str]:
    return [f"  {name:<28} {', '.join([*f['values'], *(f'/{p}/' for p in f['patterns'])])}"
            for name, f in fields.items()]  # fmt: skip
