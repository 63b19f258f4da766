"""The `rkd` command: parse, call, render. User mistakes are one line and exit 1."""

from __future__ import annotations

import importlib
import json
import sys
from typing import ClassVar

import click
from rkd.client.config import ConfigError, Settings, load_settings, load_settings_leniently
from rkd.client.consent import ConsentError
from rkd.client.control import DaemonNotResponding, DaemonUnavailable, request
from rkd.client.wire import EffectiveSettings, FlushRequest, StatusRequest
from rkd.daemon.storage import StorageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 88}


def plural(n: int, word: str) -> str:
    """``1 event``, ``2,000 events``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def settings(lenient: bool = False) -> Settings:
    """The resolved settings, or one clear line naming the file/variable and key.

    ``lenient``: for the commands that must work whatever the configuration says
    (disable, delete, export, stop; audit and metrics, which only read). What cannot be
    used takes its default, and each problem is one warning line on stderr naming the
    file, the line and the key.
    """
    if not lenient:
        try:
            return load_settings()
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
    s, warnings = load_settings_leniently()
    for w in warnings:
        click.echo(f"Warning: {w}", err=True)
    return s


class LazyGroup(click.Group):
    """A group whose bigger commands are imported only when they are used.

    `rkd status` should not pay for importing export, metrics or service management.
    """

    LAZY: ClassVar[dict[str, str]] = {
        "export": "rkd.cli.export:export",
        "metrics": "rkd.cli.metrics:metrics",
        "service": "rkd.cli.service:service",
        "start": "rkd.cli.service:start",
        "stop": "rkd.cli.service:stop",
        "sync": "rkd.cli.sync:sync",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, attr = self.LAZY[name].split(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="rkd", prog_name="rkd")
def cli() -> None:
    """rkd: privacy-first, opt-in usage telemetry for ReasonKit and any Python CLI.

    Nothing is collected until you opt in; everything stays on this machine.
    """


@cli.command()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["auto", "json", "console"]), default="auto",
    show_default=True, help="auto: JSON unless stderr is a terminal.",
)  # fmt: skip
@click.option(
    # 78 is rkd.daemon.main.EXIT_PERMANENT (not imported here: `rkd status` would pay for it)
    "--permanent-exit", type=click.IntRange(0, 255), default=78, show_default=True,
    help="Exit status when starting again cannot help. The launchd agent passes 0: its "
    "KeepAlive restarts only a failed exit, and has no list of statuses to spare.",
)  # fmt: skip
def run(log_level: str, log_format: str, permanent_exit: int) -> None:
    """Run the daemon in the foreground (what the service manager starts).

    Exits 78 (or --permanent-exit) when starting again cannot help (a kill switch, a bad
    config file, another daemon running, a database from a newer rkd), 1 on other start
    failures.

    \b
    Example:
      rkd run --log-level debug
    """
    from rkd.daemon.main import StartError
    from rkd.daemon.main import run as run_daemon

    json_logs = None if log_format == "auto" else log_format == "json"
    try:
        s = load_settings()
        run_daemon(s, log_level.lower(), json_logs)
    except (ConfigError, StartError) as e:
        click.echo(f"Error: {e}", err=True)
        permanent = isinstance(e, ConfigError) or e.permanent
        sys.exit(permanent_exit if permanent else 1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show whether telemetry is on, what is stored, and the daemon's counters.

    Works with the daemon down (reads the database read-only).

    \b
    Example:
      rkd status --json
    """
    from rkd.cli.status import gather, render

    try:
        info = gather(settings())
    except (StorageError, ConsentError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else render(info))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--fix", is_flag=True,
    help="First run today's firewall and vocabularies over every stored event, rewriting"
    " what they would now catch (after a settings or detector change).",
)  # fmt: skip
def audit(as_json: bool, fix: bool) -> None:
    """Scan everything stored for anything that looks private; exit 1 if found.

    Reports counts by category (email, ip, anthropic_key, path, ...), never the values.
    Run it after changing the privacy settings, or simply to check. Works with the
    daemon down (reads the database read-only; --fix writes it, through the daemon when
    one runs).

    \b
    Examples:
      rkd audit --json
      rkd audit --fix
    """
    from rkd.cli.audit import audit as run_audit
    from rkd.cli.audit import progress, render

    s = settings(lenient=True)
    fixed = _refilter(s) if fix else None
    try:
        with progress(s.db_path) as tick:
            report = run_audit(s, tick)
    except StorageError as e:
        raise click.ClickException(str(e)) from None
    if fixed is not None:
        report["fixed"] = fixed
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    if report["findings"]:
        sys.exit(1)


