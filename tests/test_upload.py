"""The declared vocabulary and the upload filter (issue 11): only declared values can
ever be in what leaves the machine."""

from __future__ import annotations

import msgspec
import msgspec.structs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rkd.client import schema as s
from rkd.client.fields import set_at, string_fields
from rkd.client.upload import OTHER, NotUploadable, upload_filter
from rkd.client.vocabulary import VocabularyError, parse_vocabulary, reasonkit_vocabulary

from tests.samples import ALL_TYPES, SOURCE, envelope, sample_payload

VOCAB = reasonkit_vocabulary()
IDENT = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}\Z")


def test_reasonkit_vocabulary_declares_the_models_and_names_it_sends() -> None:
    """The shipped vocabulary keeps the issue's model ids by pattern and the demo's
    commands, tools and versions by name."""
    models = ["claude-3-5-sonnet-20241022", "llama3.1:70b-instruct-q4_K_M",
              "gpt-4o-2024-08-06", "gemini-1.5-pro-002"]  # fmt: skip
    assert all(VOCAB.declared("tokens.model", m) for m in models)
    assert VOCAB.declared("command", "think") and VOCAB.declared("tool_name", "gigathink")
    assert VOCAB.declared("source.version", "1.0.0")
    assert not VOCAB.declared("command", "alice:S3cr3tPassw0rd")
    assert not VOCAB.declared("tokens.model", "my-private-finetune")


def test_declared_values_pass_and_others_become_other() -> None:
    """A command event: declared strings kept, undeclared ones replaced, numbers kept."""
    env = envelope(s.CommandExecuted(
        command="think", subcommand="my-folder-name", thinktool_chain=("gigathink", "secrettool"),
        tokens=s.Tokens(input=1500, model="claude-3-5-sonnet-20241022"),
        execution=s.Execution(duration_ms=2500),
    ))  # fmt: skip
    out = upload_filter(env, VOCAB)
    p = out["payload"]
    assert ("think", OTHER, ["gigathink", OTHER]) == (p["command"], p["subcommand"],
                                                     list(p["thinktool_chain"]))  # fmt: skip
    assert ("claude-3-5-sonnet-20241022", 1500, 2500) == (
        p["tokens"]["model"],
        p["tokens"]["input"],
        p["execution"]["duration_ms"],
    )
    assert out["source"]["product"] == "reasonkit-core"


def test_another_products_events_are_not_uploadable() -> None:
    """An event whose product the vocabulary does not name cannot be uploaded at all."""
    env = envelope(s.HelpViewed(topic="think"), source=msgspec.structs.replace(SOURCE, product="x"))
    with pytest.raises(NotUploadable):
        upload_filter(env, VOCAB)


def _parent(obj: object, path: tuple[str, ...]) -> object:
    for name in path[:-1]:
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_TYPES), st.data())
def test_no_undeclared_string_ever_reaches_the_upload(cls: type, data: st.DataObject) -> None:
    """Any string that is not in the vocabulary, in any string field of any event type
    (source included), never appears in the upload filter's output."""
    payload = sample_payload(cls)
    planted: list[str] = []
    for f in string_fields(cls):
        if len(f.path) > 1 and f.get(payload) is None and _parent(payload, f.path) is None:
            continue  # an optional Struct the sample leaves out
        value = data.draw(IDENT.filter(lambda v, f=f: not VOCAB.declared(".".join(f.path), v)))
        planted.append(value)
        payload = set_at(payload, f.path, (value,) if f.many else value)
    version = data.draw(IDENT.filter(lambda v: not VOCAB.declared("source.version", v)))
    planted.append(version)
    env = envelope(payload, source=msgspec.structs.replace(SOURCE, version=version))
    body = msgspec.json.encode(upload_filter(env, VOCAB)).decode()
    leaked = [v for v in planted if f'"{v}"' in body]
    assert [] == leaked


