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


def test_readme_lists_the_shipped_vocabulary_exactly() -> None:
    """'What can leave your machine' is made from the vocabulary files: when a value is
    added to one, the README must say so (run scripts/readme_vocabulary)."""
    from rkd.cli.explain import vocabulary_markdown

    readme = (TOP / "README.md").read_text()
    block = readme.split("<!-- vocabulary:begin -->\n", 1)[1].split("<!-- vocabulary:end -->")[0]
    assert vocabulary_markdown() == block, "README is stale: run scripts/readme_vocabulary"
    assert "`think`" in block and "`claude-[0-9a-z.-]{1,48}`" in block
