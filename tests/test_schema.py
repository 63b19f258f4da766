"""The event schema: every type round-trips, closed enums and identifiers reject."""

from __future__ import annotations

import msgspec
import pytest
from rkd.client import schema as s
from rkd.daemon.pipeline import Rejected, decode

from tests.samples import ALL_TYPES, SOURCE, envelope, frame, sample_payload

SPEC_TAXONOMY = {  # spec §2.1, every leaf that is an event (install_method is a field)
    "install_started", "install_completed", "install_failed", "update_available",
    "update_completed", "uninstall", "session_started", "session_ended", "session_resumed",
    "command_executed", "command_failed", "command_cancelled", "thinktool_started",
    "thinktool_completed", "thinktool_step_executed", "profile_used", "error_occurred",
    "error_recovered", "crash_detected", "feature_discovered", "feature_first_use",
    "feature_adoption", "help_viewed", "upgrade_prompt_shown", "upgrade_link_clicked",
    "upgrade_completed", "trial_started", "trial_ended",
}  # fmt: skip


def test_schema_covers_the_spec_taxonomy() -> None:
    """Every event type of spec §2.1 exists, and no other."""
    assert SPEC_TAXONOMY == set(s.BY_EVENT_TYPE)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.event_type)
def test_every_event_type_round_trips(cls: type[s.Payload]) -> None:
    """An envelope of each type decodes back to an equal value, tagged with its type."""
    env = envelope(sample_payload(cls))
    decoded = decode(msgspec.msgpack.encode(env))
    assert env == decoded
    assert cls.event_type == msgspec.to_builtins(decoded)["event_type"]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.event_type)
def test_every_event_type_has_one_consent_category(cls: type[s.Payload]) -> None:
    """Each event type belongs to exactly one consent category of spec §1.3."""
    assert cls.category in s.CATEGORIES


def test_spec_command_example_decodes() -> None:
    """The spec's §3.3 command example is a valid command_executed payload."""
    payload = msgspec.convert(
        {
            "command": "think", "profile": "balanced",
            "thinktool_chain": ["gigathink", "laserlogic", "bedrock", "proofguard"],
            "thinktool_count": 4,
            "execution": {"duration_ms": 2500, "llm_latency_ms": 2100, "processing_ms": 400,
                          "success": True},
            "tokens": {"input": 1500, "output": 800, "cached": 200,
                       "model": "claude-3-5-sonnet-20241022"},
            "quality": {"confidence_score": 0.82, "coherence_score": 0.88},
        },
        s.CommandExecuted,
    )  # fmt: skip
    assert 2100 == payload.execution.llm_latency_ms
    assert payload == decode(frame(payload)).payload  # type: ignore[attr-defined]


CLOSED_ENUMS = [  # (payload type, field path, a value outside the enumeration)
    (s.InstallStarted, ("method",), "apt"),
    (s.InstallFailed, ("error_category",), "out_of_memory"),
    (s.ErrorOccurred, ("error_category",), "kaboom"),
    (s.FeatureDiscovered, ("discovery_source",), "twitter"),
    (s.FeatureAdoption, ("feature_event",), "loved"),
    (s.CommandExecuted, ("profile",), "turbo"),
]


@pytest.mark.parametrize(("cls", "path", "bad"), CLOSED_ENUMS, ids=lambda v: str(v))
def test_closed_enumerations_reject_unknown_values(
    cls: type[s.Payload], path: tuple[str, ...], bad: str
) -> None:
    """An unknown value of a closed enumeration is rejected as an invalid field."""
    data = msgspec.to_builtins(envelope(sample_payload(cls)))
    data["payload"][path[0]] = bad
    with pytest.raises(Rejected) as info:
        decode(msgspec.msgpack.encode(data))
    assert "invalid_field" == info.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "my prompt text",
        "/home/alice/secret.txt",
        "alice@example.com",
        "",
        "-leading",
        "a\nb",
        "ünï",
    ],
)
def test_identifiers_reject_free_text(text: str) -> None:
    """Command names cannot carry prompts, paths, addresses or overlong text."""
    data = msgspec.to_builtins(envelope(s.CommandExecuted(command="think")))
    data["payload"]["command"] = text
    with pytest.raises(Rejected) as info:
        decode(msgspec.msgpack.encode(data))
    assert "invalid_field" == info.value.reason


@pytest.mark.parametrize(
    "ident", ["claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "E0425", "rate_limit_exceeded"]
)
def test_identifiers_keep_model_ids_and_codes(ident: str) -> None:
    """Model ids and error codes are valid identifiers."""
    p = s.ErrorOccurred(error_category="api_error", error_code=ident)
    assert ident == decode(frame(p)).payload.error_code  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("version", "ok"),
    [("1.0.0", True), ("1.7.3", True), ("2.0.0", False), ("0.9.0", False), ("1.0", False)],
)
def test_schema_version_major_must_be_1(version: str, ok: bool) -> None:
    """Minor schema versions of major 1 are accepted; anything else is rejected as such."""
    f = frame(s.HelpViewed(topic="think"), schema_version=version)
    if ok:
        assert version == decode(f).schema_version
    else:
        with pytest.raises(Rejected) as info:
            decode(f)
        assert "schema_version" == info.value.reason


def test_unknown_fields_are_dropped_not_stored() -> None:
    """A field the schema does not declare is silently dropped (the allow-list)."""
    data = msgspec.to_builtins(envelope(s.HelpViewed(topic="think")))
    data["payload"]["query_text"] = "what is my bank password"
    data["hostname"] = "alice-laptop"
    decoded = decode(msgspec.msgpack.encode(data))
    assert "query_text" not in msgspec.to_builtins(decoded)["payload"]
    assert "hostname" not in msgspec.to_builtins(decoded)


def test_envelope_json_matches_the_spec_shape() -> None:
    """In JSON an event is the spec's envelope: event_type at the top, payload nested."""
    data = msgspec.to_builtins(envelope(s.HelpViewed(topic="think")))
    assert {"event_type", "schema_version", "event_id", "timestamp", "source", "session",
            "payload"} == set(data)  # fmt: skip
    assert "help_viewed" == data["event_type"]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.event_type)
def test_the_compiled_values_getter_reads_what_each_field_get_reads(cls: type[s.Payload]) -> None:
    """fields.values_getter (one compiled function per plan, used by the firewall and the
    undeclared tag on every event) gives exactly ``f.get`` of each field: with optional
    Structs absent (None on the way) and present."""
    import msgspec.inspect as mi
    from rkd.client.fields import string_fields, values_getter

    from tests.samples import sample_value

    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    full = cls(**{f.name: sample_value(f.type) for f in info.fields})
    plan = string_fields(cls)
    getter = values_getter(plan)
    for payload in (sample_payload(cls), full):
        assert tuple(f.get(payload) for f in plan) == getter(payload)
    source_plan = string_fields(s.Source)
    assert tuple(f.get(SOURCE) for f in source_plan) == values_getter(source_plan)(SOURCE)
