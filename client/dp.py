"""Differential privacy for community reports: exact samplers, the ε split, estimators.

Both sides import this module: the daemon randomizes a report with the samplers, the
server debiases sums of reports with the estimators, and both read the same split.

**Samplers** are exact: integers and rationals only. Randomness comes from
``rng.randrange(n)`` (an exact uniform integer; the default is the OS generator,
``secrets.SystemRandom``); probabilities are ``Fraction``s; ``exp(-γ)`` is sampled with
Canonne, Kamath and Steinke's Bernoulli factory ("The Discrete Gaussian for Differential
Privacy", 2020, Algorithms 1 and 2). No float enters the sampling path, so there is no
floating-point leak of the kind Mironov showed for textbook Laplace samplers.

**The split.** ``dp_epsilon`` is what ONE report (one install, one UTC day) may spend; it
is divided among the report's numbers by :data:`SPLIT` (sequential composition):

=================  ======  =============================================================
part               share   mechanism
=================  ======  =============================================================
first_of_week      1/4     randomized response (RR) on the flag
first_of_month     1/4     RR on the flag
install_age        3/10    k-ary RR over :data:`AGE_DOMAIN`; ``new_install`` is
                           ``install_age_days == 0`` (derived: no budget of its own)
cohort_week        1/20    k-ary RR over the :data:`COHORT_WEEKS` ISO weeks ending with
                           the report's week (the oldest stands for "that or earlier")
funnel             1/20    k-ary RR per funnel over its stages, split equally
counts             1/10    discrete Laplace, split equally among :data:`COUNT_GROUPS`
=================  ======  =============================================================

The budget goes first to what reports exist for: activity (WAU, MAU) and retention. Even
so, local DP is costly: at ε = 1 and 1,000 installs WAU is known to about ± 30-40 % and
D7 retention not at all (tests/test_report_simulation.py); errors fall as
1/sqrt(installs). Funnels, cohorts and counts get little and are useful only with very
many installs (a per-key count's noise has a standard deviation near 2,500 per report).

Counts are clipped first: a scalar to ``[0, COUNT_BOUND]`` (sensitivity B = COUNT_BOUND),
a histogram so that its total is at most B (sensitivity 2B: two clipped histograms
differ by at most 2B in L1). Each number of a group gets noise with
``P(z) ∝ exp(-ε'|z|)``, ``ε' = ε_group / sensitivity`` (:func:`count_epsilon`).
Under DP the ``model`` dimension is not sent (its values are an open family: the keys
themselves would leak), and every other dimension carries all its declared keys.

**What DP does not cover.** A report exists only for an active day, so its existence
(and its day, version and platform) is protected by unlinkability (no id, random send
time, no stored address), not by ε. The budget composes over days: the ledger
(``rkd.daemon.reports.budget``) shows ε spent per day, ISO week and month.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable
from fractions import Fraction
from random import Random
from typing import Final, Literal, NamedTuple

from rkd.client.report import CommunityReport

SPLIT: Final[dict[str, Fraction]] = {
    "first_of_week": Fraction(1, 4),
    "first_of_month": Fraction(1, 4),
    "install_age": Fraction(3, 10),
    "cohort_week": Fraction(1, 20),
    "funnel": Fraction(1, 20),
    "counts": Fraction(1, 10),
}
assert sum(SPLIT.values()) == 1

# Under DP, install_age_days is one of these: the ages retention needs (D0 = new install,
# D1, D7, D30) and 31 for "any other age".
AGE_DOMAIN: Final = (0, 1, 7, 30, 31)
AGE_OTHER: Final = 31
COHORT_WEEKS: Final = 13  # the report's ISO week and the 12 before it
COUNT_BOUND: Final = 10  # counts clipped to this (scalars) or histograms to this total

# §7.2's funnels. A report's ``funnel[name]`` is k when the install reached stages 1..k of
# it, in this order, at any time so far (0: not even stage 1); stage k is FUNNELS[name][k-1].
FUNNELS: Final[dict[str, tuple[str, ...]]] = {
    # install -> first run: an install that reports is installed (stage 1)
    "first_run": ("installed", "session_started", "command_executed", "command_success"),
    # first run -> activation: a successful command; active on a later day than the first;
    # a non-default profile (the spec's "thinktool discovery"); active 7+ days after the first
    "activation": ("first_command_success", "second_day", "thinktool_discovery", "week_active"),
    # free -> paid (the spec's pricing_page_viewed has no event: not a stage)
    "upgrade": ("prompt_shown", "link_clicked", "trial_started", "upgrade_completed"),
}
SCALARS: Final = ("sessions", "commands", "errors")
DP_DIMENSIONS: Final = ("command", "profile", "thinktool", "error_category", "feature")
COUNT_GROUPS: Final = (*SCALARS, *DP_DIMENSIONS, "latency_ms")
ROUND: Final = 10**6  # ε is used rounded to 6 decimals, exactly
MAX_EPSILON: Final = Fraction(16)  # the report schema's limit


def exact_epsilon(epsilon: float) -> Fraction:
    """``epsilon`` as the exact rational the samplers use: rounded to 6 decimals, within
    ``[1e-6, 16]``."""
    q = Fraction(round(Fraction(epsilon) * ROUND), ROUND)
    return min(max(q, Fraction(1, ROUND)), MAX_EPSILON)


def part_epsilon(epsilon: Fraction, part: str) -> Fraction:
    """The ε of one part of a report (:data:`SPLIT`)."""
    return epsilon * SPLIT[part]


def count_epsilon(epsilon: Fraction, histogram: bool, bound: int = COUNT_BOUND) -> Fraction:
    """ε' of each number in a count group: noise ``P(z) ∝ exp(-ε'|z|)``."""
    group = epsilon * SPLIT["counts"] / len(COUNT_GROUPS)
    return group / (2 * bound if histogram else bound)


# -- exact samplers ------------------------------------------------------------------------


def system_rng() -> Random:
    """The OS's generator (``secrets``): what reports use outside the tests."""
    return secrets.SystemRandom()


