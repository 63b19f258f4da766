"""Configuration: precedence, every key, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from rkd.client.config import ConfigError, kill_switch, load_settings

from tests.conftest import Sandbox


def env_of(sandbox: Sandbox, **over: str) -> dict[str, str]:
    env = {k: v for k, v in sandbox.env.items() if k != "RK_TELEMETRY_ENABLED"}
    env.update(over)
    return env


def test_defaults_follow_the_spec(sandbox: Sandbox) -> None:
    """With no file and no variables: off, the spec's paths and numbers."""
    s = load_settings(env_of(sandbox))
    assert (False, "default") == (s.enabled, s.decided_by)
    assert sandbox.root / "data/reasonkit/.rk_telemetry.db" == s.db_path
    assert sandbox.root / "config/reasonkit/config.toml" == s.config_path
    assert (100, 60.0, 100, 90) == (
        s.batch_size,
        s.flush_interval_secs,
        s.max_db_size_mb,
        s.retention_days,
    )
    assert (True, False, True, False, 1.0) == (
        s.privacy.strip_pii, s.privacy.block_sensitive, s.privacy.redact_file_paths,
        s.privacy.differential_privacy, s.privacy.dp_epsilon,
    )  # fmt: skip
    assert (False, False) == (s.community_contribution, s.cloud_sync)


def test_every_key_of_the_file_is_read(sandbox: Sandbox) -> None:
    """Each key of §5.3 in config.toml changes the resolved settings."""
    sandbox.write_config("""
        [other_tool]
        anything = "is ignored"
        [telemetry]
        enabled = true
        db_path = "~/t.db"
        community_contribution = true
        batch_size = 7
        flush_interval_secs = 2.5
        max_db_size_mb = 3
        retention_days = 4
        [telemetry.privacy]
        strip_pii = false
        block_sensitive = true
        redact_file_paths = false
        differential_privacy = true
        dp_epsilon = 0.5
    """)
    s = load_settings(env_of(sandbox))
    assert (True, "config") == (s.enabled, s.decided_by)
    assert sandbox.root / "home/t.db" == s.db_path
    assert (True, 7, 2.5, 3, 4) == (s.community_contribution, s.batch_size,
                                    s.flush_interval_secs, s.max_db_size_mb, s.retention_days)  # fmt: skip
    p = s.privacy
    assert (False, True, False, True, 0.5) == (
        p.strip_pii,
        p.block_sensitive,
        p.redact_file_paths,
        p.differential_privacy,
        p.dp_epsilon,
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [("DO_NOT_TRACK", "1"), ("DO_NOT_TRACK", "true"), ("RK_TELEMETRY_ENABLED", "false"),
     ("REASONKIT_TELEMETRY", "false"), ("RK_TELEMETRY_ENABLED", "0")],
)  # fmt: skip
def test_kill_switch_beats_env_and_file(sandbox: Sandbox, var: str, value: str) -> None:
    """A kill switch wins over a config file and another variable that enable."""
    sandbox.write_config("[telemetry]\nenabled = true\n")
    other = "REASONKIT_TELEMETRY" if var == "RK_TELEMETRY_ENABLED" else "RK_TELEMETRY_ENABLED"
    env = env_of(sandbox, **{var: value})
    env.setdefault(other, "true")
    s = load_settings(env)
    assert (False, f"env:{var}") == (s.enabled, s.decided_by)
    assert var == kill_switch(env)


def test_env_beats_file(sandbox: Sandbox) -> None:
    """RK_TELEMETRY_ENABLED=true enables even when the file says false."""
    sandbox.write_config("[telemetry]\nenabled = false\n")
    s = load_settings(env_of(sandbox, RK_TELEMETRY_ENABLED="true"))
    assert (True, "env:RK_TELEMETRY_ENABLED") == (s.enabled, s.decided_by)


def test_file_saying_false_is_the_files_decision(sandbox: Sandbox) -> None:
    """`enabled = false` written in the file is reported as the file's decision."""
    sandbox.write_config("[telemetry]\nenabled = false\n")
    assert (False, "config") == (
        load_settings(env_of(sandbox)).enabled,
        load_settings(env_of(sandbox)).decided_by,
    )


def test_do_not_track_zero_is_not_a_kill_switch(sandbox: Sandbox) -> None:
    """DO_NOT_TRACK=0 means tracking is allowed: the other settings decide."""
    s = load_settings(env_of(sandbox, DO_NOT_TRACK="0", RK_TELEMETRY_ENABLED="true"))
    assert s.enabled