def _refilter(s: Settings) -> dict[str, int]:
    """`rkd audit --fix`: through the daemon, or offline under its lock."""
    import msgspec
    from rkd.client.wire import RefilterRequest
    from rkd.daemon.refilter import refilter_offline
    from rkd.daemon.runtime import RuntimeDirError

    try:
        reply = request(s.runtime_dir, RefilterRequest(), timeout_ms=600_000)
    except DaemonUnavailable:
        try:
            return msgspec.structs.asdict(refilter_offline(s))
        except (RuntimeDirError, StorageError) as e:
            raise click.ClickException(f"cannot fix now: {e}") from None
    if not reply.ok:
        raise click.ClickException(reply.error or "audit --fix failed")
    return reply.refiltered


def _prefix(ctx: click.Context) -> str:
    """How the user calls us: "rkd", or "rk-core telemetry" when mounted in a host CLI."""
    return ctx.parent.command_path if ctx.parent is not None else "rkd"


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Consent without the prompt (for scripts).")
@click.option(
    "--only", metavar="CATS", help="Comma-separated categories to consent to (default: all)."
)
@click.pass_context
def enable(ctx: click.Context, yes: bool, only: str | None) -> None:
    """Opt in to telemetry, after reading what is and is never collected.

    Shows the consent text and asks [y/N] (No by default). Your decision is recorded
    (when, which text, which categories) and shown by `status` and `export`.
    Categories: command_usage, performance, thinktool_usage, error_types,
    session_metadata.

    \b
    Examples:
      rkd enable
      rkd enable --yes --only command_usage,error_types
    """
    from rkd.cli.consent import enable as do_enable

    click.echo(do_enable(settings(), _prefix(ctx), yes, only))


@cli.command()
@click.option("--category", metavar="CAT", help="Stop collecting only this category.")
@click.pass_context
def disable(ctx: click.Context, category: str | None) -> None:
    """Opt out: nothing more is collected; what is stored stays until `delete`.

    A running daemon writes what it already holds and accepts nothing after that;
    running applications stop sending within 5 seconds.

    \b
    Examples:
      rkd disable
      rkd disable --category performance
    """
    from rkd.cli.consent import disable as do_disable

    click.echo(do_disable(settings(lenient=True), _prefix(ctx), category))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--limit", default=1000, show_default=True, type=click.IntRange(1, 10_000),
    help="Show at most this many pending events (oldest first).",
)  # fmt: skip
def show(as_json: bool, limit: int) -> None:
    """Show the events waiting in the daemon, exactly as they will be stored.

    They have already passed the privacy firewall. Needs the running daemon (pending
    events live in its memory).

    \b
    Example:
      rkd show --json
    """
    from rkd.cli.show import render
    from rkd.client.wire import ShowRequest

    s = settings()
    try:
        reply = request(s.runtime_dir, ShowRequest(limit=limit), timeout_ms=5000)
    except DaemonUnavailable as e:
        raise click.ClickException(f"{e}; pending events live in the daemon's memory") from None
    if as_json:
        click.echo(json.dumps({"pending": reply.pending, "events": reply.events}, indent=2))
    else:
        click.echo(render(reply.events, reply.pending))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain(as_json: bool) -> None:
    """Explain every event and field rkd can collect, and why; and what it never collects.

    Generated from the event schema itself.

    \b
    Example:
      rkd explain | less
    """
    from rkd.cli.explain import explain as build
    from rkd.cli.explain import render

    doc = build(settings(lenient=True))
    click.echo(json.dumps(doc, indent=2) if as_json else render(doc))


@cli.command()
@click.option("--confirm", is_flag=True, help="Delete without the prompt (for automation).")
@click.pass_context
def delete(ctx: click.Context, confirm: bool) -> None:
    """Erase all telemetry data: events, sessions, spool, pending events, hashing salt.

    Shows what will be deleted and asks [y/N] first. Works with the daemon down.

    \b
    Examples:
      rkd delete
      rkd delete --confirm
    """
    from rkd.cli.delete import run_delete

    try:
        run_delete(settings(lenient=True), confirm, click.echo)
    except StorageError as e:
        raise click.ClickException(str(e)) from None


