"""`rkd delete`: erase everything (GDPR Art. 17), with or without the daemon."""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click
from rkd.client.config import Settings
from rkd.client.control import DaemonUnavailable, request
from rkd.client.wire import DeleteRequest, StatusRequest
from rkd.daemon.runtime import RuntimeDirError
from rkd.daemon.spooling import spooled_not_stored
from rkd.daemon.storage import delete_offline, read_only_count

# A delete vacuums the database; ~140 MB take several seconds on a slow disk.
DELETE_TIMEOUT_MS: Final = 120_000


def db_bytes(path: Path) -> int:
    """Bytes the database takes on disk, WAL and shared-memory index included."""
    return sum(_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm"))


def owned_bytes(settings: Settings) -> int:
    """Bytes of every file `rkd delete` empties or removes: the database with its WAL and
    index, the damaged copies moved aside beside it, and the spool folder's files."""
    db = settings.db_path
    total = db_bytes(db)
    with contextlib.suppress(OSError):
        total += sum(_size(p) for p in db.parent.glob(f"{glob.escape(db.name)}.corrupt-*"))
    with contextlib.suppress(OSError):
        total += sum(_size(settings.spool_dir / n) for n in os.listdir(settings.spool_dir))
    return total


def _size(path: Path) -> int:
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _count(settings: Settings) -> tuple[int, bool]:
    """(events stored + pending + spooled and not stored, whether a daemon answered)."""
    try:
        st = request(settings.runtime_dir, StatusRequest(), timeout_ms=3000).status
    except DaemonUnavailable:
        stored, up = read_only_count(settings.db_path), False
    else:
        assert st is not None
        stored, up = st.events_stored + st.pending, True
    return stored + spooled_not_stored(settings.spool_dir, settings.db_path), up


def run_delete(settings: Settings, confirm: bool, echo: Callable[[str], Any]) -> None:
    count, up = _count(settings)
    echo("This will permanently delete all telemetry data.\n")
    echo(f"Events to be deleted: {count:,}")
    echo(f"Database size: {human_size(db_bytes(settings.db_path))}\n")
    if not confirm:
        if not sys.stdin.isatty():
            raise click.ClickException(
                "deleting needs your answer: run this in a terminal, or pass --confirm"
            )
        if not click.confirm("Are you sure?", default=False):
            echo("Nothing deleted.")
            return
    before = owned_bytes(settings)  # measured now: the prompt may have waited a while
    if up:
        try:
            reply = request(settings.runtime_dir, DeleteRequest(), timeout_ms=DELETE_TIMEOUT_MS)
        except DaemonUnavailable as e:
            raise click.ClickException(
                f"{e}; it may still be deleting: run this again to make sure"
            ) from None
        if not reply.ok:
            raise click.ClickException(reply.error or "delete failed")
        deleted, cloud = reply.deleted, reply.cloud_erasure
    else:
        try:
            deleted, cloud = delete_offline(settings)
        except RuntimeDirError as e:
            raise click.ClickException(f"cannot delete now: {e}") from None
    freed = max(0, before - owned_bytes(settings))
    echo(f"Deleted {deleted:,} events.")
    echo(f"Database vacuumed, freed {human_size(freed)} on disk.")
    if cloud:  # counted by the delete itself: opening the database now would add files
        echo(f"Asked the server to erase what was uploaded ({cloud:,} sessions): the"
             " daemon sends the request until the server confirms (see `rkd sync log`).")  # fmt: skip
