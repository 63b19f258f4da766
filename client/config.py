"""Settings: one frozen value built from kill switches, env vars, config file and defaults.

Precedence, highest first: an environment kill switch (``DO_NOT_TRACK``,
``RK_TELEMETRY_ENABLED=false``, ``REASONKIT_TELEMETRY=false``) > other environment
variables > ``config.toml`` > defaults. :func:`kill_switch` reads only the environment, so
a disabled application never touches a file. Errors are one line naming the file or
variable and the key, never the value (a value might be a secret pasted by mistake).
"""

from __future__ import annotations

import os
import stat
from os.path import isabs, join
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from msgspec import Meta, Struct
from rkd.client.switches import ConfigError, _env_enabled, kill_switch, parse_bool

__all__ = [
    "ConfigError", "Settings", "kill_switch", "load_settings", "load_settings_leniently",
    "parse_bool",
]  # fmt: skip

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from rkd.client.consent import ConsentRecord
    from rkd.client.files import StrPath

DB_FILENAME: Final = ".rk_telemetry.db"
MAX_CONFIG_BYTES: Final = 1 << 20  # a config file is a few hundred bytes; refuse a huge one


class PrivacyConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[telemetry.privacy]`` of config.toml."""

    strip_pii: bool = True
    block_sensitive: bool = False
    redact_file_paths: bool = True
    differential_privacy: bool = False
    dp_epsilon: Annotated[float, Meta(gt=0.0, le=100.0)] = 1.0
    # Public service domains kept readable wherever they appear (added to the defaults).
    allowed_domains: tuple[
        Annotated[
            str,
            Meta(pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})+\Z"),
        ],
        ...,
    ] = ()


DEFAULT_SYNC_ENDPOINT: Final = "https://telemetry.reasonkit.sh"
# An https URL with a host (and port) and no user, query or fragment: "https://host[:port][/base]".
SyncEndpoint = Annotated[
    str,
    Meta(
        pattern=r"^https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]{0,200})?\Z",
        description="The ingestion server: https only (TLS 1.3 is the floor).",
    ),
]
# A pin: the base64 SHA-256 of a certificate's SubjectPublicKeyInfo (as HPKP wrote them),
# optionally prefixed "sha256/".
SpkiPin = Annotated[str, Meta(pattern=r"^(sha256/)?[A-Za-z0-9+/]{43}=\Z")]


class SyncConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[telemetry.sync]`` of config.toml: how the daemon uploads (Pro cloud sync)."""

    pins: tuple[SpkiPin, ...] = ()  # any of them must match the server's chain
    ca_file: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None  # else system CAs
    interval_secs: Annotated[float, Meta(ge=1.0, le=86_400.0)] = 300.0
    max_batch_events: Annotated[int, Meta(ge=1, le=1000)] = 1000


