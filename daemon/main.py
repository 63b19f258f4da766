"""`rkd run`: start the daemon in the foreground."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Final

import apsw
import apsw.bestpractice
import msgspec
import structlog
from rkd.client.clock import iso_ms, now_ms
from rkd.client.config import Settings, kill_switch
from rkd.client.files import UnsafePath, ensure_private_dir
from rkd.daemon import logs
from rkd.daemon.runtime import DaemonLock, RuntimeDirError, remove_sockets
from rkd.daemon.service import Daemon
from rkd.daemon.storage import (
    CorruptDatabase,
    NotOurDatabase,
    SchemaTooNew,
    Storage,
    StorageError,
    move_aside,
)

# sysexits.h EX_CONFIG: the daemon cannot start and starting it again will not help
# (a kill switch, a bad config file, another daemon running, a database from a newer rkd).
# The systemd unit names it in RestartPreventExitStatus= so it is not restarted in a loop.
EXIT_PERMANENT: Final = 78


class StartError(Exception):
    """The daemon cannot start. The message is one line for the user."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def open_storage(settings: Settings, log: Any) -> Storage:
    """The database; a damaged one is moved aside (kept) and a fresh one started."""
    try:
        return Storage(settings.db_path)
    except CorruptDatabase as e:
        aside = move_aside(settings.db_path)
        log.error("database_damaged_moved_aside", error=str(e), kept_as=str(aside))
        try:
            storage = Storage(settings.db_path)
        except StorageError as again:
            raise StartError(str(again), _permanent(again)) from None
        note = {"at": iso_ms(now_ms()), "kept_as": str(aside)}
        storage.set_meta("recovered", msgspec.json.encode(note).decode())
        return storage
    except StorageError as e:
        raise StartError(str(e), _permanent(e)) from None


def _permanent(e: StorageError) -> bool:
    """A newer schema, or a path that is not ours to use: a restart cannot help."""
    return isinstance(e, (SchemaTooNew, NotOurDatabase))


def run(settings: Settings, log_level: str = "info", json_logs: bool | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT. Raises StartError when it cannot start."""
    switch = kill_switch(os.environ)
    if switch is not None:
        raise StartError(
            f"telemetry is disabled by {switch} in the environment; not starting", permanent=True
        )
    logs.configure(log_level, json_logs)
    log = structlog.get_logger("rkd.daemon")
    if os.environ.get("RK_CONFIG") and not settings.config_path.exists():
        log.warning("config_missing", path=str(settings.config_path),
                    note="RK_CONFIG names a file that does not exist: the defaults are used")  # fmt: skip
    # Every recommended practice except forwarding SQLite's own log to stdlib logging:
    # SQLite errors reach us as exceptions, which we log once, in our own format.
    apsw.bestpractice.apply(
        tuple(
            p for p in apsw.bestpractice.recommended if p is not apsw.bestpractice.library_logging
        )
    )
    os.umask(0o077)  # sockets, spool and database: owner only
    lock = DaemonLock(settings.runtime_dir)
    try:
        lock.acquire()
    except RuntimeDirError as e:
        raise StartError(str(e), permanent=True) from None  # a restart cannot fix it
    try:
        stale = remove_sockets(settings.runtime_dir)
        if stale:
            log.info("removed_stale_sockets", count=len(stale))
        storage = open_storage(settings, log)
        try:
            try:
                with contextlib.suppress(FileNotFoundError):  # made by the first spool file
                    ensure_private_dir(settings.spool_dir, create=False)
                daemon = Daemon(settings, storage)
            except UnsafePath as e:  # a symlinked salt, another user's spool folder...
                raise StartError(str(e), permanent=True) from None
            daemon.run()
        finally:
            storage.close()
    finally:
        lock.release()
