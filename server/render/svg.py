"""Charts as inline SVG, written by hand: time series with error bands, bars with error
bars, the funnel with the drop at each step, the cohort heat-map.

Why by hand and not a plotting library: four simple chart kinds, and the output stays
small (a few kB each, where matplotlib's SVG is 50-100 kB of glyph paths), its text stays
text (selectable, escaped here like every other string, crisp in print), the page needs
no font, and the output is deterministic, so tests compare it exactly. Every chart has a
fixed viewBox and scales to its container's width.

A suppressed or missing value is drawn hatched, never as a number or a zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from html import escape
from typing import Final

from rkd.server.render import text
from rkd.server.report_doc import Bars, Funnel, Heatmap, TimeSeries

WIDTH: Final = 1000
# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in grey.
PALETTE: Final = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def _open(height: float, label: str, uid: str) -> tuple[str, str]:
    """The <svg> start tag with its own hatch pattern, and the pattern's url. ``uid``
    makes the pattern's id unique in the page (the caller numbers its charts)."""
    hatch = f"hatch-{uid}"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
        f'<defs><pattern id="{hatch}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f3f3f3"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="#b0b0b0" stroke-width="2"/></pattern></defs>'
    )
    return head, f"url(#{hatch})"


def _text(x: float, y: float, body: str, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{esc(body)}</text>'


def _short(label: str, limit: int = 32) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(math.ceil((hi - start) / step) + 1)]


def empty(label: str, uid: str, height: float = 80) -> str:
    head, hatch = _open(height, label, uid)
    return (f'{head}<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="{hatch}"/>'
            f"{_text(WIDTH / 2, height / 2 + 5, 'no data for this period', 'middle')}</svg>")  # fmt: skip


# -- time series ------------------------------------------------------------------------------