class ModelPrice(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of ``[telemetry.prices]``: USD per million tokens (for `rkd metrics`)."""

    input: Annotated[float, Meta(ge=0.0, le=100_000.0)]
    output: Annotated[float, Meta(ge=0.0, le=100_000.0)]


# \Z, not $: msgspec matches with re.search, where $ also matches before a final newline.
PriceKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]*\Z", max_length=64)]


class TelemetryConfigFile(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[telemetry]`` of config.toml, with the spec's defaults (§5.3)."""

    enabled: bool | msgspec.UnsetType = msgspec.UNSET  # UNSET: the file did not decide
    db_path: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    community_contribution: bool = False
    sync_enabled: bool = False
    sync_endpoint: SyncEndpoint = DEFAULT_SYNC_ENDPOINT
    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 100
    flush_interval_secs: Annotated[float, Meta(gt=0.0, le=86_400.0)] = 60.0
    max_db_size_mb: Annotated[int, Meta(ge=1, le=1_000_000)] = 100
    retention_days: Annotated[int, Meta(ge=1, le=36_500)] = 90
    privacy: PrivacyConfig = PrivacyConfig()
    sync: SyncConfig = SyncConfig()
    prices: dict[PriceKey, ModelPrice] = {}


class Paths(Struct, frozen=True, kw_only=True):
    """Where rkd keeps its files, as text. An application's start-up never loads pathlib
    (~4 ms with what it imports); the daemon and CLI read them as Paths from Settings."""

    config: str  # the config file
    db: str  # the database
    data: str  # the data folder (consent record, salt)
    spool: str  # the spool folder, inside the data folder
    runtime: str  # the runtime folder (lock, sockets)


class Settings(Struct, frozen=True, kw_only=True):
    """Everything the client, daemon and CLI need, resolved once and passed explicitly."""

    enabled: bool
    decided_by: str  # which switch decided `enabled`, e.g. "env:DO_NOT_TRACK" or "default"
    paths: Paths
    community_contribution: bool
    cloud_sync: bool  # Pro cloud sync asked for (sync_enabled or RK_TELEMETRY_CLOUD_SYNC)
    sync_endpoint: str
    sync: SyncConfig
    batch_size: int
    flush_interval_secs: float
    max_db_size_mb: int
    retention_days: int
    privacy: PrivacyConfig
    categories: frozenset[str]  # consent categories whose events may be stored
    prices: dict[str, ModelPrice]  # model id prefix -> price, overriding the shipped table

    @property
    def config_path(self) -> Path:
        return _path(self.paths.config)

    @property
    def db_path(self) -> Path:
        return _path(self.paths.db)

    @property
    def data_dir(self) -> Path:
        return _path(self.paths.data)

    @property
    def spool_dir(self) -> Path:
        return _path(self.paths.spool)

    @property
    def runtime_dir(self) -> Path:
        return _path(self.paths.runtime)


def _path(text: str) -> Path:
    from pathlib import Path  # loaded by whoever asks for a Path: the daemon, the CLI

    return Path(text)


# -- paths ---------------------------------------------------------------------------------


def _clean(path: str) -> str:
    """``path`` as pathlib would write it: no repeated slashes, no "." parts, no
    trailing slash (".." stays: it may cross a symlink)."""
    parts = [p for p in path.split("/") if p and p != "."]
    return ("/" if path.startswith("/") else "") + "/".join(parts) or "."


def _home(env: Mapping[str, str]) -> str:
    if home := env.get("HOME"):
        return home
    home = os.path.expanduser("~")  # the password database's, when HOME is not set
    if home.startswith("~"):  # nobody knows it: relative paths would land in the cwd
        raise RuntimeError("Could not determine home directory.")  # as Path.home()
    return home


def _xdg(env: Mapping[str, str], var: str, default: str) -> str:
    value = env.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    return _clean(value if isabs(value) else join(_home(env), default))


def _expand(value: str, env: Mapping[str, str]) -> str:
    """``~`` expanded with the HOME of ``env`` (not necessarily this process's)."""
    if value == "~" or value.startswith("~/"):
        return _clean(join(_home(env), value[2:]))
    return _clean(value)


def config_path(env: Mapping[str, str]) -> str:
    """``RK_CONFIG``, else ``$XDG_CONFIG_HOME/reasonkit/config.toml``."""
    if env.get("RK_CONFIG"):
        return _expand(env["RK_CONFIG"], env)
    return join(_xdg(env, "XDG_CONFIG_HOME", ".config"), "reasonkit", "config.toml")


def data_dir(env: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/reasonkit`` (default ``~/.local/share/reasonkit``)."""
    return join(_xdg(env, "XDG_DATA_HOME", ".local/share"), "reasonkit")


def runtime_dir(env: Mapping[str, str]) -> str:
    """Per-user socket folder: ``$XDG_RUNTIME_DIR/rkd``, else ``<tmp>/rkd-<uid>``."""
    base = env.get("XDG_RUNTIME_DIR", "")
    if isabs(base):
        return join(_clean(base), "rkd")
    import tempfile  # ~5 ms (it loads random and shutil): only without XDG_RUNTIME_DIR

    return join(_clean(tempfile.gettempdir()), f"rkd-{os.getuid()}")


# -- environment ---------------------------------------------------------------------------


# -- config file ---------------------------------------------------------------------------


def _explain(err: msgspec.ValidationError, path: StrPath) -> ConfigError:
    text = str(err)
    if " - at `key` in `$" in text:  # a dict key, e.g. a model id in [telemetry.prices]
        where = text.rsplit("`$", 1)[1].rstrip("`")
        return ConfigError(
            f"{path}: telemetry{where}: a key is not a model id (letters, digits, _ . : + -)"
        )
    message, _, where = text.partition(" - at `$")
    # msgspec does not name dict keys in paths ("$.prices[...].input"): say "an entry".
    where = where.rstrip("`").replace("[...]", ".<entry>")
    key = "telemetry" + where.replace("[", ".").replace("]", "")
    if message.startswith("Object contains unknown field"):
        import difflib  # only to explain a mistake

        name = message.split("`")[1]
        known = list(TelemetryConfigFile.__struct_fields__) + list(PrivacyConfig.__struct_fields__)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return ConfigError(f"{path}: unknown key '{key}.{name}'{hint}")
    return ConfigError(f"{path}: {key}: {message[0].lower()}{message[1:]}")


def read_small_file(path: StrPath, limit: int) -> bytes:
    """The bytes of the regular file ``path``; at most ``limit`` bytes, read without blocking.

    The files rkd reads (config.toml, consent.json) belong to the user, but a mistake or a
    hostile hand must not hang or swamp the program reading them: a FIFO would block a
    plain read forever and ``/dev/zero`` never ends. Raises FileNotFoundError or OSError
    as ``open`` does, and ValueError with a one-line reason (no path) for anything else.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        parts: list[bytes] = []
        size = 0
        while size <= limit and (part := os.read(fd, limit + 1 - size)):
            parts.append(part)
            size += len(part)
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(f"too large (more than {limit} bytes)")
    return b"".join(parts)


def read_config_file(path: StrPath) -> TelemetryConfigFile:
    """Read ``[telemetry]`` from a TOML file; a missing file gives the defaults.

    Every problem is one ConfigError naming the file, a hostile file included (huge,
    not a regular file, not UTF-8, nested deeper than the parser can recurse).
    """
    section, _ = _read_section(path)
    return _convert(section, path)


def _read_section(path: StrPath) -> tuple[dict[str, Any], str]:
    """``[telemetry]`` of the file as parsed TOML, and the file's text ("" if missing)."""
    try:
        raw = read_small_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return {}, ""
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    import tomllib  # ~3 ms: only when there is a file to parse

    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    section = doc.get("telemetry", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: telemetry: expected a table, got a value")
    return section, text


def _convert(section: dict[str, Any], path: StrPath) -> TelemetryConfigFile:
    if not section:  # no file, or no [telemetry] in it: the defaults, without building
        return TelemetryConfigFile()  # msgspec's type info (~1 ms of every start)
    try:
        return msgspec.convert(section, TelemetryConfigFile)
    except msgspec.ValidationError as e:
        raise _explain(e, path) from None
    except RecursionError:
        raise ConfigError(f"{path}: telemetry: nested too deeply") from None


# -- a broken file must not block a right ----------------------------------------------


MAX_IGNORED_KEYS: Final = 100  # keys left out of one file before giving up on all of it


def read_config_leniently(path: StrPath) -> tuple[TelemetryConfigFile, list[str]]:
    """Like :func:`read_config_file`, but what cannot be used is left out, not fatal.

    For the commands that exercise the user's rights (disable, delete, export, stop)
    and those that only read (audit, metrics): each key that cannot be used is dropped
    and its default applies, every other key keeps its value (a custom ``db_path`` still
    names the database to delete). Returns the settings and one warning per problem,
    naming the file, the line (when it can be found) and the key, never the value. A
    file that cannot be parsed at all gives the defaults and one warning.
    """
    try:
        section, text = _read_section(path)
    except ConfigError as e:
        return TelemetryConfigFile(), [f"{e}; using the defaults"]
    warnings: list[str] = []
    error = "telemetry: nested too deeply"
    for _ in range(MAX_IGNORED_KEYS):
        try:
            return msgspec.convert(section, TelemetryConfigFile), warnings
        except msgspec.ValidationError as e:
            keys = _bad_keys(e)
            error = str(_explain(e, path)).removeprefix(f"{path}: ")
            if not keys or not _drop(section, keys):
                break
            line = _line_of(text, keys)
            where = f"{path}, line {line}" if line else str(path)
            warnings.append(f"{where}: {error}; ignored, the default applies")
        except RecursionError:
            break
    warnings.append(f"{path}: {error}; using the defaults for the whole file")
    return TelemetryConfigFile(), warnings


def _bad_keys(err: msgspec.ValidationError) -> list[str]:
    """The key path (below ``telemetry``) msgspec's error points at, cut at the first
    list index or dict key (``prices[...]`` drops the whole table)."""
    text = str(err)
    if " - at `key` in `$" in text:
        path = text.rsplit("`$", 1)[1].rstrip("`")
        name = None
    else:
        message, _, path = text.partition(" - at `$")
        path = path.rstrip("`")
        name = (
            message.split("`")[1] if message.startswith("Object contains unknown field") else None
        )
    keys = [k for k in path.split("[", 1)[0].split(".") if k]
    if name is not None and "[" not in path:
        keys.append(name)
    return keys


def _drop(section: dict[str, Any], keys: list[str]) -> bool:
    """Remove ``keys`` (a path) from ``section``; False when it is not there."""
    table: Any = section
    for k in keys[:-1]:
        table = table.get(k) if isinstance(table, dict) else None
    if not isinstance(table, dict) or keys[-1] not in table:
        return False
    del table[keys[-1]]
    return True


def _line_of(text: str, keys: list[str]) -> int | None:
    """The line (1-based) that sets ``telemetry.<keys>``: tomllib gives no line numbers
    for a value it parsed, so the key is looked for, table by table. None if not found
    (a key inside an inline table, say)."""
    import re  # only to explain a mistake

    table_re = re.compile(r"^\s*\[\s*([^\[\]#]+?)\s*\]")
    key_re = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")
    want = ".".join(["telemetry", *keys])

    def norm(name: str) -> str:
        return ".".join(p.strip().strip("\"'") for p in name.split("."))

    table = ""
    for n, line in enumerate(text.splitlines(), 1):
        if m := table_re.match(line):
            table = norm(m.group(1))
            if table == want:
                return n
        elif m := key_re.match(line):
            key = norm(m.group(1))
            full = f"{table}.{key}" if table else key
            if full == want or want.startswith(full + "."):
                return n
    return None


def _db_path(env: Mapping[str, str], file: TelemetryConfigFile, cfg: str) -> str:
    if env.get("RK_TELEMETRY_PATH"):
        p, where = _expand(env["RK_TELEMETRY_PATH"], env), "RK_TELEMETRY_PATH"
    elif file.db_path is not None:
        p, where = _expand(file.db_path, env), f"{cfg}: telemetry.db_path"
    else:
        return join(data_dir(env), DB_FILENAME)
    if not isabs(p):
        raise ConfigError(f"{where}: must be an absolute path (or start with ~)")
    return p


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Resolve the settings from ``env`` (default ``os.environ``) and the config file."""
    return _load(os.environ if env is None else env, None)


def load_settings_leniently(env: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """The settings whatever is wrong with the config file, the environment or the
    consent record, and one warning per problem (see :func:`read_config_leniently`).

    What cannot be used takes its default; a malformed switch or an unreadable consent
    record turns telemetry off (when in doubt, collect nothing). Never raises
    ConfigError. For the commands that must work whatever the configuration says.
    """
    warnings: list[str] = []
    return _load(os.environ if env is None else env, warnings), warnings


def _load(env: Mapping[str, str], warnings: list[str] | None) -> Settings:
    """Strict (``warnings`` None: the first problem raises ConfigError) or lenient."""

    def problem(e: ConfigError, fallback: Any, note: str) -> Any:
        if warnings is None:
            raise e
        warnings.append(f"{e}; {note}")
        return fallback

    cfg = config_path(env)
    if warnings is None:
        file = read_config_file(cfg)
    else:
        file, found = read_config_leniently(cfg)
        warnings += found
    for var in ("RK_TELEMETRY_ENABLED", "REASONKIT_TELEMETRY", "DO_NOT_TRACK"):
        if env.get(var, "").strip():
            try:
                parse_bool(env[var], var)  # a malformed switch is an error to report
            except ConfigError as e:
                problem(e, None, "telemetry is off")  # kill_switch() reads it so
    dd = data_dir(env)
    try:
        enabled, decided_by, categories = _decide(env, file, dd)
    except ConfigError as e:  # the consent record cannot be read
        off = (False, "unreadable consent", frozenset[str]())
        enabled, decided_by, categories = problem(e, off, "telemetry is off")

    def env_bool(var: str, default: bool) -> bool:
        try:
            return parse_bool(env[var], var) if env.get(var, "").strip() else default
        except ConfigError as e:
            return bool(problem(e, default, "using the default"))

    try:
        db_path = _db_path(env, file, cfg)
    except ConfigError as e:
        db_path = problem(e, join(dd, DB_FILENAME), "using the default database")
    paths = Paths(
        config=cfg, db=db_path, data=dd, spool=join(dd, "spool"), runtime=runtime_dir(env)
    )
    return Settings(
        enabled=enabled,
        decided_by=decided_by,
        paths=paths,
        community_contribution=env_bool("RK_TELEMETRY_COMMUNITY", file.community_contribution),
        cloud_sync=env_bool("RK_TELEMETRY_CLOUD_SYNC", file.sync_enabled),
        sync_endpoint=_sync_endpoint(env, file.sync_endpoint, problem),
        sync=file.sync,
        batch_size=file.batch_size,
        flush_interval_secs=file.flush_interval_secs,
        max_db_size_mb=file.max_db_size_mb,
        retention_days=file.retention_days,
        privacy=file.privacy,
        categories=categories,
        prices=dict(file.prices),
    )


def _sync_endpoint(env: Mapping[str, str], default: str, problem: Any) -> str:
    """RK_TELEMETRY_SYNC_ENDPOINT, checked as the file's key is, or the file's."""
    value = env.get("RK_TELEMETRY_SYNC_ENDPOINT", "").strip()
    if not value:
        return default
    import re

    if re.fullmatch(
        r"https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]{0,200})?", value
    ):
        return value
    err = ConfigError(
        "RK_TELEMETRY_SYNC_ENDPOINT: expected an https URL (https://host[:port][/path])"
    )
    return str(problem(err, default, "using the configured endpoint"))


def _decide(
    env: Mapping[str, str], file: TelemetryConfigFile, data: StrPath
) -> tuple[bool, str, frozenset[str]]:
    """(enabled, what decided it, consented categories) from ``env``, the file, the record."""
    from rkd.client.schema import CATEGORIES  # not at import: the kill-switch path skips it

    categories = frozenset(CATEGORIES)
    if killed := kill_switch(env):
        return False, f"env:{killed}", categories
    if (enabler := _env_enabled(env)) is not None:
        enabled, decided_by = True, f"env:{enabler}"
    elif file.enabled is not msgspec.UNSET:
        enabled, decided_by = file.enabled, "config"
    else:
        enabled, decided_by = False, "default"
    if decided_by == "default" or enabled:  # the consent record decides, or narrows
        consent = _consent(data)
        if consent is not None and decided_by == "default":
            enabled, decided_by = consent.choice == "granted", "consent"
        if consent is not None and consent.choice == "granted":
            categories = frozenset(consent.categories)
    return enabled, decided_by, categories


def categories_now(settings: Settings, env: Mapping[str, str]) -> frozenset[str]:
    """The categories an application holding ``settings`` may send now; empty when off.

    Decided again from the switches in ``env`` and from the files ``settings`` names (its
    config file, the consent record in its data folder), so an application built with
    its own ``env`` or ``settings`` keeps to them. Raises ConfigError like load_settings.
    """
    if kill_switch(env) is not None:
        return frozenset()
    file = read_config_file(settings.paths.config)
    enabled, _, categories = _decide(env, file, settings.paths.data)
    return categories if enabled else frozenset()


def _consent(data: StrPath) -> ConsentRecord | None:
    from rkd.client.consent import ConsentError, read_consent

    try:
        return read_consent(data).current
    except ConsentError as e:
        raise ConfigError(str(e)) from None
