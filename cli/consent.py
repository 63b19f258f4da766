"""`rkd enable` and `rkd disable`: the user's consent, by data category.

The decision is kept as a consent record (when, which consent text, which schema, which
categories). The config file outranks the record, so when it says the opposite, its
``enabled`` line is changed in place, and nothing else in the file (comments, order,
other tables) is touched.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import click
from rkd.client.config import MAX_CONFIG_BYTES, Settings, kill_switch, read_small_file
from rkd.client.consent import ConsentError, ConsentRecord, now_iso, record_decision
from rkd.client.control import DaemonNotResponding, DaemonUnavailable, request
from rkd.client.files import write_atomic
from rkd.client.schema import CATEGORIES
from rkd.client.wire import ReloadRequest

CONSENT_TEXT = """\
ReasonKit Telemetry Consent
===========================

We collect anonymous usage data to improve ReasonKit.

What we collect:
  - Command usage (which commands, not content)
  - Performance metrics (latency, error rates)
  - ThinkTool usage patterns
  - Error types (not messages)

What we NEVER collect:
  - Query/response content
  - API keys or credentials
  - Personal information
  - File contents

Everything stays on this machine unless you separately enable cloud sync.
You can disable telemetry at any time with:
  {prefix} disable
"""

NO_DAEMON = (
    "\nNo rkd daemon is running, so nothing is stored yet: start one with 'rkd start',"
    " or keep one running with 'rkd service install'."
)

_ENABLED_LINE = re.compile(r"^(\s*enabled\s*=\s*)(true|false)(\s*(#.*)?)$")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\" -]+?)\s*\]\s*(#.*)?$")


def parse_categories(value: str | None) -> tuple[str, ...]:
    """`a,b` -> ("a", "b"), checked against the schema's categories (one clear line)."""
    if value is None:
        return tuple(CATEGORIES)
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown category {unknown[0]!r}; choose from {', '.join(CATEGORIES)}"
            if unknown else "give at least one category"
        )  # fmt: skip
    return names


def set_config_enabled(path: Path, value: bool) -> bool:
    """Set ``[telemetry] enabled`` in place if the file says otherwise; True if changed.

    Only that one line is rewritten (its trailing comment kept); the file keeps its mode.
    A file that does not mention ``enabled`` under ``[telemetry]`` is left alone.
    """
    try:  # load_settings read this file already; it may have changed since
        text = read_small_file(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        return False
    except OSError as e:
        raise click.ClickException(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{path}: not UTF-8 text") from None
    except ValueError as e:  # not a regular file, too large
        raise click.ClickException(f"{path}: {e}") from None
    lines = text.splitlines(keepends=True)
    table = None
    for i, line in enumerate(lines):
        if m := _TABLE.match(line.rstrip("\r\n")):
            table = m.group(1).replace('"', "").strip()
            continue
        m = _ENABLED_LINE.match(line.rstrip("\r\n"))
        if table == "telemetry" and m and (m.group(2) == "true") != value:
            ending = line[len(line.rstrip("\r\n")) :]
            lines[i] = f"{m.group(1)}{'true' if value else 'false'}{m.group(3)}{ending}"
            _write_keeping_mode(path, "".join(lines))
            return True
    return False


def _write_keeping_mode(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"), path.stat().st_mode & 0o777)


def _tell_daemon(settings: Settings, not_running: str = "") -> str:
    """Have a running daemon reload; what to add to the message (``not_running`` when
    none runs)."""
    try:
        reply = request(settings.runtime_dir, ReloadRequest(), timeout_ms=5000, probe=True)
    except DaemonNotResponding as e:
        return f"\nWarning: {e}: it did not get the change; run 'rkd reload' once it answers."
    except DaemonUnavailable:
        return not_running
    return "" if reply.ok else f"\nWarning: the daemon kept its old settings: {reply.error}"


def _refuse_under_kill_switch(action: str) -> None:
    switch = kill_switch(os.environ)
    if switch is not None:
        raise click.ClickException(
            f"{switch} is set in your environment and overrides everything: telemetry stays "
            f"off, and nothing was changed by '{action}'. Unset {switch} first."
        )


def _record(settings: Settings, choice: str, categories: Iterable[str]) -> None:
    try:
        record_decision(settings.data_dir, ConsentRecord(
            choice=choice, at=now_iso(), categories=tuple(categories)))  # type: ignore[arg-type]  # fmt: skip
    except (ConsentError, OSError) as e:
        raise click.ClickException(f"cannot record your decision: {e}") from None


def enable(settings: Settings, prefix: str, yes: bool, only: str | None) -> str:
    """Ask for consent and record it; return what to tell the user."""
    _refuse_under_kill_switch("enable")
    categories = parse_categories(only)
    click.echo(CONSENT_TEXT.format(prefix=prefix))
    click.echo("Categories: " + ", ".join(categories) + "\n")
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(
                "consent needs your answer: run this in a terminal, or pass --yes to agree"
            )
        if not click.confirm("Do you consent to telemetry collection?", default=False):
            return "Nothing changed: telemetry stays off."
    _record(settings, "granted", categories)
    note = ""
    if set_config_enabled(settings.config_path, True):
        note = f"\n(Changed 'enabled = false' to 'enabled = true' in {settings.config_path}.)"
    return (
        "Telemetry enabled. Thank you for helping improve ReasonKit!"
        + note
        + _tell_daemon(settings, NO_DAEMON)
    )


def _env_note(settings: Settings) -> str:
    """After `disable`: what decides for programs started with this environment."""
    if not settings.decided_by.startswith("env:"):
        return ""
    var = settings.decided_by[4:]
    if kill_switch(os.environ) == var:
        return (f"\nNote: {var} in your environment also keeps telemetry off for programs"
                " started with it; for the others, this decision does.")  # fmt: skip
    return (f"\nNote: {var} in your environment outranks this decision: programs started"
            " with it still send telemetry. Unset it to stop them too.")  # fmt: skip


def disable(settings: Settings, prefix: str, category: str | None) -> str:
    """Withdraw consent (all of it, or one category) and record it."""
    if category is not None:
        (name,) = parse_categories(category)
        remaining = [c for c in sorted(settings.categories) if c != name]
        if not settings.enabled or not remaining:
            return disable(settings, prefix, None)
        _record(settings, "granted", remaining)
        return (f"Category '{name}' disabled; still collected: {', '.join(remaining)}."
                + _tell_daemon(settings))  # fmt: skip
    _record(settings, "withdrawn", ())
    note = ""
    if set_config_enabled(settings.config_path, False):
        note = f"\n(Changed 'enabled = true' to 'enabled = false' in {settings.config_path}.)"
    note += _env_note(settings)
    return (
        f"Telemetry disabled.\nExisting data retained. Use '{prefix} delete' to remove."
        + note + _tell_daemon(settings)
    )  # fmt: skip