def test_env_paths_and_switches(sandbox: Sandbox, tmp_path: Path) -> None:
    """RK_TELEMETRY_PATH beats db_path; RK_CONFIG moves the file; community/sync vars read."""
    alt = tmp_path / "alt.toml"
    alt.write_text('[telemetry]\ndb_path = "/nowhere/x.db"\nbatch_size = 9\n')
    s = load_settings(env_of(sandbox, RK_CONFIG=str(alt), RK_TELEMETRY_PATH=str(tmp_path / "e.db"),
                             RK_TELEMETRY_COMMUNITY="yes", RK_TELEMETRY_CLOUD_SYNC="on"))  # fmt: skip
    assert (alt, tmp_path / "e.db", 9) == (s.config_path, s.db_path, s.batch_size)
    assert (True, True) == (s.community_contribution, s.cloud_sync)


def test_runtime_dir_fallback_without_xdg_runtime_dir(sandbox: Sandbox) -> None:
    """Without XDG_RUNTIME_DIR the sockets go to a per-uid folder in the temp dir."""
    import os
    import tempfile

    env = env_of(sandbox)
    del env["XDG_RUNTIME_DIR"]
    assert Path(tempfile.gettempdir()) / f"rkd-{os.getuid()}" == load_settings(env).runtime_dir


BAD_FILES = [
    ("[telemetry]\nbatch_size = 'ten'\n", "telemetry.batch_size: expected `int`, got `str`"),
    ("[telemetry]\nbatch_size = 0\n", "telemetry.batch_size: expected `int` >= 1"),
    ("[telemetry]\nflush_interval_secs = -1\n", "telemetry.flush_interval_secs: expected `float` > 0.0"),
    ("[telemetry]\nbatchsize = 10\n", "unknown key 'telemetry.batchsize' (did you mean 'batch_size'?)"),
    ("[telemetry.privacy]\nstrip_pii = 'yes'\n", "telemetry.privacy.strip_pii: expected `bool`, got `str`"),
    ("[telemetry]\nenabled = 'sk-ant-api03-secret'\n", "telemetry.enabled: expected `bool`, got `str`"),
    ("telemetry = 3\n", "telemetry: expected a table, got a value"),
    ("[telemetry\nenabled = true\n", "invalid TOML: "),
    ('[telemetry]\ndb_path = "relative/x.db"\n', "telemetry.db_path: must be an absolute path"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_malformed_config_is_one_line_naming_file_and_key(
    sandbox: Sandbox, text: str, message: str
) -> None:
    """A bad file gives one line with the file and the key, never the value."""
    path = sandbox.write_config(text)
    with pytest.raises(ConfigError) as info:
        load_settings(env_of(sandbox))
    line = str(info.value)
    assert line.startswith(str(path))
    assert message in line
    assert "\n" not in line
    assert "sk-ant" not in line


def test_non_utf8_config(sandbox: Sandbox) -> None:
    """A binary file is reported as such."""
    sandbox.write_config("")
    sandbox.config_file.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(env_of(sandbox))


@pytest.mark.parametrize(
    "var", ["RK_TELEMETRY_COMMUNITY", "RK_TELEMETRY_CLOUD_SYNC", "RK_TELEMETRY_ENABLED"]
)
def test_malformed_env_value_names_the_variable(sandbox: Sandbox, var: str) -> None:
    """A variable that is not a boolean gives one line naming it, not echoing it."""
    with pytest.raises(ConfigError) as info:
        load_settings(env_of(sandbox, **{var: "maybe-secret"}))
    assert f"{var}: expected one of true/false, 1/0, yes/no, on/off" == str(info.value)


def test_malformed_switch_is_treated_as_kill(sandbox: Sandbox) -> None:
    """An unparseable RK_TELEMETRY_ENABLED disables the client (when in doubt, collect nothing)."""
    assert "RK_TELEMETRY_ENABLED" == kill_switch({"RK_TELEMETRY_ENABLED": "maybe"})


def test_cli_reports_bad_config_without_traceback(sandbox: Sandbox) -> None:
    """`rkd status` and `rkd run` print one line and exit 1 on a bad config (`run`: 78, so
    the service manager does not restart it in a loop)."""
    path = sandbox.write_config("[telemetry]\nretention_days = 'forever'\n")
    for args, code in ((("status",), 1), (("run",), 78)):
        proc = sandbox.rkd(*args)
        assert code == proc.returncode
        assert (
            f"Error: {path}: telemetry.retention_days: expected `int`, got `str`\n" == proc.stderr
        )
        assert "Traceback" not in proc.stderr


def test_cli_reports_bad_env_without_traceback(sandbox: Sandbox) -> None:
    """A malformed variable is one line from the CLI."""
    proc = sandbox.rkd("status", RK_TELEMETRY_CLOUD_SYNC="perhaps")
    assert (
        1,
        "Error: RK_TELEMETRY_CLOUD_SYNC: expected one of true/false, 1/0, yes/no, on/off\n",
    ) == (proc.returncode, proc.stderr)
