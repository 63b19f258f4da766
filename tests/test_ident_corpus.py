"""Identifier-shaped private data (issue 11): values that fit the schema's identifier
pattern but hold a card, an IBAN, a phone, a host, a credential or a token.

Two labelled sets: ``ident_corpus`` (tuned on) and ``ident_corpus_heldout`` (written by
someone else from the labelling rules alone, not read while the detectors were written;
its first run found 8 leaks and 2 lost model ids, fixed after). Recall must be total on
both, and every value of the ``keep`` category must survive whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rkd.client import schema as s
from rkd.daemon.redact import Scanner

from tests import ident_corpus, ident_corpus_heldout
from tests.conftest import Daemon, Sandbox, wait_for
from tests.privacy_corpus import Case
from tests.samples import frame

SETS = {"tuning": ident_corpus.CASES, "heldout": ident_corpus_heldout.CASES}
SCANNER = Scanner()
RawPush = Callable[[list[bytes]], None]


def leaks(cases: list[Case]) -> list[tuple[str, str]]:
    out = []
    for c in cases:
        redacted, _ = SCANNER.redact(c.text)
        out += [(c.category, c.text) for x in c.secrets if x in redacted]
    return out


@pytest.mark.parametrize("name", SETS)
def test_recall_is_total_on_every_category(name: str) -> None:
    """No secret, structured PII or host of the set survives the scanner."""
    assert [] == leaks(SETS[name])


@pytest.mark.parametrize("name", SETS)
def test_every_model_id_version_code_and_name_is_kept_whole(name: str) -> None:
    """Keep-rate 1.0 on the keep category: real model ids, versions, error codes, UUIDs,
    command names, dates and numbers pass unchanged."""
    lost = [
        c.text for c in SETS[name] if c.category == "keep" and SCANNER.redact(c.text)[0] != c.text
    ]
    assert [] == lost


def test_the_sets_are_big_and_cover_every_category() -> None:
    """Both sets are large, and share the categories an identifier can hold."""
    cats = [{c.category for c in cases} for cases in SETS.values()]
    assert cats[0] == cats[1] and len(cats[0]) >= 24
    assert all(len(cases) >= 300 for cases in SETS.values())


def files_under(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for r in roots for p in r.rglob("*") if p.is_file())


def test_through_the_real_daemon_nothing_private_reaches_any_file(
    sandbox: Sandbox, daemon: Daemon, raw_push: RawPush
) -> None:
    """Every private value of both sets, sent as a command name and as a model id: none
    is in any file the daemon wrote (database, WAL, spool, log); every kept value is
    stored as sent."""
    private = [c for cases in SETS.values() for c in cases if c.secrets]
    keep = [c for cases in SETS.values() for c in cases if c.category == "keep"]
    frames = []
    for c in private + keep:
        frames.append(frame(s.CommandExecuted(command=c.text)))
        frames.append(frame(s.CommandExecuted(command="think", tokens=s.Tokens(model=c.text))))
    raw_push(frames)
    n = len(frames)
    wait_for(lambda: daemon.flush() >= 0 and sandbox.count() == n, timeout=60, what=f"{n}")
    _, log = daemon.stop()
    written = files_under(sandbox.root / "data", sandbox.root / "run") + log.encode()
    found = [(c.category, x) for c in private for x in c.secrets if x.encode() in written]
    assert [] == found
    stored = {msgspec.json.decode(p)["command"] for (p,) in sandbox.query(
        "SELECT payload FROM events WHERE event_type = 'command_executed'")}  # fmt: skip
    assert [] == [c.text for c in keep if c.text not in stored]


IDENT_CHARS = "abcdefABCDEF0123456789xyzXYZ_.:+-"


@settings(max_examples=2000, deadline=250)
@given(st.text(IDENT_CHARS, min_size=1, max_size=64))
def test_the_scanner_never_spins_on_an_identifier(text: str) -> None:
    """Any identifier-shaped value (the characters the detectors key on, in any order)
    is scanned in well under a quarter of a second, and the result never grows a value
    the scanner did not put there (an evaluation of an intermediate detector state once
    spun for minutes; this keeps every future one honest)."""
    out, _ = SCANNER.redact(text)
    assert len(out) <= len(text) + 16 * out.count("[")
