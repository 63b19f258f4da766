"""Applications get feedback: local checks, programmer errors, `enabled`, capture_events.

An event the daemon would reject is dropped in the application and counted in
``tel.drops``; debug mode logs each (event type, field) once, naming the field and never
the value. Impossible constant constructor arguments raise. ``tel.enabled`` follows
`rkd disable`/`enable`. ``rkd.client.testing.capture_events()`` lets an application test
its instrumentation without a daemon, files or consent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import pytest
import rkd.client.telemetry as telemetry
from hypothesis import given, settings
from hypothesis import strategies as st
from rkd.client import Telemetry, checks
from rkd.client import schema as s
from rkd.client.testing import capture_events

from tests.conftest import APP, Daemon, Sandbox, wait_for

DECODE = msgspec.msgpack.Decoder(s.Event).decode
SECRET = "my secret prompt text"
IDENT = "an identifier (letters, digits and _ . : + -; no spaces or slashes)"
CHAIN = "at most 32 identifiers (letters, digits and _ . : + -; no spaces or slashes)"


class Capture:
    """Stands in for the transport: keeps the frames, counts drops."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.drops: dict[str, int] = {}

    def send(self, frame: bytes, urgent: bool = False) -> None:
        self.frames.append(frame)

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def sandbox_env(root: Path, **extra: str) -> dict[str, str]:
    """An environment whose every rkd path lies under ``root``."""
    return {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        **extra,
    }


