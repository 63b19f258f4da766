"""`rkd service install|uninstall|status` (systemd user unit, launchd agent), `rkd start|stop`.

The service definitions are embedded here as templates (an installed rkd has no repository
next to it); `systemd/rkd.service` and `launchd/sh.reasonkit.rkd.plist` are the same text,
and a test keeps them equal. `start`/`stop` are for machines without a service manager.

Tests replace `run_command`, `current_platform` and `rkd_command` (module-level on purpose).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

import click

if TYPE_CHECKING:
    import subprocess

UNIT_NAME: Final = "rkd.service"
LABEL: Final = "sh.reasonkit.rkd"
PLACEHOLDER: Final = "@RKD_COMMAND@"  # the absolute rkd command, filled in at install
HOME_PLACEHOLDER: Final = "@HOME@"  # launchd expands neither ~ nor $HOME
COMMAND_TIMEOUT_SECS: Final = 30.0
START_DEADLINE_SECS: Final = 10.0
STOP_DEADLINE_SECS: Final = 30.0

SYSTEMD_UNIT: Final = """\
# rkd, the per-user telemetry daemon, as a systemd user service.
# `rkd service install` writes this file with @RKD_COMMAND@ replaced by the absolute
# path of rkd; `rkd service uninstall` stops the service and removes the file.
[Unit]
Description=rkd: privacy-first, opt-in usage telemetry daemon (local only)

[Service]
# The daemon sends READY=1 once its sockets are bound and STOPPING=1 when it drains.
Type=notify
ExecStart=@RKD_COMMAND@ run --log-format json
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# 78 (EX_CONFIG): a kill switch, a bad config, another daemon running: a restart cannot help.
RestartPreventExitStatus=78
# On SIGTERM the daemon writes everything pending before it exits.
TimeoutStopSec=30
UMask=0077
# Hardening that works in a user unit without privileges (prctl and seccomp based).
# Namespace-based options (PrivateTmp=, ProtectSystem=, ProtectHome=, PrivateDevices=...)
# need unprivileged user namespaces in a user unit, so they are left out.
# MemoryDenyWriteExecute= is left out: C extensions and libffi may need W+X pages and
# the unit could not be tested under a real user manager.
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
"""

LAUNCHD_PLIST: Final = """\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>sh.reasonkit.rkd</string>
	<key>ProgramArguments</key>
	<array>
		<string>@RKD_COMMAND@</string>
		<string>run</string>
		<string>--log-format</string>
		<string>json</string>
		<string>--permanent-exit</string>
		<string>0</string>
	</array>
	<key>RunAtLoad</key>
	<true/>
	<!-- KeepAlive restarts the agent after any failed exit, and launchd has no list of
		statuses to spare (systemd's RestartPreventExitStatus=78): with permanent-exit 0
		a failure a restart cannot fix (a kill switch, a bad config) is a clean exit, and
		the agent stays down, its reason in the log, until the next login or install. -->
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>StandardOutPath</key>
	<string>@HOME@/Library/Logs/rkd/rkd.log</string>
	<key>StandardErrorPath</key>
	<string>@HOME@/Library/Logs/rkd/rkd.log</string>
	<key>ProcessType</key>
	<string>Background</string>
	<key>Umask</key>
	<integer>63</integer>
</dict>
</plist>
"""


# -- what tests replace --------------------------------------------------------------------


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a service-manager command, capturing its output, with a deadline."""
    import subprocess

    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECS, check=False
    )


def current_platform() -> str:
    return sys.platform


def rkd_command() -> list[str]:
    """The absolute command that runs rkd: the `rkd` on PATH, else this Python with -m."""
    import shutil

    found = shutil.which("rkd")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "rkd.cli"]


# -- rendering -----------------------------------------------------------------------------


