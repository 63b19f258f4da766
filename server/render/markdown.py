"""A report as Markdown: the same sections as tables and text, no images (for a pull
request, a wiki page, or a terminal)."""

from __future__ import annotations

import re

from rkd.server.render import text
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
    Value,
)

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_LISTED = re.compile(r"^(\d+)([.)])(?=\s|$)")  # "1. " would start a list
_BLOCK = re.compile(r"^(#|[>+-](?=\s|$))")  # a heading, a quote, a list item


def esc(value: object) -> str:
    """One line of inert text: Markdown's punctuation escaped, HTML's characters as
    entities (a Markdown viewer renders inline HTML), newlines as spaces."""
    s = " ".join(str(value).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _LISTED.sub(r"\1\\\2", _SPECIAL.sub(r"\\\1", s))
    return _BLOCK.sub(r"\\\1", s)


def render_markdown(doc: ReportDoc) -> str:
    out = [f"# {esc(doc.title)}", "",
           f"{esc(doc.period.start)} to {esc(doc.period.end)} · generated {esc(doc.generated_at)}", ""]  # fmt: skip
    out += [f"> {esc(n)}" for n in doc.notes] + ([""] if doc.notes else [])
    for sec in doc.sections:
        out += section(sec)
    return "\n".join(out).rstrip() + "\n"


def section(sec: Section) -> list[str]:
    out = [f"## {esc(sec.title)}", ""]
    if sec.text:
        out += [esc(sec.text), ""]
    for b in sec.blocks:
        out += [*block(b), ""]
    if not sec.blocks:
        out += ["No data for this period.", ""]
    return out


def block(b: Block) -> list[str]:
    if isinstance(b, Numbers):
        return _table(["Metric", "Value", "± 1 SE"], [_value_row(v) for v in b.items])
    return [f"### {esc(b.title)}", "", *_body(b)]


def _body(b: Bars | TimeSeries | Funnel | Heatmap | Table) -> list[str]:
    match b:
        case Bars():
            return _table(["", "Value", "± 1 SE"], [_value_row(v) for v in b.items])
        case TimeSeries():
            return _series(b)
        case Funnel():
            return _funnel(b)
        case Heatmap():
            rows = [[r, *(_num(v, b.unit) for v in vals)] for r, vals in zip(b.rows, b.values, strict=False)]  # fmt: skip
            return _table(["", *b.columns], rows)
        case Table():
            return _table(b.columns, [[c if isinstance(c, str) else _num(c) for c in row] for row in b.rows])  # fmt: skip


def _value_row(v: Value) -> list[str]:
    err = "" if v.suppressed else text.error(v.error, v.unit).removeprefix("± ")
    return [v.label, text.shown(v.value, v.suppressed, v.unit), err]


def _num(v: float | int | None, unit: str | None = None) -> str:
    return text.MISSING if v is None else text.with_unit(v, unit)


def _series(b: TimeSeries) -> list[str]:
    if not b.x:
        return ["No data for this period."]
    columns, unit = [""], f" ({b.unit})" if b.unit else ""
    for s in b.series:
        columns += [s.name + unit] + (["± 1 SE"] if s.errors else [])
    rows = []
    for i, x in enumerate(b.x):
        row = [x]
        for s in b.series:
            row.append(_num(s.values[i] if i < len(s.values) else None))
            if s.errors:
                e = s.errors[i] if i < len(s.errors) else None
                row.append("" if e is None else text.number(e))
        rows.append(row)
    return _table(columns, rows)


def _funnel(b: Funnel) -> list[str]:
    rows = []
    for s in b.steps:
        kept = "" if s.conversion is None else text.percent(s.conversion)
        drop = "" if s.conversion is None else text.percent(1 - s.conversion)
        err = "" if s.suppressed else text.error(s.error).removeprefix("± ")
        rows.append([s.label, text.shown(s.value, s.suppressed), err, kept, drop])
    return _table(["Step", "Reached", "± 1 SE", "Kept from previous", "Drop"], rows)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["No data for this period."]
    head = "| " + " | ".join(esc(c) for c in columns) + " |"
    rule = "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return [head, rule, *body]
