"""`rkd delete`: erase everything (GDPR Art. 17), with or without the daemon."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rkd.client.config import Settings
from rkd.client.control import DaemonUnavailable, request
from rkd.client.wire import DeleteRequest, StatusRequest
from rkd.daemon.runtime import RuntimeDirError
from rkd.daemon.storage import delete_offline, read_only_count


def db_bytes(path: Path) -> int:
    """Bytes the database takes on disk, WAL included."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _count(settings: Settings) -> tuple[int, bool]:
    """(events stored + pending, whether a daemon answered)."""
    try:
        st = request(settings.runtime_dir, StatusRequest(), timeout_ms=3000).status
    except DaemonUnavailable:
        return read_only_count(settings.db_path), False
    assert st is not None
    return st.events_stored + st.pending, True


def run_delete(settings: Settings, confirm: bool, echo: Callable[[str], Any]) -> None:
    count, up = _count(settings)
    before = db_bytes(settings.db_path)
    echo("This will permanently delete all telemetry data.\n")
    echo(f"Events to be deleted: {count:,}")
    echo(f"Database size: {human_size(before)}\n")
    if not confirm:
        if not sys.stdin.isatty():
            raise click.ClickException(
                "deleting needs your answer: run this in a terminal, or pass --confirm"
            )
        if not click.confirm("Are you sure?", default=False):
            echo("Nothing deleted.")
            return
    if up:
        reply = request(settings.runtime_dir, DeleteRequest(), timeout_ms=60_000)
        if not reply.ok:
            raise click.ClickException(reply.error or "delete failed")
        deleted = reply.deleted
    else:
        try:
            deleted = delete_offline(settings)
        except RuntimeDirError as e:
            raise click.ClickException(f"cannot delete now: {e}") from None
    freed = max(0, before - db_bytes(settings.db_path))
    echo(f"Deleted {deleted:,} events.")
    echo(f"Database vacuumed, freed {human_size(freed)}.")
