"""The community report: what an open-source install may send (one per active day).

No id of any kind, no per-event data: the daemon answers a fixed set of questions from
what it already stores. Sums over many reports give the maintainers §7's numbers
without a persistent identifier:

- DAU for day D: the number of reports for D (a report is sent only for a day with
  activity). WAU: the sum of ``first_of_week`` over the week's reports; MAU: the sum of
  ``first_of_month``.
- D1/D7/D30 retention: reports for day D with ``install_age_days`` = 7, over the reports
  with ``new_install`` for day D-7. Weekly cohorts: ``first_of_week`` summed by
  ``cohort_week`` and week.
- Funnels: ``funnel`` holds, per declared funnel, the furthest stage reached so far.
- Adoption and quality: ``counts`` by dimension (declared values or ``__other__``),
  ``latency_ms`` as counts in fixed buckets (:data:`LATENCY_BUCKETS_MS`).

Under differential privacy (``dp`` set) every flag went through randomized response and
every count through the discrete Laplace mechanism before it left, so single reports
mean little and the server debiases the sums (the estimator lives beside the sampler).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct
from rkd.client.schema import Ident, Tier

REPORT_VERSION: Final = 1

# Upper bounds (ms) of the latency histogram's buckets; the last bucket is "above".
LATENCY_BUCKETS_MS: Final = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
MAX_INSTALL_AGE: Final = 31  # install_age_days is clipped: 31 means "31 days or more"
Dimension = Literal["command", "profile", "thinktool", "error_category", "feature", "model"]
MAX_KEYS_PER_DIMENSION: Final = 64

# A count in a report: DP noise may make it negative; the bounds keep sums exact.
ReportCount = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
IsoWeek = Annotated[str, Meta(pattern=r"^[0-9]{4}-W[0-9]{2}\Z")]
CoarseVersion = Annotated[str, Meta(pattern=r"^(?:[0-9]{1,4}\.[0-9]{1,4}|__other__)\Z")]


class Privacy(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """How the report's numbers were randomized (absent: exact)."""

    epsilon: Annotated[float, Meta(gt=0.0, le=16.0)]
    flags: Literal["randomized_response"] = "randomized_response"
    counts: Literal["discrete_laplace"] = "discrete_laplace"
    count_bound: Annotated[int, Meta(ge=1, le=1_000_000)]  # counts clipped to this first


class CommunityReport(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One install's report for one UTC day, built from declared values only."""

    report_version: Literal[1] = 1
    day: dt.date
    product: Ident
    version: CoarseVersion  # major.minor only
    tier: Tier = "oss"
    os: Ident
    arch: Ident
    cohort_week: IsoWeek  # the ISO week the install was first seen in
    install_age_days: Annotated[int, Meta(ge=0, le=MAX_INSTALL_AGE)]
    new_install: bool  # first active day of this install
    first_of_week: bool  # first active day of this install in ``day``'s ISO week
    first_of_month: bool  # first active day in ``day``'s calendar month
    sessions: ReportCount
    commands: ReportCount
    errors: ReportCount
    funnel: dict[Ident, Annotated[int, Meta(ge=0, le=16)]] = {}
    counts: dict[Dimension, dict[Ident, ReportCount]] = {}
    latency_ms: Annotated[list[ReportCount], Meta(max_length=len(LATENCY_BUCKETS_MS) + 1)] = []
    privacy: Privacy | None = None


_decoder = msgspec.msgpack.Decoder(CommunityReport)


def decode_report(raw: bytes) -> CommunityReport:
    """A report from its (gunzipped) msgpack bytes; msgspec errors if it does not fit."""
    report = _decoder.decode(raw)
    for values in report.counts.values():
        if len(values) > MAX_KEYS_PER_DIMENSION:
            raise msgspec.ValidationError(f"more than {MAX_KEYS_PER_DIMENSION} keys in counts")
    return report
