"""The report renderers (HTML, Markdown, JSON) and `rkd-server report`, on synthetic
ReportDocs: every block kind, error bars, suppressed cells, empty data, hostile labels."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from click.testing import CliRunner
from rkd.server.render import render
from rkd.server.render.sample import sample_report
from rkd.server.report_doc import (
    Bars,
    Funnel,
    Heatmap,
    Numbers,
    Period,
    ReportDoc,
    ReportKind,
    Section,
    Series,
    Step,
    Table,
    TimeSeries,
    Value,
)

KINDS = get_args(ReportKind)
HOSTILE = '<script>alert("x")</script> | *bold* [link](http://evil.example) & `code`'


def doc_of(*blocks: Any, text: str | None = None) -> ReportDoc:
    return ReportDoc(kind="weekly", title="T", period=Period(start="2026-11-30", end="2026-12-06"),
                     generated_at="2026-12-07T06:00:00Z",
                     sections=[Section(id="s", title="S", text=text, blocks=list(blocks))])  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_each_report_renders_to_a_self_contained_page(kind: ReportKind) -> None:
    """Each kind renders in every format; the HTML has one SVG per chart, no script, no
    URL to fetch, and a CSP that forbids any request."""
    doc = sample_report(kind)
    page = render(doc, "html")
    charts = sum(
        isinstance(b, TimeSeries | Bars | Funnel | Heatmap) for s in doc.sections for b in s.blocks
    )
    assert charts == page.count("<svg ")
    assert "<script" not in page.lower()
    assert [] == re.findall(
        r'(?:src|href)=|url\((?!#)|@import|https?://(?!www\.w3\.org/2000/svg")', page
    )
    assert 'content="default-src &#x27;none&#x27;;' in page
    assert doc == msgspec.json.decode(render(doc, "json"), type=ReportDoc)
    assert render(doc, "md").startswith(f"# ReasonKit {kind} report\n")


def test_every_string_is_escaped() -> None:
    """A label with markup is text in HTML and in Markdown, never markup."""
    doc = doc_of(
        Numbers(items=[Value(label=HOSTILE, value=1.0)]),
        Bars(title=HOSTILE, items=[Value(label=HOSTILE, value=2.0)]),
        TimeSeries(title="t", x=[HOSTILE], series=[Series(name=HOSTILE, values=[1.0])]),
        Funnel(title="f", steps=[Step(label=HOSTILE, value=3.0)]),
        Heatmap(title="h", rows=[HOSTILE], columns=[HOSTILE], values=[[4.0]]),
        Table(title="t", columns=[HOSTILE], rows=[[HOSTILE]]),
        text=HOSTILE,
    )
    page = render(doc, "html")
    assert "<script" not in page and "&lt;script&gt;" in page
    md = render(doc, "md")
    assert "<script" not in md and "&lt;script&gt;alert" in md
    assert r"\| \*bold\* \[link\](http://evil.example) &amp; \`code\`" in md


def test_a_suppressed_value_is_never_shown_as_a_number() -> None:
    """A value flagged suppressed shows the word, even if a number was left in it."""
    doc = doc_of(
        Numbers(items=[Value(label="a", value=123456.0, error=789.0, suppressed=True)]),
        Bars(title="b", items=[Value(label="a", value=123456.0, error=789.0, suppressed=True)]),
        Funnel(title="f", steps=[Step(label="s", value=123456.0, suppressed=True)]),
    )
    page, md = render(doc, "html"), render(doc, "md")
    assert "123" not in page + md and "789" not in page + md
    assert 3 == page.count(">suppressed<")
    assert 3 == md.count("| suppressed |")


def test_missing_cells_are_hatched_and_lines_break_at_gaps() -> None:
    """A None in a series breaks its line (two runs) and hatches that day; a None in a
    heat-map is a hatched cell; in Markdown both are a dash."""
    doc = doc_of(
        TimeSeries(title="DAU", x=["d1", "d2", "d3", "d4"],
                   series=[Series(name="DAU", values=[1.0, 2.0, None, 4.0], errors=[0.1, 0.2, None, 0.4])]),
        Heatmap(title="cohorts", rows=["W1"], columns=["0", "1"], values=[[100.0, None]], unit="%"),
    )  # fmt: skip
    page = render(doc, "html")
    assert 2 == page.count("<polyline ")  # d1-d2, and d4 alone
    assert 1 == page.count("<polygon ")  # the error band of d1-d2 (d4 alone: its dot)
    assert 1 == page.count("<circle ")
    assert 2 == page.count("suppressed (fewer than k contributors) or no data yet</title>")
    md = render(doc, "md")
    assert "| d3 | – |  |" in md
    assert "| W1 | 100% | – |" in md


def test_bars_have_error_bars_and_the_funnel_shows_each_drop() -> None:
    doc = doc_of(
        Bars(title="adoption", items=[Value(label="think", value=40.0, error=2.0, unit="%"),
                                      Value(label="web", value=10.0, unit="%")]),
        Funnel(title="f", steps=[Step(label="installed", value=1000.0),
                                 Step(label="first command", value=800.0, error=12.0, conversion=0.8),
                                 Step(label="pro", value=None, suppressed=True)]),
    )  # fmt: skip
    page = render(doc, "html")
    assert 1 == page.count('class="whisker"')
    assert ">40% ± 2%</text>" in page and ">10%</text>" in page
    assert ">80.0% kept · drop 20.0%</text>" in page
    md = render(doc, "md")
    assert "| first command | 800 | 12 | 80.0% | 20.0% |" in md
    assert "| pro | suppressed |  |  |  |" in md


def test_the_markdown_of_numbers_is_a_table() -> None:
    doc = doc_of(Numbers(items=[Value(label="DAU", value=1234.0, error=40.5),
                                Value(label="DAU/MAU", value=20.4, error=0.6, unit="%"),
                                Value(label="p95", value=4810.0, unit="ms")]))  # fmt: skip
    expected = (
        "# T\n\n2026-11-30 to 2026-12-06 · generated 2026-12-07T06:00:00Z\n\n## S\n\n"
        "| Metric | Value | ± 1 SE |\n| --- | ---: | ---: |\n| DAU | 1,234 | 40.5 |\n"
        "| DAU/MAU | 20.4% | 0.6% |\n| p95 | 4,810 ms |  |\n"
    )
    assert expected == render(doc, "md")


def test_empty_data_renders_as_no_data() -> None:
    """No rows, no days, no steps, no blocks: each says so instead of failing."""
    doc = doc_of(
        TimeSeries(title="t", x=[], series=[]), Bars(title="b", items=[]),
        Funnel(title="f", steps=[]), Heatmap(title="h", rows=[], columns=[], values=[]),
        Table(title="t", columns=["a"], rows=[]),
        TimeSeries(title="all suppressed", x=["d1"], series=[Series(name="DAU", values=[None])]),
    )  # fmt: skip
    page = render(doc, "html")
    assert 5 == page.count(">no data for this period</text>")
    assert ">No rows.</td>" in page
    assert "No data for this period." in render(doc_of(), "html")
    assert 5 == render(doc, "md").count("No data for this period.")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^unknown format 'pdf': one of html, md, json$"):
        render(sample_report("weekly"), "pdf")


# -- rkd-server report ---------------------------------------------------------------------------


@pytest.fixture
def fake_analytics(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """rkd.server.analytics replaced by one that returns the samples, and no warehouse."""
    from rkd.server import main

    calls: list[tuple[Any, ...]] = []
    module = types.ModuleType("rkd.server.analytics")

    def build_report(warehouse: Any, kind: ReportKind, end: Any, k: int = 10) -> ReportDoc:
        calls.append((warehouse, kind, end))
        return sample_report(kind, end)

    module.build_report = build_report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rkd.server.analytics", module)

    @contextlib.contextmanager
    def no_warehouse(*args: Any) -> Iterator[str]:
        yield "warehouse"

    monkeypatch.setattr(main, "_warehouse", no_warehouse)
    return calls


def test_the_report_command_writes_each_format(fake_analytics: list[Any], tmp_path: Path) -> None:
    from rkd.server.main import main

    runner = CliRunner()
    out = tmp_path / "monthly.html"
    result = runner.invoke(main, ["report", "monthly", "--out", str(out), "--end", "2026-11-30",
                                  "--data-dir", str(tmp_path)])  # fmt: skip
    assert (0, "") == (result.exit_code, result.output)
    assert render(sample_report("monthly", dt.date(2026, 11, 30)), "html") == out.read_text()
    result = runner.invoke(
        main, ["report", "transparency", "--format", "md", "--data-dir", str(tmp_path)]
    )
    assert 0 == result.exit_code
    assert result.output.startswith("# ReasonKit transparency report\n")
    assert ("warehouse", "monthly") == fake_analytics[0][:2]
    assert dt.date(2026, 11, 30) == fake_analytics[0][2]


def test_the_report_command_without_analytics_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rkd.server.main import main

    monkeypatch.setitem(sys.modules, "rkd.server.analytics", None)  # import fails
    result = CliRunner().invoke(main, ["report", "weekly", "--data-dir", str(tmp_path)])
    assert 1 == result.exit_code
    assert (
        "Error: reports need rkd.server.analytics, which this installation does not have\n"
        == result.output
    )