def _systemd_quote(arg: str) -> str:
    """One ExecStart= word: quoted when needed; % and $ escaped (specifiers, variables)."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and all(c.isalnum() or c in "/._+:@=-,%$" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(command: Sequence[str]) -> str:
    return SYSTEMD_UNIT.replace(
        f"ExecStart={PLACEHOLDER}", "ExecStart=" + " ".join(map(_systemd_quote, command))
    )


def render_plist(command: Sequence[str], home: Path) -> str:
    """The agent plist with the rkd command and the log paths of ``home`` filled in."""
    import plistlib

    doc = plistlib.loads(LAUNCHD_PLIST.encode())
    args = doc["ProgramArguments"]
    doc["ProgramArguments"] = [*command, *args[1:]]
    for key in ("StandardOutPath", "StandardErrorPath"):
        doc[key] = doc[key].replace(HOME_PLACEHOLDER, str(home))
    return plistlib.dumps(doc, sort_keys=False).decode()


# -- the plan: one per platform, shown by --dry-run, carried out otherwise -------------------


class Manager(NamedTuple):
    """Where a platform's service file lives and the commands around it."""

    name: str
    path: Path
    content: str
    probe: list[str]  # answers 0 when user services can be managed here
    install: list[list[str]]
    uninstall: list[list[str]]
    status: list[str]
    unavailable: str


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var, "")
    return Path(value) if os.path.isabs(value) else _home() / default


def manager() -> Manager:
    """The service manager of this platform, or one clear line when there is none."""
    platform, command = current_platform(), rkd_command()
    if platform.startswith("linux"):
        sc = ["systemctl", "--user"]
        return Manager(
            name="systemd user unit",
            path=_xdg("XDG_CONFIG_HOME", ".config") / "systemd" / "user" / UNIT_NAME,
            content=render_unit(command),
            probe=[*sc, "show", "--property=Version"],
            install=[[*sc, "daemon-reload"], [*sc, "enable", "--now", UNIT_NAME]],
            uninstall=[[*sc, "disable", "--now", UNIT_NAME], [*sc, "daemon-reload"]],
            status=[*sc, "status", UNIT_NAME, "--no-pager"],
            unavailable="systemd user services are not available here",
        )
    if platform == "darwin":
        domain = f"gui/{os.getuid()}"
        path = _home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        return Manager(
            name="launchd agent",
            path=path,
            content=render_plist(command, _home()),
            probe=["launchctl", "print", domain],
            install=[["launchctl", "bootstrap", domain, str(path)]],
            uninstall=[["launchctl", "bootout", f"{domain}/{LABEL}"]],
            status=["launchctl", "print", f"{domain}/{LABEL}"],
            unavailable="launchd user agents are not available here",
        )
    raise click.ClickException(
        f"no supported service manager on {platform} (systemd or launchd); run 'rkd start' instead"
    )


def _run(m: Manager, argv: list[str]) -> subprocess.CompletedProcess[str]:
    import subprocess

    try:
        return run_command(argv)
    except FileNotFoundError:
        raise click.ClickException(
            f"{m.unavailable} ({argv[0]} not found); run 'rkd start' instead or use --dry-run"
        ) from None
    except subprocess.TimeoutExpired:
        raise click.ClickException(
            f"'{_join(argv)}' did not finish within {COMMAND_TIMEOUT_SECS:.0f} s"
        ) from None


