"""The consent record: what the user agreed to, when, and to which text (GDPR Art. 7).

Kept in the data folder as ``consent.json`` (0600), written only by `rkd enable` and
`rkd disable`. The current decision sits beside the full history of earlier ones, so
the user (and an export) can always show what was agreed and when. Telemetry counts
only from the moment of consent, and only in the categories consented to.
"""

from __future__ import annotations

import datetime as dt
import os
from os.path import join
from typing import TYPE_CHECKING, Final, Literal

import msgspec
from msgspec import Struct
from rkd.client.files import UnsafePath, ensure_private_dir, open_private_file, write_atomic
from rkd.client.schema import CATEGORIES, SCHEMA_VERSION

if TYPE_CHECKING:
    from rkd.client.files import StrPath

CONSENT_FILE: Final = "consent.json"
CONSENT_TEXT_VERSION: Final = "1"
MAX_HISTORY: Final = 1000
MAX_CONSENT_BYTES: Final = 2 << 20  # MAX_HISTORY records take ~300 KB; refuse a huge file


class ConsentError(Exception):
    """The consent record cannot be read. The message is one line."""


class ConsentRecord(Struct, frozen=True, kw_only=True):
    """One decision of the user."""

    choice: Literal["granted", "withdrawn"]
    at: str  # RFC 3339 UTC, milliseconds
    consent_text_version: str = CONSENT_TEXT_VERSION
    schema_version: str = SCHEMA_VERSION
    categories: tuple[str, ...] = ()  # consented categories (empty when withdrawn)


class ConsentFile(Struct, kw_only=True):
    """The current decision and every earlier one, oldest first."""

    current: ConsentRecord | None = None
    history: list[ConsentRecord] = []


def consent_path(data_dir: StrPath) -> str:
    return join(data_dir, CONSENT_FILE)


def now_iso() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_consent(data_dir: StrPath) -> ConsentFile:
    """The consent file; an empty one when the user has never decided.

    Every problem is one ConsentError naming the file, a hostile file included (huge,
    not a regular file, not UTF-8, nested deeper than the decoder can recurse).
    """
    from rkd.client.config import read_small_file

    path = consent_path(data_dir)
    try:
        # A regular file of ours, never through a symlink; a loose 0644 one is set to 0600.
        os.close(open_private_file(path))
        raw = read_small_file(path, MAX_CONSENT_BYTES)
    except FileNotFoundError:
        return ConsentFile()
    except UnsafePath as e:
        raise ConsentError(str(e)) from None
    except OSError as e:
        raise ConsentError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ConsentError(f"{path}: {e}") from None
    try:
        record = msgspec.json.decode(raw, type=ConsentFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ConsentError(f"{path}: not a valid consent record ({e})") from None
    except RecursionError:  # msgspec recurses once per nested array or object
        raise ConsentError(f"{path}: not a valid consent record (nested too deeply)") from None
    unknown = {c for r in (record.current, *record.history) if r for c in r.categories} - set(
        CATEGORIES
    )
    if unknown:
        raise ConsentError(f"{path}: unknown consent category {sorted(unknown)[0]!r}")
    return record


def record_decision(data_dir: StrPath, record: ConsentRecord) -> ConsentFile:
    """Make ``record`` the current decision, keeping the earlier one in the history."""
    current = read_consent(data_dir)
    if current.current is not None:
        current.history.append(current.current)
    current.history = current.history[-MAX_HISTORY:]
    current.current = record
    path = consent_path(data_dir)
    ensure_private_dir(data_dir)
    write_atomic(path, msgspec.json.format(msgspec.json.encode(current)) + b"\n")
    return current


def granted_since(record: ConsentFile) -> dict[str, dt.datetime]:
    """When consent to each category now granted was given: category -> moment (UTC).

    A category's moment is that of the oldest decision in the unbroken run of
    decisions granting it that ends with the current one, so narrowing consent
    (`rkd disable --category x`) does not move the moment of the categories that stay,
    while a category withdrawn and granted again counts from the new grant.
    """
    since: dict[str, dt.datetime] = {}
    current = record.current
    if current is None or current.choice != "granted":
        return since
    running = set(current.categories)
    for r in (current, *reversed(record.history)):
        if r.choice != "granted":
            break
        running &= set(r.categories)
        if not running:
            break
        at = parse_at(r.at)
        for c in running:
            since[c] = at
    return since


def parse_at(text: str) -> dt.datetime:
    """A record's ``at`` (RFC 3339) as an aware UTC datetime; an unreadable one is the
    distant future, so that nothing is taken as consented under it."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC)


def consent_dict(data_dir: StrPath) -> dict[str, object] | None:
    """The consent file as plain data (for `rkd status` and exports), or None if never decided."""
    f = read_consent(data_dir)
    if f.current is None and not f.history:
        return None
    return msgspec.to_builtins(f)  # type: ignore[no-any-return]
