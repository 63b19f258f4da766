"""A report as one self-contained HTML page: inline CSS and SVG, no script, no font, no
request of any kind (a Content-Security-Policy of ``default-src 'none'`` says so to the
browser too). Readable at a laptop's width, and it prints (a figure is never split)."""

from __future__ import annotations

from typing import Final

from rkd.server.render import svg, text
from rkd.server.render.svg import esc
from rkd.server.report_doc import (
    Bars,
    Block,
    Funnel,
    Heatmap,
    Numbers,
    ReportDoc,
    Section,
    Table,
    TimeSeries,
)

CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS: Final = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1a1a1a; background: #fff; margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 48px; }
header { border-bottom: 2px solid #0072B2; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 4px; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
h3 { font-size: 15px; margin: 18px 0 6px; color: #333; }
.meta, .muted { color: #666; }
.notes { background: #f6f8fa; border-left: 4px solid #0072B2; padding: 8px 16px; margin: 12px 0; }
.notes ul { margin: 4px 0; padding-left: 20px; }
.numbers { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; }
.card .label { color: #555; font-size: 13px; }
.card .value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .unit { font-size: 15px; font-weight: 400; color: #555; }
.card .err { color: #666; font-size: 13px; }
.suppressed { color: #888; font-style: italic; }
figure { margin: 8px 0 16px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: #1a1a1a; }
svg text.tick, svg text.muted { fill: #666; font-size: 12px; }
svg text.cell { font-size: 12px; } svg text.light { fill: #fff; }
svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #999; }
svg .whisker { stroke: #1a1a1a; stroke-width: 1.5; fill: none; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 12px; text-align: left; }
td.num { text-align: right; }
.key { font-size: 12px; color: #666; margin-top: 2px; }
@media print { main { max-width: none; padding: 0; } h2 { break-after: avoid; } }
"""


def render_html(doc: ReportDoc) -> str:
    notes = "".join(f"<li>{esc(n)}</li>" for n in doc.notes)
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(doc.title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><h1>{esc(doc.title)}</h1><p class="meta">{esc(doc.period.start)} to '
        f"{esc(doc.period.end)} · generated {esc(doc.generated_at)}</p></header>"
    )
    body = f'<aside class="notes"><ul>{notes}</ul></aside>' if notes else ""
    sections = "".join(section(sec, f"s{i}") for i, sec in enumerate(doc.sections))
    return head + body + sections + "</main></body></html>\n"


def section(sec: Section, uid: str) -> str:
    intro = f"<p>{esc(sec.text)}</p>" if sec.text else ""
    blocks = "".join(block(b, f"{uid}b{i}") for i, b in enumerate(sec.blocks))
    blocks = blocks or '<p class="muted">No data for this period.</p>'
    return f'<section id="{esc(sec.id)}"><h2>{esc(sec.title)}</h2>{intro}{blocks}</section>'


def block(b: Block, uid: str) -> str:
    """One block as HTML; ``uid`` is unique in the page (for the ids inside a chart)."""
    match b:
        case Numbers():
            return numbers(b)
        case TimeSeries():
            return _figure(b.title, svg.timeseries(b, uid), _missing_key(b))
        case Bars():
            return _figure(b.title, svg.bars(b, uid), "Whiskers: ± one standard error.")
        case Funnel():
            return _figure(b.title, svg.funnel(b, uid), "Each step: contributors who reached it, the share kept from the step before, and the drop.")  # fmt: skip
        case Heatmap():
            return _figure(b.title, svg.heatmap(b, uid), text.MISSING_NOTE + ".")
        case Table():
            return table(b)


def _missing_key(b: TimeSeries) -> str:
    bands = "Shaded: ± one standard error." if any(s.errors for s in b.series) else ""
    gaps = text.MISSING_NOTE + "." if any(v is None for s in b.series for v in s.values) else ""
    return " ".join(filter(None, (bands, gaps)))


def _figure(title: str, drawing: str, key: str) -> str:
    caption = f'<div class="key">{esc(key)}</div>' if key else ""
    return f"<figure><figcaption>{esc(title)}</figcaption>{drawing}{caption}</figure>"


def numbers(b: Numbers) -> str:
    cards = []
    for v in b.items:
        if v.suppressed or v.value is None:
            shown = f'<div class="value suppressed">{text.shown(v.value, v.suppressed)}</div>'
        elif v.unit and v.unit != "%":  # a word after the number: smaller, so it fits
            shown = f'<div class="value">{esc(text.number(v.value))} <span class="unit">{esc(v.unit)}</span></div>'
        else:
            shown = f'<div class="value">{esc(text.with_unit(v.value, v.unit))}</div>'
        err = "" if v.suppressed else text.error(v.error, v.unit)
        cards.append(f'<div class="card"><div class="label">{esc(v.label)}</div>{shown}'
                     f'<div class="err">{esc(err)}</div></div>')  # fmt: skip
    return f'<div class="numbers">{"".join(cards)}</div>'


def table(b: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in b.columns)
    rows = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in b.rows)
    missing = any(c is None for row in b.rows for c in row)
    key = f'<div class="key">{esc(text.MISSING_NOTE)}.</div>' if missing else ""
    body = rows or f'<tr><td colspan="{max(len(b.columns), 1)}" class="muted">No rows.</td></tr>'
    return f"<h3>{esc(b.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{key}"


def _cell(c: str | float | int | None) -> str:
    if c is None:
        return f'<td class="num suppressed">{text.MISSING}</td>'
    if isinstance(c, int | float) and not isinstance(c, bool):
        return f'<td class="num">{esc(text.number(c))}</td>'
    return f"<td>{esc(c)}</td>"