@pytest.mark.parametrize(("text", "error"), [
    ('version = 1', "vocabulary needs a product name (an identifier)"),
    ('product = "p"\nversion = 0', "vocabulary needs a version (a positive integer)"),
    ('product = "p"\nversion = 1\n[patterns]\nx = ["a+"]', "patterns.x: pattern uses an unbounded '+'"),
    ('product = "p"\nversion = 1\n[patterns]\nx = ["(ab){1,9}"]', "patterns.x: pattern counts a group with {m,n}"),
    ('product = "p"\nversion = 1\n[patterns]\nx = ["(a)\\\\1"]', "patterns.x: pattern uses a back-reference"),
    ('product = "p"\nversion = 1\n[values]\nx = ["two words"]', "values.x: not an identifier (an entry of length 9)"),
    ('product = "p"\nversion = 1\n[values]\nx = "think"', "x: expected a list of strings"),
    ('product = "p"\nversion = 1\n[values]\n"X Y" = []', "values: 'X Y' is not a field name"),
    ('product = "p"\nversion = 1\nvalues = 3', "values must be a table"),
    ("x = " + "[" * 2000 + "]" * 2000, None),
])  # fmt: skip
def test_a_hostile_vocabulary_is_refused_in_one_line(text: str, error: str | None) -> None:
    """Malformed, unbounded or deeply nested vocabularies: one VocabularyError line."""
    with pytest.raises(VocabularyError) as e:
        parse_vocabulary(text.encode())
    assert "\n" not in str(e.value)
    if error is not None:
        assert error == str(e.value)


def test_a_huge_vocabulary_is_refused() -> None:
    """Over 64 KiB, or over 2,000 values for one field: refused."""
    with pytest.raises(VocabularyError, match="larger than"):
        parse_vocabulary(b"#" * 70_000)
    many = ", ".join(f'"v{i}"' for i in range(2001))
    with pytest.raises(VocabularyError, match="more than 2000 entries"):
        parse_vocabulary(f'product = "p"\nversion = 1\n[values]\nx = [{many}]'.encode())


def test_audit_counts_undeclared_values_by_field_never_values(tmp_path: object) -> None:
    """`rkd audit --json` says, per field, how many stored events hold a value the
    vocabulary does not declare (what an upload would send as __other__), and how many
    events are another product's; the values themselves are never printed."""
    import json

    from rkd.daemon.storage import Record, SessionRow, Storage

    from tests.conftest import Sandbox

    assert isinstance(tmp_path, __import__("pathlib").Path)
    sb = Sandbox(tmp_path, tmp_path / "run")
    st = Storage(sb.settings.db_path)
    sess = SessionRow(rowid=None, uuid="s", started_ms=0, last_ms=0, events=0)
    events = [
        envelope(s.CommandExecuted(command="think", subcommand="zzprivatefolder")),
        envelope(s.CommandExecuted(command="zzmytypo", tokens=s.Tokens(model="gpt-4o-2024-08-06"))),
        envelope(
            s.HelpViewed(topic="think"), source=msgspec.structs.replace(SOURCE, product="other")
        ),
    ]
    st.write([Record(e, sess, i, 1_700_000_000_000) for i, e in enumerate(events)], {}, 0)
    st.close()
    proc = sb.rkd("audit", "--json")
    report = json.loads(proc.stdout)["undeclared"]
    assert {"product": "reasonkit-core", "vocabulary_version": 1,
            "events_by_field": {"command": 1, "subcommand": 1}, "other_products": 1} == report  # fmt: skip
    text = sb.rkd("audit").stdout
    assert "zzprivatefolder" not in text and "zzmytypo" not in text and "  subcommand" in text


def test_explain_lists_the_vocabulary_per_field(tmp_path: object) -> None:
    """`rkd explain` says, per field, which values may ever leave the machine."""
    import json

    from tests.conftest import Sandbox

    assert isinstance(tmp_path, __import__("pathlib").Path)
    sb = Sandbox(tmp_path, tmp_path / "run")
    doc = json.loads(sb.rkd("explain", "--json").stdout)["vocabulary"]
    assert ("reasonkit-core", 1) == (doc["product"], doc["version"])
    assert "gigathink" in doc["fields"]["tool_name"]["values"]
    assert "claude-[0-9a-z.-]{1,48}" in doc["fields"]["tokens.model"]["patterns"]
    text = sb.rkd("explain").stdout
    assert "declared vocabulary, version 1. Any other value is sent as __other__." in text
    assert "  tool_name                    bedrock, brutalhonesty, gigathink" in text
