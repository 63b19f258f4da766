"""The public transparency report (§10.2): counts of what the system did, and usage
statistics under central differential privacy. Nothing individual: no per-install,
per-session or per-day figure below the monthly totals.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from rkd.server import publish
from rkd.server.analytics import community as cm
from rkd.server.analytics import pro
from rkd.server.report_doc import Numbers, Section, Table, Value
from rkd.server.warehouse import Warehouse

# Released families: (label, how much one install can move the whole vector in L1).
MAU_SENSITIVITY: Final = 12  # once per month it was active, at most 12 months a year
NEW_SENSITIVITY: Final = 1  # an install is new once
FAMILIES: Final = 2


def operations(wh: Warehouse, start: dt.date, end: dt.date) -> list[Value]:
    """Events processed and erasures served (operational totals, exact: they describe
    the system, not anyone's usage); security incidents: none recorded in any table."""
    erased = cm.query(
        wh,
        "SELECT sum(requests), sum(sessions), sum(events_deleted) FROM {db}.erasures"
        " WHERE day BETWEEN {start:Date} AND {end:Date}",
        start=start, end=end,
    )[0]  # fmt: skip
    reports = cm.query(wh, "SELECT count() FROM {db}.reports WHERE day BETWEEN {start:Date}"
                           " AND {end:Date}", start=start, end=end)[0][0]  # fmt: skip
    return [
        Value(label="Telemetry events processed (Pro uploads)", unit="events",
              value=float(_round(pro.events_processed(wh, start, end)))),
        Value(label="Community reports received", unit="reports", value=float(_round(int(reports)))),
        Value(label="Deletion requests fulfilled", value=float(erased[0] or 0), unit="requests"),
        Value(label="Raw events deleted on request", value=float(erased[2] or 0), unit="events"),
        Value(label="Security incidents (0: none recorded)", value=0.0),
    ]  # fmt: skip


def _round(n: int) -> int:
    """Totals to 3 significant figures: the exact count says nothing more of interest."""
    if n < 1000:
        return n
    digits = len(str(n)) - 3
    return round(n, -digits)


def usage(wh: Warehouse, product: str, start: dt.date, end: dt.date, k: int,
          epsilon: float) -> Table:  # fmt: skip
    """MAU and new installs per month, with central discrete Laplace noise (OpenDP)."""
    months = cm.mau(wh, product, start, end)
    news = cm.new_installs(wh, product, start, end)
    new_by_month: dict[dt.date, float] = {}
    for d, c in news.items():
        m = d.replace(day=1)
        new_by_month[m] = new_by_month.get(m, 0.0) + c.estimate.value
    share = epsilon / FAMILIES
    mau = publish.publish({m.isoformat(): c.estimate.value for m, c in months.items()},
                          MAU_SENSITIVITY, share)  # fmt: skip
    new = publish.publish(
        {m.isoformat(): v for m, v in new_by_month.items()}, NEW_SENSITIVITY, share
    )
    rows: list[list[str | float | int | None]] = []
    for m, cell in sorted(months.items()):
        key = m.isoformat()
        a, n = mau[key], new.get(key)
        err = (cell.estimate.stderr**2 + a.noise_stderr**2) ** 0.5
        rows.append([key[:7], a.value if a.value >= k else None, round(err, 1),
                     n.value if n is not None and n.value >= k else None])  # fmt: skip
    return Table(title=f"Monthly active and new installs (central DP, ε = {epsilon:g} for the report)",
                 columns=["month", "active installs", "± (1 s.e.)", "new installs"], rows=rows)  # fmt: skip


def transparency(
    wh: Warehouse,
    product: str,
    start: dt.date,
    end: dt.date,
    k: int,
    epsilon: float = publish.PUBLIC_EPSILON,
) -> list[Section]:
    """§10.2's sections for [start, end]: operations, privacy changes, DP usage."""
    changes: list[list[str | float | int | None]] = [[d, t] for d, t in publish.PRIVACY_CHANGES]
    return [
        Section(id="operations", title="What the system did", blocks=[Numbers(items=operations(wh, start, end))],
                text="Security incidents: 0, none recorded. No incident table exists yet; this line will read from it once §9.3's process records incidents."),
        Section(id="privacy", title="Privacy improvements made",
                blocks=[Table(title="Changes", columns=["when", "what"], rows=changes)]),
        Section(id="usage", title="Usage statistics (differentially private)",
                blocks=[usage(wh, product, start, end, k, epsilon)],
                text=f"Each number carries discrete Laplace noise (OpenDP) on top of any local DP; months below {k} are not shown. No individual data is published."),
    ]  # fmt: skip
