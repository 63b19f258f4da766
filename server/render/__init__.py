"""Render a :class:`~rkd.server.report_doc.ReportDoc`: ``render(doc, "html"|"md"|"json")``.

HTML is one self-contained page with inline SVG charts; Markdown is tables and text;
JSON is the document itself (msgspec), for other tools.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from rkd.server.report_doc import ReportDoc

Format = Literal["html", "md", "json"]
FORMATS: Final = ("html", "md", "json")
MEDIA_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "json": "application/json",
}


def render(doc: ReportDoc, fmt: str) -> str:
    """The report as text in one of FORMATS; ValueError for another."""
    if fmt == "html":
        from rkd.server.render.html import render_html

        return render_html(doc)
    if fmt == "md":
        from rkd.server.render.markdown import render_markdown

        return render_markdown(doc)
    if fmt == "json":
        return msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n"
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