def _join(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(argv)


def _check(m: Manager, argv: list[str]) -> None:
    """Run one step; a failure is one line naming the command and its first error line."""
    click.echo(f"$ {_join(argv)}")
    proc = _run(m, argv)
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        detail = f": {why[0]}" if why else f" (exit {proc.returncode})"
        raise click.ClickException(f"'{_join(argv)}' failed{detail}")


def _probe(m: Manager) -> None:
    if _run(m, m.probe).returncode != 0:
        why = "no user session bus" if m.name.startswith("systemd") else "no GUI login session"
        raise click.ClickException(
            f"{m.unavailable} ({why}); run 'rkd start' instead or use --dry-run"
        )


def _show_plan(m: Manager, write: bool, commands: list[list[str]]) -> None:
    if write:
        click.echo(f"Would write {m.path} (mode 0644):")
        click.echo(m.content, nl=not m.content.endswith("\n"))
    else:
        click.echo(f"Would remove {m.path}")
    click.echo("Would run:")
    for argv in [m.probe, *commands]:
        click.echo(f"  {_join(argv)}")


def _write_file(path: Path, content: str) -> None:
    """Write ``content`` 0644 through a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(tmp, 0o644)  # the umask may have taken bits away
    os.replace(tmp, path)


# -- commands ------------------------------------------------------------------------------

DRY_RUN = click.option(
    "--dry-run", is_flag=True, help="Print what would be written and run; change nothing."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def service() -> None:
    """Run the daemon under the system's service manager (systemd user unit, launchd agent).

    \b
    Example:
      rkd service install --dry-run
    """


@service.command()
@DRY_RUN
def install(dry_run: bool) -> None:
    """Install the service for this user, enable it and start the daemon now.

    \b
    Linux: $XDG_CONFIG_HOME/systemd/user/rkd.service, then
           systemctl --user daemon-reload; systemctl --user enable --now rkd.service
    macOS: ~/Library/LaunchAgents/sh.reasonkit.rkd.plist, then
           launchctl bootstrap gui/<uid> <plist>

    \b
    Example:
      rkd service install --dry-run
    """
    m = manager()
    launchd = m.name.startswith("launchd")
    # bootstrap refuses an agent that is already loaded: unload it first on a reinstall
    unload = m.uninstall[:1] if launchd and m.path.exists() else []
    if dry_run:
        _show_plan(m, True, unload + m.install)
        return
    _probe(m)
    if not m.path.exists():
        _refuse_if_daemon_running()
    if launchd:  # launchd opens the log but creates no folder for it
        (_home() / "Library" / "Logs" / "rkd").mkdir(mode=0o700, parents=True, exist_ok=True)
    for argv in unload:
        click.echo(f"$ {_join(argv)}")
        _run(m, argv)  # "not loaded" is fine
    _write_file(m.path, m.content)
    click.echo(f"Wrote {m.path}")
    for argv in m.install:
        _check(m, argv)
    click.echo(f"rkd service installed ({m.name}); the daemon is running.")


def _refuse_if_daemon_running() -> None:
    """A daemon started by hand holds the lock: the service's would fail and restart."""
    from rkd.cli.main import settings
    from rkd.client.control import UnsafeRuntimeDir, check_runtime_dir, daemon_pid

    runtime = settings().runtime_dir
    try:  # the service's daemon would refuse that folder (exit 78): say so now
        check_runtime_dir(runtime)
    except UnsafeRuntimeDir as e:
        raise click.ClickException(str(e)) from None
    pid = daemon_pid(runtime)
    if pid is not None:
        raise click.ClickException(
            f"an rkd daemon (pid {pid}) is already running; stop it with 'rkd stop' first"
        )


@service.command()
@DRY_RUN
def uninstall(dry_run: bool) -> None:
    """Stop and disable the service and remove its file (your data stays).

    \b
    Example:
      rkd service uninstall
    """
    m = manager()
    if dry_run:
        _show_plan(m, False, m.uninstall)
        return
    if not m.path.exists():
        click.echo(f"rkd service is not installed (no {m.path}).")
        return
    _probe(m)
    first, *rest = m.uninstall
    _check(m, first)
    m.path.unlink()
    click.echo(f"Removed {m.path}")
    for argv in rest:
        _check(m, argv)
    click.echo(f"rkd service uninstalled ({m.name}); the daemon is stopped.")


@service.command()
@DRY_RUN
def status(dry_run: bool) -> None:
    """Say whether the service file is installed and show the service manager's view.

    \b
    Example:
      rkd service status
    """
    m = manager()
    state = "installed" if m.path.exists() else "not installed"
    click.echo(f"Service file: {m.path} ({state})")
    if dry_run:
        click.echo(f"Would run:\n  {_join(m.status)}")
        return
    _probe(m)
    proc = _run(m, m.status)  # non-zero just means inactive or unknown: show it as is
    shown = (proc.stdout + proc.stderr).rstrip("\n")
    if shown:
        click.echo(shown)


# -- without a service manager -------------------------------------------------------------


def log_path() -> Path:
    """``$XDG_STATE_HOME/rkd/rkd.log`` (default ``~/.local/state/rkd/rkd.log``)."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "rkd" / "rkd.log"


LOG_KEEP_BYTES: Final = 1024 * 1024  # at start, a bigger log becomes rkd.log.1 (one kept)


def _open_log(path: Path) -> int:
    """The log, opened for appending (0600); one over 1 MiB is first moved to ``.1``."""
    from rkd.client.files import ensure_private_dir, open_private_file

    ensure_private_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        if os.lstat(path).st_size > LOG_KEEP_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    return open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def _last_line(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        lines = f.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


@click.command()
def start() -> None:
    """Start the daemon in the background (for machines without systemd or launchd).

    Its log goes to $XDG_STATE_HOME/rkd/rkd.log (default ~/.local/state/rkd/rkd.log);
    a log over 1 MiB is moved to rkd.log.1 at start (one old log is kept).

    \b
    Example:
      rkd start && rkd status
    """
    import subprocess

    from rkd.cli.main import settings
    from rkd.client.control import (
        DaemonUnavailable,
        UnsafeRuntimeDir,
        check_runtime_dir,
        daemon_pid,
        request,
    )
    from rkd.client.wire import StatusRequest

    runtime = settings().runtime_dir
    try:
        check_runtime_dir(runtime)
    except UnsafeRuntimeDir as e:
        raise click.ClickException(str(e)) from None
    pid = daemon_pid(runtime)
    if pid is not None:
        click.echo(f"rkd daemon is already running (pid {pid})")
        return
    path = log_path()
    try:
        fd = _open_log(path)
    except OSError as e:
        raise click.ClickException(f"{path}: cannot open the log: {e.strerror or e}") from None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rkd.cli", "run", "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/", start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_DEADLINE_SECS
    while True:
        code = proc.poll()
        if code is not None:
            raise click.ClickException(
                f"the rkd daemon exited at once (status {code}): {_last_line(path)} (log: {path})"
            )
        try:
            request(runtime, StatusRequest(), timeout_ms=500)
            break
        except DaemonUnavailable:
            pass
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the rkd daemon (pid {proc.pid}) did not answer within "
                f"{START_DEADLINE_SECS:.0f} s; see {path}"
            )
        time.sleep(0.05)
    click.echo(f"rkd daemon started (pid {proc.pid})")


@click.command()
def stop() -> None:
    """Stop the running daemon; it writes everything pending before it exits.

    \b
    Example:
      rkd stop
    """
    import signal

    from rkd.cli.main import settings
    from rkd.client.control import daemon_pid, process_stopped

    runtime = settings(lenient=True).runtime_dir
    pid = _verified_pid(runtime)
    if pid is None:
        click.echo("no rkd daemon is running")
        return
    try:
        _signal_verified(runtime, pid, signal.SIGTERM)
        if process_stopped(pid):  # SIGTERM waits until it runs again: resume it to exit
            click.echo(f"the rkd daemon (pid {pid}) was stopped (SIGSTOP?); resuming it so"
                       " that it can exit")  # fmt: skip
            _signal_verified(runtime, pid, signal.SIGCONT)
    except ProcessLookupError:
        pass  # it exited between the check and the signal
    except PermissionError:
        raise click.ClickException(f"not allowed to stop the rkd daemon (pid {pid})") from None
    deadline = time.monotonic() + STOP_DEADLINE_SECS
    while daemon_pid(runtime) == pid:  # the lock goes only after the last write
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the rkd daemon (pid {pid}) did not stop within {STOP_DEADLINE_SECS:.0f} s"
            )
        time.sleep(0.05)
    click.echo(f"rkd daemon stopped (pid {pid}); everything pending was written.")


def _verified_pid(runtime: Path) -> int | None:
    """Our daemon's pid, proven (see ``verified_daemon_pid``) before it is signalled.

    A daemon still starting holds the lock before it serves its control socket: wait
    for the proof up to START_DEADLINE_SECS. A failed proof is one line, and no signal.
    """
    from rkd.client.control import DaemonUnavailable, UnsafeRuntimeDir, verified_daemon_pid

    deadline = time.monotonic() + START_DEADLINE_SECS
    while True:
        try:
            return verified_daemon_pid(runtime)
        except UnsafeRuntimeDir as e:
            raise click.ClickException(str(e)) from None
        except DaemonUnavailable as e:
            if time.monotonic() > deadline:
                raise click.ClickException(f"{e}; not signalling the lock's holder") from None
        time.sleep(0.05)


def _signal_verified(runtime: Path, pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``, proven to be our daemon, and to nothing else.

    Where the kernel has pidfds (Linux 5.3+), the process is pinned first and proven
    again: a pid freed and reused between the proof and the signal cannot be hit.
    """
    import signal

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except (AttributeError, OSError):  # no pidfds (macOS, an old kernel): the proof stands
        os.kill(pid, sig)
        return
    try:
        if _verified_pid(runtime) != pid:
            raise ProcessLookupError(pid)  # it exited; whatever has that pid now is not it
        signal.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)
