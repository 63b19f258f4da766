"""The firewall against the labelled corpus: recall per category, and what it keeps."""

from __future__ import annotations

from collections import defaultdict

import pytest
from rkd.daemon.redact import Scanner

from tests.privacy_corpus import CASES, SECRET_CATEGORIES, Case

SCANNER = Scanner()


def outcome(case: Case) -> tuple[bool, list[str]]:
    out, _ = SCANNER.redact(case.text)
    return all(s not in out for s in case.secrets), [k for k in case.keep if k not in out]


def recall_by_category() -> dict[str, tuple[int, int]]:
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case in CASES:
        if case.secrets:
            tally[case.category][0] += outcome(case)[0]
            tally[case.category][1] += 1
    return {k: (a, b) for k, (a, b) in tally.items()}


def test_corpus_is_big_enough() -> None:
    """At least 300 labelled strings, both what must go and what must stay."""
    assert len(CASES) >= 300
    assert sum(1 for c in CASES if not c.secrets) >= 100


@pytest.mark.parametrize("category", SECRET_CATEGORIES)
def test_recall_is_total_on_secrets_and_keys(category: str) -> None:
    """Every key, token and credential in the corpus is removed (recall 1.0)."""
    found, total = recall_by_category()[category]
    leaks = [c.text for c in CASES if c.category == category and not outcome(c)[0]]
    assert (total, []) == (found, leaks)


def test_overall_recall() -> None:
    """Across every category, at least 98% of cases are fully cleaned."""
    tally = recall_by_category()
    found = sum(a for a, _ in tally.values())
    total = sum(b for _, b in tally.values())
    assert found / total >= 0.98, {k: v for k, v in tally.items() if v[0] != v[1]}


def test_keep_rate() -> None:
    """At least 99% of what telemetry is for (names, ids, versions, numbers) survives."""
    lost = [(c.text, k) for c in CASES for k in outcome(c)[1]]
    kept_total = sum(len(c.keep) for c in CASES)
    assert (kept_total - len(lost)) / kept_total >= 0.99, lost
