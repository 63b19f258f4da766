"""The client's and the CLI's promises under hostile files and odd construction.

The client never raises into the host application (except for a programmer error in
constant constructor arguments) and never blocks; the CLI shows one line, never a
traceback. An instance keeps to its own environment and settings when it rechecks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rkd.client import schema as s
from rkd.client.config import (
    ConfigError,
    PrivacyConfig,
    TelemetryConfigFile,
    load_settings,
    read_config_file,
)
from rkd.client.consent import ConsentError, read_consent
from rkd.client.spool import read_spool, spool_files

from tests.conftest import Daemon, Sandbox
from tests.samples import ALL_TYPES, envelope, sample_payload

DEEP = 50_000  # far past Python's recursion limit, far below the file size caps


def _consent_file(sandbox: Sandbox, raw: bytes) -> Path:
    path = Path(sandbox.env["XDG_DATA_HOME"]) / "reasonkit" / "consent.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


DEEP_TOML = "[telemetry]\nprices = " + "[" * DEEP + "]" * DEEP + "\n"
DEEP_JSON = b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b"}"  # an unknown key: skipped, recursively


# -- hostile config.toml and consent.json ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (DEEP_TOML, "invalid TOML: nested too deeply"),
        (
            "[telemetry]\nx = {" + "a = {" * DEEP + "}" * DEEP + "}\n",
            "invalid TOML: nested too deeply",
        ),
        ("# " + "x" * (1 << 20) + "\n", "too large (more than 1048576 bytes)"),
    ],
    ids=["arrays", "inline_tables", "huge"],
)
def test_hostile_config_is_one_config_error(sandbox: Sandbox, text: str, why: str) -> None:
    """A deeply nested or huge config.toml is a ConfigError naming the file, nothing else."""
    path = sandbox.write_config(text)
    with pytest.raises(ConfigError) as info:
        load_settings(sandbox.env)
    assert f"{path}: {why}" == str(info.value)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (DEEP_JSON, "not a valid consent record (nested too deeply)"),
        (b" " * (2 << 20) + b"{}", "too large (more than 2097152 bytes)"),
        (b'{"current": {"choice": "granted", "at": "\xff"}}', None),
        (b'{"current": {"choice": "granted", "at": 5}}', None),
    ],
    ids=["deep", "huge", "not_utf8", "wrong_type"],
)
def test_hostile_consent_is_one_consent_error(
    sandbox: Sandbox, raw: bytes, why: str | None
) -> None:
    """A deeply nested, huge, non-UTF-8 or mistyped consent.json is a one-line ConsentError."""
    path = _consent_file(sandbox, raw)
    with pytest.raises(ConsentError) as info:
        read_consent(path.parent)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    if why is not None:
        assert f"{path}: {why}" == message


def test_a_fifo_config_is_refused_without_blocking(sandbox: Sandbox) -> None:
    """A named pipe where config.toml should be is refused at once instead of hanging."""
    sandbox.config_file.parent.mkdir(parents=True)
    os.mkfifo(sandbox.config_file)
    out = sandbox.python(
        """
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        print(tel.enabled, tel.disabled_reason)
        """,
        timeout=20,
    ).stdout
    assert f"False {sandbox.config_file}: not a regular file\n" == out


@pytest.mark.parametrize("which", ["config", "consent"])
def test_client_never_raises_on_a_hostile_file(sandbox: Sandbox, which: str) -> None:
    """Telemetry, TelemetryConfig.from_env and TelemetryCollector stay off, and say why."""
    if which == "config":
        path = sandbox.write_config(DEEP_TOML)
        reason = f"{path}: invalid TOML: nested too deeply"
    else:
        path = _consent_file(sandbox, DEEP_JSON)
        reason = f"{path}: not a valid consent record (nested too deeply)"
    env = {k: v for k, v in sandbox.env.items() if k != "RK_TELEMETRY_ENABLED"}
    sandbox.env = env  # undecided: the consent record is read
    out = sandbox.python("""
        from rkd.client import Telemetry, TelemetryCollector, TelemetryConfig, CommandEvent
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("gigathink")
        print(tel.enabled, tel.disabled_reason)
        config = TelemetryConfig.from_env()
        c = TelemetryCollector(config)
        c.record_command(CommandEvent(command="think"))
        c.flush()
        print(config.enabled, c.enabled, c.get_status(), c.export(), c.delete_all())
    """).stdout
    assert f"False {reason}\nFalse False {{'enabled': False}} [] 0\n" == out


KEYS = (*TelemetryConfigFile.__struct_fields__, *PrivacyConfig.__struct_fields__, "x")
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=8,
)


def _toml(value: Any) -> str:
    """``value`` as a TOML inline value (None, which TOML lacks, as an empty table)."""
    if value is None or isinstance(value, dict):
        items = (value or {}).items()
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4),
       privacy=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3))  # fmt: skip
def test_any_types_at_any_key_give_a_config_error(
    tmp_path: Path, table: dict[str, Any], privacy: dict[str, Any]
) -> None:
    """Whatever types sit at whatever keys of config.toml: defaults, or one ConfigError line."""
    path = tmp_path / "config.toml"
    lines = ["[telemetry]", *(f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items())]
    if "privacy" not in table:
        lines += ["[telemetry.privacy]", *(f"{k} = {_toml(v)}" for k, v in privacy.items())]
    path.write_text("\n".join(lines) + "\n")
    try:
        read_config_file(path)
    except ConfigError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    doc=st.dictionaries(
        st.sampled_from(("current", "history", "choice", "at", "categories")), VALUES, max_size=3
    )
    | VALUES
    | st.binary(max_size=64).map(lambda b: b)
)
def test_any_consent_file_gives_a_record_or_a_consent_error(tmp_path: Path, doc: Any) -> None:
    """Whatever consent.json holds (any JSON, any bytes): a record, or one ConsentError line."""
    raw = doc if isinstance(doc, bytes) else msgspec.json.encode(doc)
    (tmp_path / "consent.json").write_bytes(raw)
    try:
        read_consent(tmp_path)
    except ConsentError as e:
        assert str(e).startswith(f"{tmp_path / 'consent.json'}: ") and "\n" not in str(e)


def _cli_error(proc: Any) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (1, "") == (proc.returncode, proc.stdout)
    return str(proc.stderr)


@pytest.mark.parametrize(
    "args",
    [("status",), ("status", "--json"), ("enable", "--yes"), ("flush",)],
    ids=" ".join,
)  # fmt: skip
def test_cli_shows_one_line_for_a_deep_config(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    """Every command but those of the user's rights says what is wrong with config.toml
    in one line and exits 1."""
    path = sandbox.write_config(DEEP_TOML)
    assert f"Error: {path}: invalid TOML: nested too deeply\n" == _cli_error(sandbox.rkd(*args))


@pytest.mark.parametrize(
    "args", [("disable",), ("delete", "--confirm"), ("export",), ("audit",)], ids=" ".join
)
def test_rights_work_with_a_deep_config(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    """disable, delete, export and audit work on the defaults, warning in one line."""
    path = sandbox.write_config(DEEP_TOML)
    proc = sandbox.rkd(*args)
    assert 0 == proc.returncode, proc.stderr
    warning = f"Warning: {path}: invalid TOML: nested too deeply; using the defaults\n"
    assert warning == proc.stderr.splitlines(keepends=True)[0]


@pytest.mark.parametrize(
    ("args", "prefix"),
    [(("status",), ""), (("status", "--json"), ""), (("export",), ""),
     (("disable",), "cannot record your decision: ")],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)  # fmt: skip
def test_cli_shows_one_line_for_a_deep_consent_under_a_kill_switch(
    sandbox: Sandbox, args: tuple[str, ...], prefix: str
) -> None:
    """With the consent record not needed for the settings, the commands that read it
    still say what is wrong in one line (no traceback)."""
    path = _consent_file(sandbox, DEEP_JSON)
    proc = sandbox.rkd(*args, DO_NOT_TRACK="1")
    expected = f"Error: {prefix}{path}: not a valid consent record (nested too deeply)\n"
    assert expected == _cli_error(proc)


def test_audit_of_a_deeply_nested_stored_payload_is_one_line(
    sandbox: Sandbox, daemon: Daemon
) -> None:
    """`rkd audit` reports a damaged database in one line, not a RecursionError."""
    import apsw

    sandbox.python("""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        tel.thinktool("gigathink")
        tel.close()
    """)
    daemon.flush()
    assert 0 == daemon.stop()[0]
    db = apsw.Connection(str(sandbox.settings.db_path))
    db.execute("UPDATE events SET payload = ?", ("[" * DEEP + "]" * DEEP,))
    db.close()
    err = _cli_error(sandbox.rkd("audit"))
    assert (
        f"Error: {sandbox.settings.db_path}: cannot read the database: nested too deeply\n" == err
    )


# -- _recheck keeps to the instance's own env and settings ---------------------------------


@pytest.mark.parametrize("built_with", ["env", "settings"])
def test_recheck_keeps_to_the_instances_own_env_and_settings(
    sandbox: Sandbox, built_with: str
) -> None:
    """An instance built with ``env=`` or ``settings=`` keeps sending after a config change.

    The process's own environment points elsewhere (no consent there); the daemon is
    down, so what the client sends ends up in the sandbox's spool, counted here.
    """
    sandbox.rkd("enable", "--yes")
    own = {k: v for k, v in sandbox.env.items()
           if not k.startswith("XDG_") and k != "RK_TELEMETRY_ENABLED"}  # fmt: skip
    own["HOME"] = str(sandbox.root / "elsewhere")
    arg = "env=ENV" if built_with == "env" else "settings=load_settings(ENV)"
    code = f"""
        import rkd.client.telemetry as t
        from rkd.client.config import load_settings
        t.RECHECK_SECS = 0.0  # recheck before every event
        ENV = {sandbox.env!r}
        tel = t.Telemetry(product="reasonkit-core", version="1.0.0", {arg})
        assert tel.enabled, tel.disabled_reason
        for i in range(3):
            tel.thinktool("before")
        with open({str(sandbox.config_file)!r}, "w") as f:
            f.write("[telemetry]\\nretention_days = 30\\n")
        for i in range(3):
            tel.thinktool("after")
        tel.close()
    """
    sandbox.config_file.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=own,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert 0 == proc.returncode, proc.stderr
    assert ["before"] * 3 + ["after"] * 3 == _spooled_tools(sandbox)


def _spooled_tools(sandbox: Sandbox) -> list[str]:
    """The tool names of the thinktool events in the spool, in order."""
    frames = [f for p in spool_files(sandbox.settings.spool_dir)
              for f in read_spool(p.read_bytes())[0]]  # fmt: skip
    return [msgspec.msgpack.decode(f)["payload"]["tool_name"] for f in frames]


def test_recheck_obeys_a_kill_switch_added_to_the_instances_env(sandbox: Sandbox) -> None:
    """A kill switch that appears in the instance's own env stops it at the next recheck."""
    sandbox.python("""
        import os
        import rkd.client.telemetry as t
        t.RECHECK_SECS = 0.0
        env = dict(os.environ)
        tel = t.Telemetry(product="reasonkit-core", version="1.0.0", env=env)
        tel.thinktool("before")
        env["DO_NOT_TRACK"] = "1"
        tel.thinktool("after")
        tel.close()
    """)
    assert ["before"] == _spooled_tools(sandbox)