def bernoulli(p: Fraction, rng: Random) -> bool:
    """True with probability ``p`` (0 ≤ p ≤ 1), exactly."""
    return rng.randrange(p.denominator) < p.numerator


def _bernoulli_exp_le1(num: int, den: int, rng: Random) -> bool:
    """True with probability exp(-num/den) for 0 ≤ num/den ≤ 1 (CKS Algorithm 1)."""
    k = 1
    while rng.randrange(den * k) < num:  # Bernoulli(γ/k)
        k += 1
    return k % 2 == 1


def bernoulli_exp(gamma: Fraction, rng: Random) -> bool:
    """True with probability exp(-γ) for rational γ ≥ 0, exactly."""
    num, den = gamma.numerator, gamma.denominator
    while num > den:  # exp(-γ) = exp(-1)^⌊γ⌋ · exp(-(γ - ⌊γ⌋))
        if not _bernoulli_exp_le1(1, 1, rng):
            return False
        num -= den
    return _bernoulli_exp_le1(num, den, rng)


def discrete_laplace(scale: Fraction, rng: Random) -> int:
    """An integer with ``P(z) ∝ exp(-|z| / scale)`` (CKS Algorithm 2; scale = t/s > 0)."""
    t, s = scale.numerator, scale.denominator
    while True:
        u = rng.randrange(t)
        if not bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while _bernoulli_exp_le1(1, 1, rng):
            v += 1
        y = (u + t * v) // s
        negative = rng.randrange(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def noisy_count(value: int, epsilon_prime: Fraction, rng: Random) -> int:
    """``value`` plus discrete Laplace noise of parameter ε' (scale 1/ε')."""
    return value + discrete_laplace(1 / epsilon_prime, rng)


def randomized_response(flag: bool, epsilon: Fraction, rng: Random) -> bool:
    """``flag`` kept with probability e^ε/(1+e^ε), else flipped."""
    return k_randomized_response(int(flag), 2, epsilon, rng) == 1


def k_randomized_response(index: int, k: int, epsilon: Fraction, rng: Random) -> int:
    """``index`` (in 0..k-1) kept with probability e^ε/(e^ε+k-1), else one of the other
    k-1 values uniformly. Exact: propose uniformly, accept the truth always and any
    other value with probability exp(-ε)."""
    while True:
        proposal = rng.randrange(k)
        if proposal == index or bernoulli_exp(epsilon, rng):
            return proposal


# -- estimators (floats are fine here: nothing random) --------------------------------------


class Estimate(NamedTuple):
    """An unbiased estimate and its standard error."""

    value: float
    stderr: float


def krr_probabilities(k: int, epsilon: float) -> tuple[float, float]:
    """(p, q): the probability a k-ary RR report shows its true value, and each other one."""
    e = math.exp(epsilon)
    return e / (e + k - 1), 1 / (e + k - 1)


def krr_count(n: int, observed: int, k: int, epsilon: float) -> Estimate:
    """How many of ``n`` k-ary RR reports truly hold a value that ``observed`` showed.

    ``(observed - n q) / (p - q)``. Its variance is ``(c p(1-p) + (n-c) q(1-q)) / (p-q)²``
    for a true count c; the stated error uses the larger of the two per-report terms for
    all n, an upper bound whatever c is (exact for k = 2, where they are equal).
    """
    p, q = krr_probabilities(k, epsilon)
    value = (observed - n * q) / (p - q)
    stderr = math.sqrt(n * max(p * (1 - p), q * (1 - q))) / (p - q)
    return Estimate(value, stderr)


def rr_sum(n: int, ones: int, epsilon: float) -> Estimate:
    """How many of ``n`` randomized flags were truly set, given ``ones`` arrived set.

    ``(ones - n(1-p)) / (2p - 1)`` with p = e^ε/(1+e^ε); standard error
    ``sqrt(n · e^ε) / (e^ε - 1)`` (exact: each flag's variance is p(1-p) either way).
    """
    return krr_count(n, ones, 2, epsilon)


def laplace_variance(epsilon_prime: float) -> float:
    """Variance of one discrete Laplace noise of parameter ε': 2a/(1-a)², a = e^-ε'."""
    a = math.exp(-epsilon_prime)
    return 2 * a / (1 - a) ** 2


def laplace_sum(total: int, n: int, epsilon_prime: float) -> Estimate:
    """The true (clipped) sum behind ``total``, a sum of ``n`` noisy counts: unbiased as
    it is, with standard error ``sqrt(n · 2a/(1-a)²)``."""
    return Estimate(float(total), math.sqrt(n * laplace_variance(epsilon_prime)))


def ratio(numerator: Estimate, denominator: Estimate) -> Estimate:
    """numerator / denominator with its delta-method standard error (independent parts;
    meaningful when the denominator is several of its standard errors from 0)."""
    r = numerator.value / denominator.value
    d = denominator.value
    return Estimate(r, math.hypot(numerator.stderr / d, r * denominator.stderr / d))


# -- over reports: what the server sums (exact and randomized reports, any ε, mixed) --------

Flag = Literal["first_of_week", "first_of_month"]


def _total(parts: Iterable[Estimate]) -> Estimate:
    """The sum of independent estimates."""
    value = var = 0.0
    for e in parts:
        value += e.value
        var += e.stderr**2
    return Estimate(value, math.sqrt(var))


Mechanism = tuple[Fraction, int] | None  # (ε, count bound) of randomized reports; None: exact


def _by_mechanism(reports: Iterable[CommunityReport]) -> dict[Mechanism, list[CommunityReport]]:
    groups: dict[Mechanism, list[CommunityReport]] = {}
    for r in reports:
        p = r.privacy
        key = (exact_epsilon(p.epsilon), p.count_bound) if p is not None else None
        groups.setdefault(key, []).append(r)
    return groups


def flag_sum(reports: Iterable[CommunityReport], flag: Flag) -> Estimate:
    """How many of ``reports`` truly had ``flag`` set: WAU over a week's reports with
    ``first_of_week``, MAU over a month's with ``first_of_month``."""
    parts = []
    for mech, group in _by_mechanism(reports).items():
        ones = sum(getattr(r, flag) for r in group)
        if mech is None:
            parts.append(Estimate(float(ones), 0.0))
        else:
            parts.append(rr_sum(len(group), ones, float(part_epsilon(mech[0], flag))))
    return _total(parts)


def age_count(reports: Iterable[CommunityReport], age: int) -> Estimate:
    """How many of ``reports`` truly had ``install_age_days == age`` (0: new installs).
    Randomized reports answer only for the ages of :data:`AGE_DOMAIN` other than 31."""
    parts = []
    for mech, group in _by_mechanism(reports).items():
        shown = sum(r.install_age_days == age for r in group)
        if mech is None:
            parts.append(Estimate(float(shown), 0.0))
        elif age not in AGE_DOMAIN or age == AGE_OTHER:
            raise ValueError(f"install age {age} is not kept under differential privacy")
        else:
            eps_age = float(part_epsilon(mech[0], "install_age"))
            parts.append(krr_count(len(group), shown, len(AGE_DOMAIN), eps_age))
    return _total(parts)


def retention(
    on_day: Iterable[CommunityReport], base: Iterable[CommunityReport], k: int
) -> Estimate:
    """Dk retention: reports of day D with install age k over the new installs among the
    reports of day D - k (either side may pool several days)."""
    return ratio(age_count(on_day, k), age_count(base, 0))


def count_sum(reports: Iterable[CommunityReport], number: Callable[[CommunityReport], int],
              histogram: bool) -> Estimate:  # fmt: skip
    """The sum of one count over ``reports`` (``number`` picks it, e.g. the sessions, or
    one key of a dimension; ``histogram`` for a dimension's key or a latency bucket).
    Randomized reports estimate the sum of the *clipped* counts (COUNT_BOUND)."""
    parts = []
    for mech, group in _by_mechanism(reports).items():
        total = sum(number(r) for r in group)
        if mech is None:
            parts.append(Estimate(float(total), 0.0))
        else:
            eps_prime = float(count_epsilon(mech[0], histogram, mech[1]))
            parts.append(laplace_sum(total, len(group), eps_prime))
    return _total(parts)
