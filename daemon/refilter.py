"""`rkd audit --fix`: run today's firewall and vocabularies over what is stored.

After a detector improves or the privacy settings tighten, events stored under the old
rules may hold what the new ones would have caught. This rewrites each such event in
place (its payload, or its source row), re-tags every event's undeclared fields, and
with ``block_sensitive`` removes the events the firewall now refuses. Salted hashes are
left as they are (salting them again would not make them any more private, only
different). Counts only, never values: what was scanned, rewritten, re-tagged, removed.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from rkd.client.config import Settings
from rkd.client.fields import string_fields
from rkd.client.schema import BY_EVENT_TYPE, Source
from rkd.client.upload import get_in
from rkd.daemon.firewall import Firewall
from rkd.daemon.pipeline import Rejected
from rkd.daemon.storage import SOURCE_COLUMNS, Storage
from rkd.daemon.vocabularies import Vocabularies

STEP: Final = 1000  # events per transaction

_SELECT: Final = """
    SELECT e.id, e.event_type, e.payload, e.undeclared, e.source_id,
           s.product, s.version, s.tier, s.os, s.arch, s.python_version
    FROM events e JOIN sources s ON s.id = e.source_id
    WHERE e.id > ? ORDER BY e.id LIMIT ?
"""


class Refiltered(msgspec.Struct, frozen=True, kw_only=True):
    scanned: int = 0
    rewritten: int = 0  # payload or source changed
    retagged: int = 0  # the undeclared tag changed (a vocabulary changed)
    removed: int = 0  # refused now (block_sensitive)


def refilter(storage: Storage, firewall: Firewall, vocabularies: Vocabularies) -> Refiltered:
    """Run ``firewall`` and the vocabularies over every stored event; change what differs."""
    scanned = rewritten = retagged = removed = 0
    last = 0
    db = storage.db
    while True:
        rows: list[Any] = db.execute(_SELECT, (last, STEP)).fetchall()
        if not rows:
            break
        with db:
            for row in rows:
                last = row[0]
                scanned += 1
                change = _one(row, firewall, vocabularies, storage)
                rewritten += change == "rewritten"
                retagged += change == "retagged"
                removed += change == "removed"
    return Refiltered(scanned=scanned, rewritten=rewritten, retagged=retagged, removed=removed)


def _one(row: tuple[Any, ...], firewall: Firewall, vocabularies: Vocabularies,
         storage: Storage) -> str | None:  # fmt: skip
    rowid, event_type, payload_json, tag, source_id, *src = row
    ptype = BY_EVENT_TYPE.get(event_type)
    if ptype is None:
        return None  # a type this rkd does not know: left as it is
    payload = msgspec.json.decode(payload_json)
    source = dict(zip(SOURCE_COLUMNS, src, strict=True))
    new_source = dict(source)
    # The stored strings hold the firewall's placeholders ("[EMAIL]"), which do not
    # decode as the schema: they are cleaned as builtins, along the schema's plan.
    _clean(payload, ptype, firewall)
    _clean(new_source, Source, firewall)
    try:
        firewall.settle()
    except Rejected:
        storage.db.execute("DELETE FROM events WHERE id = ?", (rowid,))
        return "removed"
    new_tag = vocabularies.undeclared_builtins(ptype, payload, new_source)
    new_json = msgspec.json.encode(payload).decode()
    new_sid = source_id
    if new_source != source:
        new_sid = storage._source_id(Source(**new_source))
    if new_json != payload_json or new_sid != source_id:
        storage.db.execute(
            "UPDATE events SET payload = ?, source_id = ?, undeclared = ? WHERE id = ?",
            (new_json, new_sid, new_tag, rowid),
        )
        return "rewritten"
    if new_tag != tag:
        storage.db.execute("UPDATE events SET undeclared = ? WHERE id = ?", (new_tag, rowid))
        return "retagged"
    return None


def _clean(obj: dict[str, Any], cls: type, firewall: Firewall) -> None:
    """Every schema string of ``obj`` through the firewall, in place; salted hashes are
    left alone (salting them again would only make them different)."""
    for f in string_fields(cls):
        value = get_in(obj, f.path)
        if value is None or f.salted:
            continue
        if f.many:
            new: Any = [firewall.clean(v, f.max_len) for v in value]
        else:
            new = firewall.clean(value, f.max_len)
        if new != value:
            parent = get_in(obj, f.path[:-1]) if len(f.path) > 1 else obj
            parent[f.path[-1]] = new


def refilter_offline(settings: Settings) -> Refiltered:
    """:func:`refilter` while no daemon runs, holding the daemon's lock meanwhile."""
    from collections import Counter

    from rkd.daemon.firewall import load_salt
    from rkd.daemon.runtime import DaemonLock
    from rkd.daemon.vocabularies import vocabulary_dir

    with DaemonLock(settings.runtime_dir):
        if not settings.db_path.exists():
            return Refiltered()
        storage = Storage(settings.db_path)
        try:
            counters: Counter[str] = Counter(storage.counters())
            vocabularies = Vocabularies(
                vocabulary_dir(settings), counters, storage.learnt_vocabularies()
            )
            firewall = Firewall(settings.privacy, load_salt(settings.data_dir), counters)
            done = refilter(storage, firewall, vocabularies)
            with storage.db:
                storage.db.executemany(
                    "INSERT OR REPLACE INTO counters(reason, n) VALUES (?, ?)",
                    [(k, v) for k, v in counters.items() if k.startswith("firewall.")],
                )
            return done
        finally:
            storage.close()