@cli.command()
def prune() -> None:
    """Delete events older than retention_days, then the oldest beyond max_db_size_mb.

    The daemon does this every hour; daily aggregates (what `metrics` reads) are kept,
    those over a year old merged into one row per month.
    Works with the daemon down.

    \b
    Example:
      rkd prune
    """
    from rkd.cli.status import file_differs
    from rkd.client.wire import PruneRequest

    s = settings()
    try:
        st = request(s.runtime_dir, StatusRequest(), timeout_ms=2000).status
        reply = request(s.runtime_dir, PruneRequest(), timeout_ms=120_000)
    except DaemonNotResponding as e:
        raise click.ClickException(f"{e}; nothing was pruned") from None
    except DaemonUnavailable:
        removed, note = _prune_offline(s), ""
        used: Settings | EffectiveSettings = s
    else:
        if not reply.ok:
            raise click.ClickException(reply.error or "prune failed")
        removed = reply.deleted
        used = st.settings if st is not None and st.settings is not None else s
        note = file_differs(s, used, ("retention_days", "max_db_size_mb"))
    click.echo(
        f"Pruned {plural(removed, 'event')} (retention {used.retention_days} days, "
        f"size cap {used.max_db_size_mb} MB).{note}"
    )


def _prune_offline(s: Settings) -> int:
    from rkd.client.clock import DAY_MS, now_ms
    from rkd.daemon.rollup import rollup_all
    from rkd.daemon.runtime import DaemonLock, RuntimeDirError
    from rkd.daemon.storage import Storage

    if not s.db_path.exists():
        return 0
    try:
        with DaemonLock(s.runtime_dir):
            storage = Storage(s.db_path)
            try:
                removed = storage.prune(s.retention_days, s.max_db_size_mb)
                rollup_all(storage.db, now_ms() // DAY_MS)
                return removed
            finally:
                storage.close()
    except (RuntimeDirError, StorageError) as e:
        raise click.ClickException(f"cannot prune now: {e}") from None


@cli.command()
def flush() -> None:
    """Write the daemon's pending events to the database now (and ingest the spool).

    \b
    Example:
      rkd flush
    """
    s = settings()
    try:
        reply = request(s.runtime_dir, FlushRequest(), timeout_ms=10_000, probe=True)
    except DaemonNotResponding as e:
        raise click.ClickException(f"{e}; its pending events stay in its memory") from None
    except DaemonUnavailable as e:
        raise click.ClickException(f"{e}; nothing is pending while it is down") from None
    if not reply.ok:
        raise click.ClickException(reply.error or "flush failed")
    click.echo(f"Flushed {plural(reply.flushed, 'event')}.")


@cli.command()
def reload() -> None:
    """Make the running daemon re-read the config file and your consent now.

    `enable`, `disable` do this for you; run it after editing config.toml. A config
    file with a mistake is refused and the daemon keeps its settings.

    \b
    Example:
      rkd reload
    """
    from rkd.client.wire import ReloadRequest

    s = settings()  # a file with a mistake is one line here, before the daemon sees it
    try:
        reply = request(s.runtime_dir, ReloadRequest(), timeout_ms=5000, probe=True)
        st = request(s.runtime_dir, StatusRequest(), timeout_ms=2000).status
    except DaemonNotResponding as e:
        raise click.ClickException(str(e)) from None
    except DaemonUnavailable as e:
        raise click.ClickException(f"{e}; it reads the config when it starts") from None
    if not reply.ok:
        raise click.ClickException(f"the daemon kept its old settings: {reply.error}")
    used = st.settings if st is not None else None
    if used is None:
        click.echo("Reloaded.")
        return
    import os

    where = used.config_path
    if not os.path.exists(where):
        where = f"(no file at {where}: the defaults)"
    click.echo(
        f"Reloaded {where}: flush every {used.flush_interval_secs:g} s, "
        f"batch {used.batch_size}, retention {used.retention_days} days, "
        f"size cap {used.max_db_size_mb} MB."
    )


@cli.command()
@click.option(
    "--events",
    "-n",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="How many events to emit in total.",
)
@click.option(
    "--processes",
    "-p",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="How many client processes emit them.",
)
@click.option("--keep", is_flag=True, help="Keep the throwaway folder and print its path.")
def demo(events: int, processes: int, keep: bool) -> None:  # fmt: skip
    """Show the whole pipeline on a throwaway sandbox (your real telemetry is untouched).

    Starts a daemon in a temporary folder, runs a realistic ReasonKit workload from
    several processes through the real client, stops the daemon gracefully and
    summarises what was stored. Everything is removed afterwards.

    \b
    Example:
      rkd demo --events 5000 --processes 8
    """
    from rkd.cli.demo import DemoError, run_demo

    try:
        run_demo(events, processes, keep, click.echo)
    except DemoError as e:
        raise click.ClickException(str(e)) from None


class _Mounted(click.Group):
    """The `rkd` commands as a group a host CLI mounts: `rk-core telemetry status`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return cli.list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return cli.get_command(ctx, name)


telemetry = _Mounted(
    "telemetry",
    help="Privacy-first, opt-in usage telemetry (rkd): status, enable, disable, show, "
    "explain, export, delete, metrics, audit.",
    context_settings=CONTEXT,
)


def main() -> None:
    cli(prog_name="rkd")
