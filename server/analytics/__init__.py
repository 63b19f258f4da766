"""Product analytics (§7) and the reports of §10, from the warehouse only.

No persistent identifier exists anywhere: engagement, retention, funnels and cohorts are
sums over anonymous daily community reports (``community``, ``cohorts``), debiased where
reports were randomized (``estimate``); Pro raw events give exact per-session figures
(``pro``). ``build_report`` assembles a ReportDoc for the renderers.
"""

from rkd.server.analytics.estimate import K_DEFAULT, Cell
from rkd.server.analytics.reports import build_report, period_of

__all__ = ["K_DEFAULT", "Cell", "build_report", "period_of"]