# -- TelemetryConfig: daemon settings an application cannot change --------------------------


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("db_path", Path("/tmp/mine.db"), "RK_TELEMETRY_PATH or telemetry.db_path"),
        ("batch_size", 10, "telemetry.batch_size"),
        ("flush_interval_secs", 5, "telemetry.flush_interval_secs"),
        ("strip_pii", False, "telemetry.privacy.strip_pii"),
    ],
)
def test_telemetry_config_rejects_daemon_settings(field: str, value: Any, where: str) -> None:
    """Asking for a database, batch size, flush interval or PII setting of one's own is a
    ValueError at construction: the user's daemon decides them, for every application."""
    from rkd.client.sdk import TelemetryConfig

    with pytest.raises(ValueError) as info:
        TelemetryConfig(enabled=True, **{field: value})
    assert (
        f"TelemetryConfig.{field}: the rkd daemon applies the user's setting ({where} in "
        "config.toml) to every application; leave it unset or use TelemetryConfig.from_env()"
    ) == str(info.value)


def test_telemetry_config_from_env_carries_the_users_daemon_settings(sandbox: Sandbox) -> None:
    """from_env() reports the user's own values, and building a collector with them works."""
    db = sandbox.root / "custom.db"
    sandbox.write_config(f"""
        [telemetry]
        db_path = "{db}"
        batch_size = 7
        flush_interval_secs = 0.5
        [telemetry.privacy]
        strip_pii = false
    """)
    out = sandbox.python("""
        from rkd.client import TelemetryCollector, TelemetryConfig
        c = TelemetryConfig.from_env()
        print(c.db_path, c.batch_size, c.flush_interval_secs, c.strip_pii)
        print(TelemetryCollector(c).enabled)
        print(TelemetryConfig(enabled=True, db_path=TelemetryConfig.default_db_path()).db_path)
    """).stdout
    default = Path(sandbox.env["XDG_DATA_HOME"]) / "reasonkit" / ".rk_telemetry.db"
    assert f"{db} 7 0.5 False\nTrue\n{default}\n" == out