@pytest.fixture
def app(tmp_path: Path) -> tuple[Telemetry, Capture]:
    """An enabled Telemetry whose frames are captured instead of sent."""
    tel = Telemetry("reasonkit-core", "1.0.0", env=sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1"))
    assert tel.enabled, tel.disabled_reason
    tel._transport = Capture()
    return tel, tel._transport


def run_command(tel: Telemetry, name: Any, **kw: Any) -> None:
    """A ``with tel.command(...)`` block; ``tokens``/``thinktools`` set inside when given."""
    model, chain = kw.pop("model", None), kw.pop("chain", None)
    with tel.command(name, **kw) as cmd:
        cmd.tokens(input=1, model=model)
        if chain is not None:
            cmd.thinktools(chain)


# -- local checks ------------------------------------------------------------------------

INVALID_CALLS: list[tuple[str, Callable[[Telemetry], None], str, str, str]] = [
    ("command name", lambda t: run_command(t, SECRET), "invalid_field",
     "command_executed", "`command` must be " + IDENT),
    ("command name not a str", lambda t: run_command(t, ["think"]), "invalid_field",
     "command_executed", "`command` must be " + IDENT),
    ("subcommand", lambda t: run_command(t, "think", subcommand="a/b"), "invalid_field",
     "command_executed", "`subcommand` must be " + IDENT),
    ("profile", lambda t: run_command(t, "think", profile="fast"), "invalid_field",
     "command_executed", "`profile` must be one of balanced, deep, paranoid, quick"),
    ("model", lambda t: run_command(t, "think", model="gpt 4"), "invalid_field",
     "command_executed", "`tokens.model` must be " + IDENT),
    ("chain entry", lambda t: run_command(t, "think", chain=["gigathink", "laser logic"]),
     "invalid_field", "command_executed", "`thinktool_chain` must be " + CHAIN),
    ("chain too long", lambda t: run_command(t, "think", chain=["gigathink"] * 33),
     "invalid_field", "command_executed", "`thinktool_chain` must be " + CHAIN),
    ("feature stage", lambda t: t.feature("x", "bogus_type"), "invalid_argument",  # type: ignore[arg-type]
     "tel.feature()", "`stage` must be one of disabled, discovered, first_use, milestone"),
    ("feature id", lambda t: t.feature("web search"), "invalid_field",
     "feature_first_use", "`feature_id` must be " + IDENT),
    ("feature source", lambda t: t.feature("x", "discovered", source="twitter"),
     "invalid_field", "feature_discovered",
     "`discovery_source` must be one of documentation, error, help, organic, upgrade"),
    ("thinktool name", lambda t: t.thinktool("giga\nthink"), "invalid_field",
     "thinktool_completed", "`tool_name` must be " + IDENT),
    ("error category", lambda t: t.error("oops"), "invalid_field", "error_occurred",
     "`error_category` must be one of api_error, auth_error, cancelled, config_error, "
     "internal_error, invalid_input, io_error, network_error, parse_error, rate_limited, "
     "timeout, unknown"),
    ("error code", lambda t: t.error("timeout", code="HTTP 429"), "invalid_field",
     "error_occurred", "`error_code` must be " + IDENT),
    ("error command", lambda t: t.error("timeout", command=SECRET), "invalid_field",
     "error_occurred", "`context.command` must be " + IDENT),
    ("error profile", lambda t: t.error("timeout", profile="fast"), "invalid_field",
     "error_occurred", "`context.profile` must be one of balanced, deep, paranoid, quick"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call", "reason", "kind", "rule"), INVALID_CALLS,
                         ids=[c[0] for c in INVALID_CALLS])  # fmt: skip
def test_an_invalid_argument_is_dropped_and_counted_here(
    app: tuple[Telemetry, Capture],
    what: str, call: Callable[[Telemetry], None], reason: str, kind: str, rule: str,
) -> None:  # fmt: skip
    """A value the daemon would reject is counted in tel.drops and never leaves the process."""
    tel, cap = app
    call(tel)
    assert ({reason: 1}, []) == (tel.drops, cap.frames)


def test_valid_values_are_sent_and_the_cache_never_admits_an_invalid_one(
    app: tuple[Telemetry, Capture],
) -> None:
    """Valid names pass (the second time from the cache); a bad one after them is dropped."""
    tel, cap = app
    for _ in range(2):
        run_command(tel, "think", profile="balanced", subcommand="run", model="m-1",
                    chain=["gigathink", "laserlogic"])  # fmt: skip
        tel.thinktool("gigathink")
        tel.feature("web_search", "milestone", source="help", count=5)
        tel.error("timeout", code="E1", command="think", profile="deep")
    run_command(tel, "think now")
    tel.thinktool("giga think")
    types = [DECODE(f).payload.event_type for f in cap.frames]
    assert [
        "command_executed",
        "thinktool_completed",
        "feature_adoption",
        "error_occurred",
    ] * 2 == types
    assert {"invalid_field": 2} == tel.drops


def test_a_failed_command_with_an_invalid_name_still_raises_the_callers_exception(
    app: tuple[Telemetry, Capture],
) -> None:
    """The caller's exception leaves the block unchanged; the event is dropped and counted."""
    tel, cap = app
    with pytest.raises(KeyError, match="boom"), tel.command(SECRET):
        raise KeyError("boom")
    assert ({"invalid_field": 1}, []) == (tel.drops, cap.frames)


@pytest.mark.parametrize(("what", "call", "reason", "kind", "rule"), INVALID_CALLS,
                         ids=[c[0] for c in INVALID_CALLS])  # fmt: skip
def test_debug_mode_logs_the_field_once_never_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
    what: str, call: Callable[[Telemetry], None], reason: str, kind: str, rule: str,
) -> None:  # fmt: skip
    """With RK_TELEMETRY_DEBUG=1, two bad calls log one line naming the field."""
    env = sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1", RK_TELEMETRY_DEBUG="1")
    tel = Telemetry("reasonkit-core", "1.0.0", env=env)
    tel._transport = Capture()
    with caplog.at_level(logging.WARNING, logger="rkd.client"):
        call(tel)
        call(tel)
    expected = (f"rkd.client dropped an event: {kind}: {rule}; counted in "
                f"tel.drops[{reason!r}] (logged once per event type and field)")  # fmt: skip
    assert [("rkd.client", logging.WARNING, expected)] == caplog.record_tuples
    assert {reason: 2} == tel.drops


def test_debug_mode_logs_each_field_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """debug=True: one line per (event type, field), however many events are dropped."""
    tel = Telemetry("reasonkit-core", "1.0.0", debug=True,
                    env=sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1"))  # fmt: skip
    tel._transport = Capture()
    with caplog.at_level(logging.WARNING, logger="rkd.client"):
        for _ in range(3):
            tel.thinktool("a b")
            tel.error("timeout", code="a b")
            tel.error("timeout", command="a b")
    fields = [re.findall(r"event: (\S+): `([^`]+)`", m)[0] for m in caplog.messages]
    assert [("thinktool_completed", "tool_name"), ("error_occurred", "error_code"),
            ("error_occurred", "context.command")] == fields  # fmt: skip
    assert {"invalid_field": 9} == tel.drops


def test_without_debug_mode_nothing_is_logged(
    app: tuple[Telemetry, Capture], caplog: pytest.LogCaptureFixture
) -> None:
    """Debug mode is off by default: drops are counted, not logged."""
    tel, _ = app
    with caplog.at_level(logging.DEBUG, logger="rkd.client"):
        run_command(tel, SECRET)
    assert ([], {"invalid_field": 1}) == (caplog.record_tuples, tel.drops)


def test_a_logging_filter_that_raises_does_not_reach_the_caller(tmp_path: Path) -> None:
    """Debug logging cannot raise into the application, whatever the host's logging does."""

    class Raising(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError("host filter")

    log = logging.getLogger("rkd.client")
    log.addFilter(f := Raising())
    try:
        tel = Telemetry("reasonkit-core", "1.0.0", debug=True,
                        env=sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1"))  # fmt: skip
        tel._transport = Capture()
        tel.thinktool("a b")
    finally:
        log.removeFilter(f)
    assert {"invalid_field": 1} == tel.drops


@pytest.mark.parametrize("debug", [True, False])
def test_debug_mode_checks_a_built_payload_as_the_daemon_would(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, debug: bool
) -> None:
    """In debug mode emit() drops (and names) a field the schema rejects; else it is sent."""
    env = sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1")
    tel = Telemetry("reasonkit-core", "1.0.0", env=env, debug=debug)
    cap = tel._transport = Capture()
    with caplog.at_level(logging.WARNING, logger="rkd.client"):
        tel.emit(s.CommandExecuted(command="think", tokens=s.Tokens(input=-1)))
        tel.lifecycle(s.InstallCompleted(method="pip", version="1.0.0", duration_ms=-5))
        tel.upgrade(s.UpgradePromptShown(prompt_id="pro_trial"))
    sent = [msgspec.msgpack.decode(f)["event_type"] for f in cap.frames]
    if debug:
        assert (["upgrade_prompt_shown"], {"invalid_field": 2}) == (sent, tel.drops)
        assert [
            "rkd.client dropped an event: command_executed: `tokens.input` must be valid for "
            "its type in the schema (see `rkd explain`); counted in tel.drops['invalid_field'] "
            "(logged once per event type and field)",
            "rkd.client dropped an event: install_completed: `duration_ms` must be valid for "
            "its type in the schema (see `rkd explain`); counted in tel.drops['invalid_field'] "
            "(logged once per event type and field)",
        ] == caplog.messages
    else:  # the daemon refuses them, and counts that in `rkd status`
        assert ["command_executed", "install_completed", "upgrade_prompt_shown"] == sent
        assert ([], {}) == (caplog.messages, tel.drops)


def test_recorder_arguments_of_the_wrong_type_never_raise(tmp_path: Path) -> None:
    """tokens("1500") and query(None) do not raise into the block; bytes are hashed."""
    env = sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1")
    tel = Telemetry("reasonkit-core", "1.0.0", env=env, debug=True)
    cap = tel._transport = Capture()
    with tel.command("think") as cmd:
        cmd.tokens(input="1500")  # type: ignore[arg-type]
    with tel.command("think") as cmd:
        cmd.query(None)  # type: ignore[arg-type]
        cmd.thinktools(7)  # type: ignore[arg-type]
    with tel.command("think") as cmd:
        cmd.query(b"what is 2 + 2")
    (frame,) = cap.frames
    assert (hashlib.sha256(b"what is 2 + 2").hexdigest(), {"invalid_field": 2}) == (
        DECODE(frame).payload.query_hash,
        tel.drops,
    )


def test_a_dropped_secret_is_counted_by_the_daemon_and_never_reaches_it(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """The daemon counts the client's drop by reason; the text is in no frame it received."""
    sandbox.python(f"""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        with tel.command({SECRET!r}):
            pass
        tel.thinktool("gigathink")
        assert {{"invalid_field": 1}} == tel.drops, tel.drops
        tel.close()
    """)
    wait_for(lambda: daemon.counter("client_drop.invalid_field") == 1, what="the drop report")
    daemon.flush()
    counters = daemon.status().counters
    assert 0 == counters.get("rejected.invalid_field", 0)
    assert [("thinktool_completed",)] == sandbox.query(f"SELECT event_type FROM events WHERE {APP}")


# -- programmer errors in constant constructor arguments ------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"product": "reasonkit core"}, "Telemetry(product='reasonkit core'): product must be "
         f"{IDENT}, e.g. reasonkit-core"),
        ({"product": ""}, f"Telemetry(product=''): product must be {IDENT}, e.g. reasonkit-core"),
        ({"product": "-core"}, f"Telemetry(product='-core'): product must be {IDENT}, "
         "e.g. reasonkit-core"),
        ({"version": "latest"}, "Telemetry(version='latest'): version must be a version "
         "number such as 1.0.0 or 0.12.3-beta.1"),
        ({"version": "1.0.0\n"}, "Telemetry(version='1.0.0\\n'): version must be a version "
         "number such as 1.0.0 or 0.12.3-beta.1"),
        ({"tier": "gold"}, "Telemetry(tier='gold'): tier must be one of oss, pro, trial, "
         "enterprise"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("state", ["enabled", "kill switch"])
def test_an_impossible_constant_argument_raises_whatever_the_consent(
    tmp_path: Path, kwargs: dict[str, str], message: str, state: str
) -> None:
    """A bad product, version or tier raises ValueError, under a kill switch too."""
    switch = {"RK_TELEMETRY_ENABLED": "1"} if state == "enabled" else {"DO_NOT_TRACK": "1"}
    args = {"product": "reasonkit-core", "version": "1.0.0", **kwargs}
    with pytest.raises(ValueError) as info:
        Telemetry(**args, env=sandbox_env(tmp_path, **switch))  # type: ignore[arg-type]
    assert message == str(info.value)


def test_a_constant_argument_of_the_wrong_type_raises_type_error(tmp_path: Path) -> None:
    """``version=1`` is a TypeError naming the argument and the type."""
    with pytest.raises(TypeError) as info:
        Telemetry("reasonkit-core", 1, env=sandbox_env(tmp_path, DO_NOT_TRACK="1"))  # type: ignore[arg-type]
    assert "Telemetry(version=...) must be a str, not int" == str(info.value)


@pytest.mark.parametrize("version", ["1", "v2.0", "1.2.3.4", "0.12.3-beta.1", "1.0+build.7", "1-"])
def test_valid_constant_arguments_do_not_raise(tmp_path: Path, version: str) -> None:
    """Every version form the schema accepts builds an enabled instance."""
    tel = Telemetry("rk:core_2", version, tier="trial",
                    env=sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1"))  # fmt: skip
    assert (True, None) == (tel.enabled, tel.disabled_reason)


def _pattern(annotated: Any) -> str:
    pattern = typing.get_args(annotated)[1].pattern
    assert isinstance(pattern, str)
    return pattern


ALPHABET = st.sampled_from([*"aZ09_.:+-v/ \n\té@", "١", "²"])


@settings(max_examples=500, deadline=None)
@given(st.lists(ALPHABET, max_size=12).map("".join))
def test_the_local_checks_agree_with_the_schemas_patterns(text: str) -> None:
    """is_ident and is_version accept exactly what the schema's patterns match."""
    assert (bool(re.search(_pattern(s.Ident), text)), bool(re.search(_pattern(s.Version), text))) \
        == (checks.is_ident(text), checks.is_version(text))  # fmt: skip


@pytest.mark.parametrize("text", ["0.12.3-beta.1", "v1.2.3.4+x-y", "1..2", "1.2.3.4.5", "v",
                                  "1.-2", "1.2-", "+1", "1+a b", "x1"])  # fmt: skip
def test_the_version_check_agrees_on_edge_cases(text: str) -> None:
    """The hand-written Version check matches the schema's regex on tricky shapes."""
    assert bool(re.search(_pattern(s.Version), text)) == checks.is_version(text)


def test_the_local_closed_sets_are_the_schemas() -> None:
    """checks.py copies the schema's Literal sets (it must not import it); they agree."""
    assert (
        typing.get_args(s.Tier), set(typing.get_args(s.Profile)),
        set(typing.get_args(s.ErrorCategory)), set(typing.get_args(s.DiscoverySource)),
        set(typing.get_args(s.FeatureEventType)),
    ) == (
        checks.TIERS, checks.PROFILES, checks.ERROR_CATEGORIES, checks.DISCOVERY_SOURCES,
        checks.FEATURE_STAGES,
    )  # fmt: skip
    info = msgspec.inspect.type_info(s.CommandExecuted)
    assert isinstance(info, msgspec.inspect.StructType)
    (chain,) = (f.type for f in info.fields if f.name == "thinktool_chain")
    assert isinstance(chain, msgspec.inspect.Metadata)
    assert isinstance(chain.type, msgspec.inspect.VarTupleType)
    assert checks.MAX_CHAIN == chain.type.max_length


# -- tel.enabled follows rkd disable / enable -------------------------------------------------


def test_enabled_follows_disable_and_enable(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `rkd disable` the next recheck makes enabled False; `rkd enable` makes it True."""
    sandbox.env.pop("RK_TELEMETRY_ENABLED")
    assert 0 == sandbox.rkd("enable", "--yes").returncode
    monkeypatch.setattr(telemetry, "RECHECK_SECS", 0.0)
    tel = Telemetry("reasonkit-core", "1.0.0", env=sandbox.env)
    seen = [(tel.enabled, tel.disabled_reason)]
    assert 0 == sandbox.rkd("disable").returncode
    seen.append((tel.enabled, tel.disabled_reason))
    assert 0 == sandbox.rkd("enable", "--yes").returncode
    seen.append((tel.enabled, tel.disabled_reason))
    assert [
        (True, None),
        (False, "disabled since it started (rkd disable, or a change to the config)"),
        (True, None),
    ] == seen


def test_enabled_follows_a_kill_switch_that_comes_and_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill switch added to the instance's env turns enabled off; removed, back on."""
    monkeypatch.setattr(telemetry, "RECHECK_SECS", 0.0)
    env = sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1")
    tel = Telemetry("reasonkit-core", "1.0.0", env=env)
    seen = [(tel.enabled, tel.disabled_reason)]
    env["DO_NOT_TRACK"] = "1"
    seen.append((tel.enabled, tel.disabled_reason))
    del env["DO_NOT_TRACK"]
    seen.append((tel.enabled, tel.disabled_reason))
    assert [(True, None), (False, "disabled by DO_NOT_TRACK in the environment"),
            (True, None)] == seen  # fmt: skip


def test_an_instance_built_disabled_stays_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an instance built enabled can become enabled again."""
    monkeypatch.setattr(telemetry, "RECHECK_SECS", 0.0)
    env = sandbox_env(tmp_path, DO_NOT_TRACK="1")
    tel = Telemetry("reasonkit-core", "1.0.0", env=env)
    del env["DO_NOT_TRACK"]
    env["RK_TELEMETRY_ENABLED"] = "1"
    assert (False, "disabled by DO_NOT_TRACK in the environment") == (
        tel.enabled, tel.disabled_reason)  # fmt: skip


# -- rkd.client.testing.capture_events ---------------------------------------------------------


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


STATES = {
    "enabled": {"RK_TELEMETRY_ENABLED": "1"},
    "undecided": {},
    "kill switch": {"DO_NOT_TRACK": "1"},
    "no categories": {"RK_TELEMETRY_ENABLED": "1"},  # categories emptied below
}


@pytest.fixture(params=list(STATES))
def any_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Telemetry]:
    """A Telemetry in each consent state, its folders in ``tmp_path``."""
    env = sandbox_env(tmp_path, **STATES[request.param])
    (tmp_path / "home").mkdir()
    tel = Telemetry("reasonkit-core", "1.0.0", env=env)
    assert ("RK_TELEMETRY_ENABLED" in env) == tel.enabled
    if request.param == "no categories":
        tel._categories = frozenset()  # as after the user withdrew every category
    yield tel


def test_capture_events_records_what_each_helper_sends_whatever_the_consent(
    any_state: Telemetry, tmp_path: Path
) -> None:
    """Events are captured as dicts, in any consent state, and nothing is written anywhere."""
    tel = any_state
    before = tree(tmp_path)
    with capture_events() as events:
        with tel.command("think", profile="balanced") as cmd:
            cmd.tokens(input=1500, output=800, model="claude-3-5-sonnet-20241022")
            cmd.thinktools(["gigathink", "laserlogic"])
        tel.feature("web_search", "first_use", source="help")
        tel.error("timeout", code="E42", command="think")
        tel.upgrade(s.UpgradePromptShown(prompt_id="pro_trial"))
    assert 0 <= events[0]["execution"].pop("duration_ms") < 10_000
    assert [
        {"event_type": "command_executed", "command": "think", "subcommand": None,
         "profile": "balanced", "thinktool_chain": ["gigathink", "laserlogic"],
         "thinktool_count": 2,
         "execution": {"llm_latency_ms": None, "processing_ms": None, "success": True},
         "tokens": {"input": 1500, "output": 800, "cached": 0,
                    "model": "claude-3-5-sonnet-20241022"},
         "quality": None, "cache_hit": False, "error_category": None, "query_hash": None},
        {"event_type": "feature_first_use", "feature_id": "web_search",
         "discovery_source": "help"},
        {"event_type": "error_occurred", "error_category": "timeout", "error_code": "E42",
         "recoverable": False, "retry_count": 0,
         "context": {"command": "think", "profile": None, "step": None}},
        {"event_type": "upgrade_prompt_shown", "prompt_id": "pro_trial", "trigger": None},
    ] == events  # fmt: skip
    tel.close()
    assert (before, {}) == (tree(tmp_path), tel.drops)


def test_capture_events_drops_and_counts_what_the_daemon_would_reject(
    any_state: Telemetry,
) -> None:
    """Invalid helper arguments, schema violations and garbage are not captured, but counted."""
    tel = any_state
    with capture_events() as events:
        tel.command(SECRET).__enter__().__exit__(None, None, None)
        tel.feature("x", "bogus_type")  # type: ignore[arg-type]
        tel.thinktool("gigathink", confidence_score=1.5)
        tel.emit(s.CommandExecuted(command="think", tokens=s.Tokens(input=-1)))
        tel.emit("not an event")
        tel.lifecycle(s.HelpViewed(topic="think"))
    assert ([], {"invalid_field": 3, "invalid_argument": 1, "encode_error": 1,
                 "wrong_family": 1}) == (events, tel.drops)  # fmt: skip


def test_capture_events_logs_a_schema_violation_in_debug_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In a capture, a field the schema rejects is named (by its path) in debug mode."""
    tel = Telemetry("reasonkit-core", "1.0.0", debug=True,
                    env=sandbox_env(tmp_path, DO_NOT_TRACK="1"))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="rkd.client"), capture_events() as events:
        tel.emit(s.CommandExecuted(command="think", tokens=s.Tokens(input=-1)))
    assert [] == events
    assert ["rkd.client dropped an event: command_executed: `tokens.input` must be valid for "
            "its type in the schema (see `rkd explain`); counted in tel.drops['invalid_field'] "
            "(logged once per event type and field)"] == caplog.messages  # fmt: skip


def test_capture_events_sees_instances_built_inside_and_stops_at_the_end(tmp_path: Path) -> None:
    """An instance built in the block is captured; after the block nothing more is."""
    app = Capture()
    with capture_events() as events:
        tel = Telemetry("reasonkit-core", "1.0.0",
                        env=sandbox_env(tmp_path, RK_TELEMETRY_ENABLED="1"))  # fmt: skip
        tel._transport = app
        tel.thinktool("inside")
    tel.thinktool("after")
    assert [["inside"], ["after"]] == [
        [e["tool_name"] for e in events],
        [DECODE(f).payload.tool_name for f in app.frames],
    ]
    assert telemetry._sink is None


def test_capture_events_nest_and_end_even_when_the_block_raises() -> None:
    """The innermost capture gets the events; the outer one resumes; an exception ends both."""
    tel = Telemetry("reasonkit-core", "1.0.0", env={"DO_NOT_TRACK": "1"})
    with pytest.raises(RuntimeError), capture_events() as outer:
        tel.thinktool("a")
        with capture_events() as inner:
            tel.thinktool("b")
        tel.thinktool("c")
        raise RuntimeError
    tel.thinktool("d")
    assert (["a", "c"], ["b"], None) == (
        [e["tool_name"] for e in outer],
        [e["tool_name"] for e in inner],
        telemetry._sink,
    )


def test_capture_events_from_several_threads(tmp_path: Path) -> None:
    """Events emitted by threads sharing one instance are all captured."""
    import threading

    tel = Telemetry("reasonkit-core", "1.0.0", env={"DO_NOT_TRACK": "1"})

    def work() -> None:
        for _ in range(200):
            tel.thinktool("gigathink")

    with capture_events() as events:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert (800, False) == (len(events), any(t.is_alive() for t in threads))


def test_nothing_is_captured_without_capture_events(app: tuple[Telemetry, Capture]) -> None:
    """Without a capture the sink is unset and events go to the transport."""
    tel, cap = app
    tel.thinktool("gigathink")
    assert (None, 1) == (telemetry._sink, len(cap.frames))


def test_importing_the_client_does_not_import_the_testing_helper() -> None:
    """rkd.client.testing (msgspec, the schema) is loaded only by tests that ask for it."""
    import subprocess
    import sys

    code = ("import sys, rkd.client; from rkd.client import Telemetry; "
            "Telemetry('reasonkit-core', '1.0.0'); "
            "print(sorted(m for m in ('rkd.client.testing', 'msgspec') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DO_NOT_TRACK": "1"},
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert "[]\n" == out
