"""Debiased sums over community reports, read from the warehouse, and k-suppression.

Every query groups reports by their mechanism (``dp_epsilon`` and the count bound, both
0 for exact reports) so that :mod:`rkd.client.dp`'s estimators debias each group with its
own ε; the groups' estimates add up (independent reports). Exact reports give exact
values with no error; randomized ones give an unbiased value and one standard error.

Two randomized attributes of the same report (a cohort week and a weekly flag, a funnel
stage and a monthly flag) are joined with :func:`joint_count`: the product of the two
per-report unbiased indicators is unbiased for "both true" because the report's
mechanisms draw independently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, NamedTuple

from rkd.client import dp
from rkd.client.dp import Estimate

K_DEFAULT: Final = 10  # a published cell needs at least this many contributors
# The mechanism of a report, as SQL columns: ε (0: exact) and the count bound (0: exact).
MECH_SQL: Final = "dp_epsilon AS eps, JSONExtractInt(body, 'privacy', 'count_bound') AS bound"
ZERO: Final = Estimate(0.0, 0.0)


class Cell(NamedTuple):
    """A published number: its estimate, and how many reports or sessions are behind it."""

    estimate: Estimate
    contributors: int

    def shown(self, k: int) -> Estimate | None:
        """The estimate, or None when fewer than ``k`` contributors stand behind it."""
        return self.estimate if self.contributors >= k else None


def total(parts: Iterable[Estimate]) -> Estimate:
    """The sum of independent estimates."""
    value = var = 0.0
    for e in parts:
        value += e.value
        var += e.stderr**2
    return Estimate(value, math.sqrt(var))


def part(eps: float, name: str) -> float:
    """The ε one part of a report used (rkd.client.dp.SPLIT), from the stored ε."""
    return float(dp.part_epsilon(dp.exact_epsilon(eps), name))


def flag_count(rows: Iterable[tuple[float, int, int]], flag: dp.Flag) -> Estimate:
    """True flags among reports, from ``(ε, reports, shown set)`` per mechanism."""
    return total(
        Estimate(float(ones), 0.0) if eps == 0 else dp.rr_sum(n, ones, part(eps, flag))
        for eps, n, ones in rows
    )


def age_count(rows: Iterable[tuple[float, int, int]], age: int) -> Estimate:
    """Reports truly of install age ``age``, from ``(ε, reports, shown age)`` rows (the
    randomized reports answer for the ages of dp.AGE_DOMAIN only)."""
    k = len(dp.AGE_DOMAIN)
    if age not in dp.AGE_DOMAIN or age == dp.AGE_OTHER:
        raise ValueError(f"install age {age} is not kept under differential privacy")
    return total(
        Estimate(float(shown), 0.0)
        if eps == 0
        else dp.krr_count(n, shown, k, part(eps, "install_age"))
        for eps, n, shown in rows
    )


def count_sum(rows: Iterable[tuple[float, int, int, int]], histogram: bool) -> Estimate:
    """A count summed over reports, from ``(ε, bound, reports, sum)`` rows. Randomized
    reports estimate the sum of their *clipped* counts (dp.COUNT_BOUND)."""
    parts = []
    for eps, bound, n, s in rows:
        if eps == 0:
            parts.append(Estimate(float(s), 0.0))
        else:
            e = float(dp.count_epsilon(dp.exact_epsilon(eps), histogram, bound or dp.COUNT_BOUND))
            parts.append(dp.laplace_sum(s, n, e))
    return total(parts)


class Indicator(NamedTuple):
    """How one report's shown value answers "is the truth in set S?" without bias:
    ``hit`` when the shown value is in S, ``miss`` when not (k-ary RR, |S| = m)."""

    hit: float
    miss: float
    p_in: float  # P(shown in S | truth in S)
    p_out: float  # P(shown in S | truth not in S)

    def second_moment(self, truly_in: bool) -> float:
        p = self.p_in if truly_in else self.p_out
        return p * self.hit**2 + (1 - p) * self.miss**2


EXACT: Final = Indicator(1.0, 0.0, 1.0, 0.0)


def indicator(k: int, m: int, epsilon: float) -> Indicator:
    """The unbiased indicator of "truth in S" (|S| = m of k values) under k-ary RR at
    ``epsilon``; exact when ``epsilon`` is 0."""
    if epsilon == 0:
        return EXACT
    p, q = dp.krr_probabilities(k, epsilon)
    return Indicator((1 - m * q) / (p - q), -m * q / (p - q), p + (m - 1) * q, m * q)


class Joint(NamedTuple):
    """Reports of one mechanism cross-tabulated on two shown conditions A and B."""

    n: int  # reports
    ab: int  # shown in A and in B
    a: int  # shown in A
    b: int  # shown in B


def joint_count(t: Joint, ia: Indicator, ib: Indicator) -> Estimate:
    """How many reports are truly in A and in B: the sum of the products of the two
    indicators. The error is an upper bound: every report is charged the largest
    variance any truth could give it."""
    cells = ((t.ab, ia.hit, ib.hit), (t.a - t.ab, ia.hit, ib.miss),
             (t.b - t.ab, ia.miss, ib.hit), (t.n - t.a - t.b + t.ab, ia.miss, ib.miss))  # fmt: skip
    value = sum(n * x * y for n, x, y in cells)
    worst = max(
        ia.second_moment(ta) * ib.second_moment(tb) - (ta and tb)
        for ta in (True, False)
        for tb in (True, False)
    )
    return Estimate(value, math.sqrt(t.n * max(worst, 0.0)))


def ratio(num: Estimate, den: Estimate) -> Estimate | None:
    """num / den with a delta-method error; None when the denominator is not positive."""
    if den.value <= 0:
        return None
    return dp.ratio(num, den)