def test_collector_rejects_a_config_changed_after_construction() -> None:
    """Setting a daemon field on a config afterwards is caught when the collector is built."""
    from rkd.client.sdk import TelemetryCollector, TelemetryConfig

    config = TelemetryConfig(enabled=False)
    config.batch_size = 1
    with pytest.raises(ValueError, match=r"^TelemetryConfig\.batch_size: "):
        TelemetryCollector(config)


# -- identifiers: a trailing newline is not part of an identifier ---------------------------


def _pattern_paths(t: mi.Type, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(path, pattern) of every patterned string reachable in ``t``, optional ones too."""
    match t:
        case mi.Metadata(type=inner):
            return _pattern_paths(inner, path)
        case mi.StrType(pattern=p) if p:
            return [(path, p)]
        case mi.UnionType(types=types):
            return [x for u in types for x in _pattern_paths(u, path)]
        case mi.VarTupleType(item_type=it) | mi.ListType(item_type=it):
            return _pattern_paths(it, (*path, 0))
        case mi.StructType(fields=fields):
            return [x for f in fields for x in _pattern_paths(f.type, (*path, f.encode_name))]
    return []


VALID = ("think", "1.0.0", "a" * 64)


def _valid_for(pattern: str) -> str:
    return next(v for v in VALID if re.search(pattern, v))


def _full(t: mi.Type) -> Any:
    """A valid builtin value for ``t`` with every optional field present."""
    match t:
        case mi.Metadata(type=inner):
            return _full(inner)
        case mi.StrType(pattern=p):
            return _valid_for(p) if p else "think"
        case mi.LiteralType(values=values):
            return values[0]
        case mi.BoolType():
            return True
        case mi.IntType():
            return 1
        case mi.FloatType():
            return 0.5
        case mi.UnionType(types=types):
            return _full(next(x for x in types if not isinstance(x, mi.NoneType)))
        case mi.StructType(fields=fields):
            return {f.encode_name: _full(f.type) for f in fields}
        case mi.VarTupleType(item_type=it) | mi.ListType(item_type=it):
            return [_full(it)]
    raise TypeError(f"no full sample for {t}")


def _event(cls: type[s.Payload]) -> dict[str, Any]:
    """An envelope of ``cls`` as builtins, its payload with every optional field set."""
    data: dict[str, Any] = msgspec.to_builtins(envelope(sample_payload(cls)))
    data["payload"].update(_full(mi.type_info(cls)))
    return data


def _put(data: Any, path: tuple[Any, ...], value: str) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


IDENT_CASES = [
    (cls, path, pattern)
    for cls in ALL_TYPES
    for path, pattern in _pattern_paths(mi.type_info(s.ENVELOPES[cls]))
]


@pytest.mark.parametrize(
    ("cls", "path", "pattern"),
    IDENT_CASES,
    ids=[f"{c.__name__}.{'.'.join(map(str, p))}" for c, p, _ in IDENT_CASES],
)
def test_no_identifier_accepts_a_trailing_newline(
    cls: type[s.Payload], path: tuple[Any, ...], pattern: str
) -> None:
    """Every patterned field of every event rejects ``valid + "\\n"`` on a real decode."""
    decoder = msgspec.msgpack.Decoder(s.Event)
    data = _event(cls)
    good = _valid_for(pattern)
    _put(data, path, good)
    decoder.decode(msgspec.msgpack.encode(data))  # valid as it is
    _put(data, path, good + "\n")
    with pytest.raises(msgspec.ValidationError, match="matching regex"):
        decoder.decode(msgspec.msgpack.encode(data))


def test_every_identifier_pattern_is_covered() -> None:
    """The parametrization above reaches the source, the envelope and payload fields."""
    paths = {p for _, p, _ in IDENT_CASES}
    assert {("schema_version",), ("source", "product"), ("source", "version"),
            ("source", "os"), ("source", "arch"), ("source", "python_version"),
            ("payload", "command")} <= paths  # fmt: skip
    assert len(IDENT_CASES) >= 60


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[telemetry.privacy]\nallowed_domains = ["example.com\\n"]\n',
         "telemetry.privacy.allowed_domains"),
        ('[telemetry.prices."gpt-4o\\n"]\ninput = 1.0\noutput = 2.0\n', "telemetry.prices"),
    ],
    ids=["allowed_domains", "price_key"],
)  # fmt: skip
def test_config_identifiers_reject_a_trailing_newline(tmp_path: Path, toml: str, key: str) -> None:
    """Domains and model ids in config.toml do not accept a trailing newline either."""
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(info.value).startswith(f"{path}: {key}")
    path.write_text(toml.replace("\\n", ""))
    read_config_file(path)


# -- the SDK's management calls without a daemon --------------------------------------------


def test_sdk_management_calls_work_with_the_daemon_down(sandbox: Sandbox, daemon: Daemon) -> None:
    """get_status, export and delete_all work on the stored events after the daemon stops."""
    sandbox.python("""
        from rkd.client import Telemetry
        tel = Telemetry(product="reasonkit-core", version="1.0.0")
        for _ in range(3):
            tel.thinktool("gigathink")
        tel.close()
    """)
    daemon.flush()
    assert 0 == daemon.stop()[0]
    stored = sandbox.count(derived=True)
    out = sandbox.python("""
        import json
        from rkd.client import TelemetryCollector, TelemetryConfig
        c = TelemetryCollector(TelemetryConfig.from_env())
        st = c.get_status()
        print(json.dumps([st["daemon"], st["events_stored"]]))
        print(json.dumps([e["event_type"] for e in json.loads(c.export())]))
        print(c.delete_all())
        print(c.get_status()["events_stored"])
    """).stdout.splitlines()
    assert [False, stored] == json.loads(out[0])
    assert ["session_started"] + ["thinktool_completed"] * 3 == [
        t for t in json.loads(out[1]) if t not in ("feature_first_use",)
    ]
    assert [str(stored), "0"] == out[2:]
    assert 0 == sandbox.count(derived=True)


def test_sdk_management_call_that_fails_warns_instead_of_raising(sandbox: Sandbox) -> None:
    """An unreadable database makes export() "[]" and the count 0, with one warning each."""
    db = sandbox.settings.db_path
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database" * 100)
    proc = sandbox.python("""
        import logging
        from rkd.client import TelemetryCollector, TelemetryConfig
        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        c = TelemetryCollector(TelemetryConfig.from_env())
        print(c.export(), c.get_status()["events_stored"])
    """)
    assert "[] 0\n" == proc.stdout
    lines = proc.stderr.splitlines()
    assert 2 == len(lines), proc.stderr
    assert lines[0].startswith(f"rkd.client WARNING rkd export: Error: {db}: ")
    assert lines[1].startswith(f"rkd.client WARNING rkd status: Error: {db}: ")


def test_the_spec_sdk_opens_no_file_under_a_kill_switch(sandbox: Sandbox) -> None:
    """Issue 15: `TelemetryConfig.from_env()` read config.toml under DO_NOT_TRACK=1 (strace
    showed it); like `Telemetry`, the spec's SDK now reads nothing under a kill switch."""
    sandbox.write_config("[telemetry]\nenabled = true\n")
    out = sandbox.python(
        """
        import sys
        opened = []
        sys.addaudithook(lambda ev, args: ev == "open" and opened.append(str(args[0])))
        from rkd.client import TelemetryCollector, TelemetryConfig, CommandEvent
        mark = len(opened)
        config = TelemetryConfig.from_env()
        c = TelemetryCollector(config)
        c.record_command(CommandEvent(command="think"))
        print(config.enabled, c.enabled, [p for p in opened[mark:] if "reasonkit" in p])
    """,
        DO_NOT_TRACK="1",
    ).stdout
    assert "False False []\n" == out