def timeseries(block: TimeSeries, uid: str) -> str:
    """Lines with a shaded band of ± one standard error; gaps hatched where suppressed."""
    points = [
        (v, e or 0.0) for s in block.series for v, e in _pairs(s.values, s.errors) if v is not None
    ]
    if not block.x or not points:
        return empty(block.title, uid)
    left, right, top, bottom, height = 70, 44, 34, 46, 320
    ticks = nice_ticks(min(0.0, *(v - e for v, e in points)), max(v + e for v, e in points))
    y0, y1 = ticks[0], ticks[-1]
    n = len(block.x)
    step = (WIDTH - left - right) / max(n - 1, 1)

    def px(i: int) -> float:
        return left + (i * step if n > 1 else (WIDTH - left - right) / 2)

    def py(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - y0) / (y1 - y0))

    head, hatch = _open(height, block.title, uid)
    out = [head]
    for t in ticks:
        out.append(
            f'<line x1="{left}" x2="{WIDTH - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
        )
        out.append(_text(left - 8, py(t) + 4, text.number(t), "end", "tick"))
    gaps = {i for s in block.series for i, v in enumerate(s.values) if v is None}
    for i in sorted(gaps):
        x = max(left, px(i) - step / 2)
        w = min(WIDTH - right, px(i) + step / 2) - x
        out.append(
            f'<rect x="{x:.1f}" y="{top}" width="{max(w, 2):.1f}" height="{height - top - bottom}" fill="{hatch}"><title>{esc(block.x[i])}: {text.MISSING_NOTE}</title></rect>'
        )
    for k, s in enumerate(block.series):
        color = PALETTE[k % len(PALETTE)]
        for run in _runs(s.values, s.errors):
            if len(run) > 1 and any(e for _, _, e in run):
                upper = [f"{px(i):.1f},{py(v + (e or 0)):.1f}" for i, v, e in run]
                lower = [f"{px(i):.1f},{py(v - (e or 0)):.1f}" for i, v, e in reversed(run)]
                out.append(
                    f'<polygon points="{" ".join(upper + lower)}" fill="{color}" fill-opacity="0.18"/>'
                )
            line = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v, _ in run)
            out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
            if len(run) == 1:  # a day alone between gaps: a dot, and its error as a bar
                i, v, e = run[0]
                out.append(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
                if e:
                    out.append(
                        f'<line x1="{px(i):.1f}" x2="{px(i):.1f}" y1="{py(v - e):.1f}" y2="{py(v + e):.1f}" stroke="{color}"/>'
                    )
        out.append(f'<rect x="{left + k * 150}" y="6" width="14" height="14" fill="{color}"/>')
        out.append(_text(left + k * 150 + 20, 18, _short(s.name, 18), cls="legend"))
    every = max(1, math.ceil(n / 10))
    for i in range(0, n, every):
        out.append(_text(px(i), height - bottom + 18, block.x[i], "middle", "tick"))
    if block.unit:
        out.append(_text(8, top - 8, block.unit, cls="tick"))
    out.append(
        f'<line x1="{left}" x2="{WIDTH - right}" y1="{py(y0):.1f}" y2="{py(y0):.1f}" class="axis"/>'
    )
    return "".join(out) + "</svg>"


def _pairs(values: list[float | None], errors: list[float | None] | None) -> Iterator[tuple[float | None, float | None]]:  # fmt: skip
    return zip(values, errors or [None] * len(values), strict=False)


def _runs(values: list[float | None], errors: list[float | None] | None) -> list[list[tuple[int, float, float | None]]]:  # fmt: skip
    """Contiguous stretches without a None: a line is never drawn across a gap."""
    runs: list[list[tuple[int, float, float | None]]] = [[]]
    for i, (v, e) in enumerate(_pairs(values, errors)):
        if v is None:
            runs.append([])
        else:
            runs[-1].append((i, v, e))
    return [r for r in runs if r]


# -- bars and funnel ----------------------------------------------------------------------------

ROW: Final = 30
LABEL_W: Final = 230
VALUE_W: Final = 230


def bars(block: Bars, uid: str) -> str:
    """Horizontal bars, one per item, with a whisker of ± one standard error."""
    if not block.items:
        return empty(block.title, uid)
    unit = next((i.unit for i in block.items if i.unit), None)
    top = max([(i.value or 0) + (i.error or 0) for i in block.items if not i.suppressed] + [0.0])
    scale = (WIDTH - LABEL_W - VALUE_W) / (top or 1)
    height = ROW * len(block.items) + 10
    head, hatch = _open(height, block.title, uid)
    out = [head]
    for r, item in enumerate(block.items):
        y = 5 + r * ROW
        out.append(_text(LABEL_W - 10, y + 19, _short(item.label), "end"))
        if item.suppressed or item.value is None:
            out.append(
                f'<rect x="{LABEL_W}" y="{y + 5}" width="{WIDTH - LABEL_W - VALUE_W}" height="{ROW - 10}" fill="{hatch}"/>'
            )
            out.append(
                _text(
                    WIDTH - VALUE_W + 10,
                    y + 19,
                    text.shown(item.value, item.suppressed),
                    cls="muted",
                )
            )
            continue
        w = item.value * scale
        out.append(
            f'<rect x="{LABEL_W}" y="{y + 5}" width="{max(w, 1):.1f}" height="{ROW - 10}" fill="{PALETTE[0]}"><title>{esc(item.label)}</title></rect>'
        )
        if item.error:
            lo, hi = (
                LABEL_W + max(0.0, item.value - item.error) * scale,
                LABEL_W + (item.value + item.error) * scale,
            )
            mid = y + ROW / 2
            out.append(
                f'<path d="M{lo:.1f},{mid:.1f}H{hi:.1f}M{lo:.1f},{mid - 6:.1f}V{mid + 6:.1f}M{hi:.1f},{mid - 6:.1f}V{mid + 6:.1f}" class="whisker"/>'
            )
        label = f"{text.with_unit(item.value, item.unit or unit)} {text.error(item.error, item.unit or unit)}"
        out.append(_text(WIDTH - VALUE_W + 10, y + 19, label.strip()))
    return "".join(out) + "</svg>"


def funnel(block: Funnel, uid: str) -> str:
    """Centred bars as wide as the contributors who reached each step, and at each step
    the share kept from the previous one and the drop."""
    if not block.steps:
        return empty(block.title, uid)
    first = next((s.value for s in block.steps if s.value and not s.suppressed), None) or 1.0
    span = WIDTH - LABEL_W - VALUE_W
    row = ROW + 8
    height = row * len(block.steps) + 10
    head, hatch = _open(height, block.title, uid)
    out = [head]
    for r, step in enumerate(block.steps):
        y, mid = 5 + r * row, LABEL_W + span / 2
        out.append(_text(LABEL_W - 10, y + 22, f"{r + 1}. {_short(step.label, 28)}", "end"))
        if step.suppressed or step.value is None:
            out.append(
                f'<rect x="{LABEL_W}" y="{y + 5}" width="{span}" height="{row - 10}" fill="{hatch}"/>'
            )
            out.append(
                _text(
                    WIDTH - VALUE_W + 10,
                    y + 22,
                    text.shown(step.value, step.suppressed),
                    cls="muted",
                )
            )
            continue
        w = max(2.0, span * min(step.value / first, 1.0))
        out.append(
            f'<rect x="{mid - w / 2:.1f}" y="{y + 5}" width="{w:.1f}" height="{row - 10}" fill="{PALETTE[2]}"><title>{esc(step.label)}</title></rect>'
        )
        out.append(
            _text(
                WIDTH - VALUE_W + 10,
                y + 16,
                f"{text.number(step.value)} {text.error(step.error)}".strip(),
            )
        )
        if step.conversion is not None and r > 0:
            drop = (
                f"{text.percent(step.conversion)} kept · drop {text.percent(1 - step.conversion)}"
            )
            out.append(_text(WIDTH - VALUE_W + 10, y + 31, drop, cls="muted"))
    return "".join(out) + "</svg>"


# -- heat-map ---------------------------------------------------------------------------------

LOW: Final = (239, 246, 252)
HIGH: Final = (8, 69, 148)


def heatmap(block: Heatmap, uid: str) -> str:
    """One cell per row and column, darker for more; hatched where suppressed or not yet."""
    if not block.rows or not block.columns:
        return empty(block.title, uid)
    left, top = 130, 30
    cell_w = min(70.0, (WIDTH - left - 10) / len(block.columns))
    cell_h = 26
    found = [v for row in block.values for v in row if v is not None]
    vmax = 100.0 if block.unit == "%" else max([*found, 1.0])
    height = top + cell_h * len(block.rows) + 10
    head, hatch = _open(height, block.title, uid)
    out = [head]
    for c, col in enumerate(block.columns):
        out.append(_text(left + (c + 0.5) * cell_w, top - 10, _short(col, 9), "middle", "tick"))
    for r, row in enumerate(block.rows):
        y = top + r * cell_h
        out.append(_text(left - 8, y + 18, _short(row, 18), "end", "tick"))
        values = block.values[r] if r < len(block.values) else []
        for c in range(len(block.columns)):
            v = values[c] if c < len(values) else None
            x = left + c * cell_w
            if v is None:
                out.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 2:.1f}" height="{cell_h - 2}" fill="{hatch}"><title>{esc(row)}, {esc(block.columns[c])}: {text.MISSING_NOTE}</title></rect>'
                )
                continue
            t = max(0.0, min(1.0, v / vmax))
            fill = "#{:02x}{:02x}{:02x}".format(
                *(round(lo + (hi - lo) * t) for lo, hi in zip(LOW, HIGH, strict=True))
            )
            ink = "cell light" if t > 0.5 else "cell"  # CSS, not fill=: CSS would win
            label = text.with_unit(v, block.unit).replace(" ", "")
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 2:.1f}" height="{cell_h - 2}" fill="{fill}"/>'
            )
            out.append(
                f'<text x="{x + cell_w / 2 - 1:.1f}" y="{y + 17}" text-anchor="middle" class="{ink}">{esc(label)}</text>'
            )
    return "".join(out) + "</svg>"
