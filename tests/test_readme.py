"""The README's two set-up commands stay true: CI runs the second word for word."""

from __future__ import annotations

from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
DEMO = "python3 -m venv .venv && . .venv/bin/activate && pip install . && rkd demo"
TESTS = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest -q"
    " && scripts/lint"
)


def test_readme_has_exactly_the_two_commands() -> None:
    """Both set-up commands are in the README, and CI runs the test command as written."""
    readme = (TOP / "README.md").read_text()
    assert 1 == readme.count(DEMO)
    assert 1 == readme.count(TESTS)
    assert TESTS in (TOP / ".ci" / "run").read_text()
