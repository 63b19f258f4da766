"""The exact DP samplers match their distributions (closed form and OpenDP's samplers), and
the estimators are unbiased with the standard errors they state.

Our samplers run on seeded generators, so those checks are deterministic; OpenDP's draw
from the OS, so comparisons with them use a chi-square bound at p = 1e-6.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import opendp.prelude as odp
import pytest
from rkd.client import dp
from rkd.client.report import CommunityReport
from rkd.client.vocabulary import reasonkit_vocabulary
from rkd.daemon.reports import privatize

odp.enable_features("contrib")
N = 20_000
Z_CRIT = 4.753  # the normal quantile of 1 - 1e-6


def chi2_critical(df: int, z: float = Z_CRIT) -> float:
    """Upper critical value of chi-square with ``df`` degrees of freedom (Wilson–Hilferty)."""
    h = 2 / (9 * df)
    return float(df * (1 - h + z * math.sqrt(h)) ** 3)


def binned(samples: list[int], lo: int, hi: int) -> Counter[int]:
    """Counts per value, with values below ``lo`` / above ``hi`` pooled at the ends."""
    return Counter(min(max(x, lo), hi) for x in samples)


def chi2_vs_pmf(
    samples: list[int], pmf: Callable[[int], float], lo: int, hi: int
) -> tuple[float, int]:
    """Chi-square statistic of ``samples`` against ``pmf`` over [lo, hi] (tails pooled)."""
    got = binned(samples, lo, hi)
    probs = {x: pmf(x) for x in range(lo + 1, hi)}
    probs[lo] = 1 - sum(probs.values()) - sum(pmf(x) for x in range(hi, hi + 400))
    probs[hi] = sum(pmf(x) for x in range(hi, hi + 400))
    if lo < 0:  # symmetric: the low tail is the high tail mirrored
        probs[lo] = probs[hi]
    stat = sum((got[x] - len(samples) * p) ** 2 / (len(samples) * p) for x, p in probs.items())
    return stat, len(probs) - 1


def chi2_two_sample(a: list[int], b: list[int], lo: int, hi: int) -> tuple[float, int]:
    """Chi-square statistic for "same distribution" of two equal-size samples."""
    ca, cb = binned(a, lo, hi), binned(b, lo, hi)
    keys = [k for k in range(lo, hi + 1) if ca[k] + cb[k] > 0]
    return sum((ca[k] - cb[k]) ** 2 / (ca[k] + cb[k]) for k in keys), len(keys) - 1


def dlaplace_pmf(scale: float) -> Callable[[int], float]:
    a = math.exp(-1 / scale)
    return lambda x: (1 - a) / (1 + a) * a ** abs(x)


class NoFloats(random.Random):
    """A generator that fails if anything asks it for a float."""

    def random(self) -> float:
        raise AssertionError("a sampler asked for a float")

    def getrandbits(self, k: int) -> int:  # defined here, randrange keeps using it
        return super().getrandbits(k)


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(3, 2), Fraction(7)])
def test_discrete_laplace_matches_its_pmf_and_opendp(scale: Fraction) -> None:
    """Our discrete Laplace fits exp(-|x|/scale) and OpenDP's sampler at the same scale."""
    rng = NoFloats(int(scale * 10))
    ours = [dp.discrete_laplace(scale, rng) for _ in range(N)]
    bound = max(4, int(4 * scale))
    stat, df = chi2_vs_pmf(ours, dlaplace_pmf(float(scale)), -bound, bound)
    assert stat < chi2_critical(df), (stat, df)
    meas = odp.m.make_laplace(
        odp.vector_domain(odp.atom_domain(T=int)), odp.l1_distance(T=int), scale=float(scale)
    )
    theirs: list[int] = meas([0] * N)
    stat, df = chi2_two_sample(ours, theirs, -bound, bound)
    assert stat < chi2_critical(df), (stat, df)
    stat, df = chi2_vs_pmf(theirs, dlaplace_pmf(float(scale)), -bound, bound)
    assert stat < chi2_critical(df), (stat, df)  # the reference agrees with the closed form


def test_a_wrong_scale_is_caught() -> None:
    """The chi-square check can fail: a sampler at 1.2x the scale does not pass as 1x."""
    rng = random.Random(5)
    wrong = [dp.discrete_laplace(Fraction(18, 10), rng) for _ in range(N)]
    stat, df = chi2_vs_pmf(wrong, dlaplace_pmf(1.5), -6, 6)
    assert stat > chi2_critical(df)


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2)])
def test_bernoulli_exp_has_probability_exp_minus_gamma(gamma: Fraction) -> None:
    rng = NoFloats(3)
    hits = sum(dp.bernoulli_exp(gamma, rng) for _ in range(N))
    p = math.exp(-gamma)
    assert abs(hits - N * p) <= 5 * math.sqrt(N * p * (1 - p)) + 1e-9


@pytest.mark.parametrize("epsilon", [Fraction(1, 5), Fraction(1), Fraction(3)])
def test_randomized_response_matches_opendp(epsilon: Fraction) -> None:
    """A flag is kept with probability e^ε/(1+e^ε), as by OpenDP's randomized response."""
    rng = NoFloats(11)
    p = math.exp(epsilon) / (1 + math.exp(epsilon))
    ours = sum(dp.randomized_response(True, epsilon, rng) for _ in range(N))
    ours_false = sum(not dp.randomized_response(False, epsilon, rng) for _ in range(N))
    sd = math.sqrt(N * p * (1 - p))
    assert abs(ours - N * p) <= 5 * sd
    assert abs(ours_false - N * p) <= 5 * sd
    meas = odp.m.make_randomized_response_bool(prob=p)
    theirs = sum(meas(True) for _ in range(2000)) * N / 2000
    assert abs(ours - theirs) <= Z_CRIT * math.sqrt(2) * sd * math.sqrt(N / 2000)


@pytest.mark.parametrize("k", [2, 5, 13])
def test_k_randomized_response_matches_its_pmf(k: int) -> None:
    """The true value shows with probability e^ε/(e^ε+k-1), each other one 1/(e^ε+k-1)."""
    rng = NoFloats(k)
    eps = Fraction(1, 2)
    samples = [dp.k_randomized_response(1, k, eps, rng) for _ in range(N)]
    p, q = dp.krr_probabilities(k, 0.5)
    got = Counter(samples)
    assert set(got) <= set(range(k))
    stat = sum(
        (got[x] - N * (p if x == 1 else q)) ** 2 / (N * (p if x == 1 else q)) for x in range(k)
    )
    assert stat < chi2_critical(k - 1), stat


def test_exact_epsilon_rounds_to_six_decimals_within_the_schema() -> None:
    assert Fraction(3, 10) == dp.exact_epsilon(0.3)
    assert Fraction(1) == dp.exact_epsilon(1.0)
    assert Fraction(16) == dp.exact_epsilon(50.0)
    assert Fraction(1, 10**6) == dp.exact_epsilon(1e-9)


def test_the_split_adds_up_to_the_whole_budget() -> None:
    eps = Fraction(7, 10)
    assert eps == sum(dp.part_epsilon(eps, part) for part in dp.SPLIT)
    groups = len(dp.COUNT_GROUPS)
    assert eps / 10 / groups / dp.COUNT_BOUND == dp.count_epsilon(eps, histogram=False)
    assert eps / 10 / groups / (2 * dp.COUNT_BOUND) == dp.count_epsilon(eps, histogram=True)


def z_scores(trials: list[tuple[dp.Estimate, float]]) -> list[float]:
    return [(e.value - truth) / e.stderr for e, truth in trials]


def calibrated(z: list[float], min_var: float = 0.75, max_var: float = 1.25) -> None:
    """Mean of the z-scores near 0 (unbiased), variance near 1 (or below, for an error
    stated as an upper bound): the stated errors are honest."""
    mean = sum(z) / len(z)
    var = sum((x - mean) ** 2 for x in z) / (len(z) - 1)
    assert abs(mean) < 4 / math.sqrt(len(z)), mean
    assert min_var < var < max_var, var
    assert max(abs(x) for x in z) < 5


def test_rr_sum_is_unbiased_with_its_stated_error() -> None:
    """Debiased sums of randomized flags: z-scores of 300 trials are standard normal."""
    rng = random.Random(21)
    eps = Fraction(1, 2)
    trials = []
    for _ in range(300):
        n, true = 400, rng.randrange(400)
        flags = [i < true for i in range(n)]
        ones = sum(dp.randomized_response(f, eps, rng) for f in flags)
        trials.append((dp.rr_sum(n, ones, 0.5), float(true)))
    calibrated(z_scores(trials))


def test_krr_count_is_unbiased_and_its_error_an_upper_bound() -> None:
    rng = random.Random(22)
    eps = Fraction(1)
    trials = []
    for _ in range(300):
        values = [rng.choice((0, 0, 0, 1, 4)) for _ in range(300)]
        shown = [dp.k_randomized_response(v, 5, eps, rng) for v in values]
        trials.append((dp.krr_count(300, shown.count(4), 5, 1.0), float(values.count(4))))
    calibrated(z_scores(trials), min_var=0.3, max_var=1.05)


def test_laplace_sum_is_unbiased_with_its_stated_error() -> None:
    rng = random.Random(23)
    eps_prime = Fraction(1, 4)
    trials = []
    for _ in range(300):
        counts = [rng.randrange(10) for _ in range(200)]
        total = sum(dp.noisy_count(c, eps_prime, rng) for c in counts)
        trials.append((dp.laplace_sum(total, 200, 0.25), float(sum(counts))))
    calibrated(z_scores(trials))


def test_ratio_error_by_the_delta_method() -> None:
    r = dp.ratio(dp.Estimate(30.0, 3.0), dp.Estimate(100.0, 4.0))
    assert 0.3 == pytest.approx(r.value)
    assert math.sqrt(0.03**2 + (0.3 * 0.04) ** 2) == pytest.approx(r.stderr)


def exact_report(rng: random.Random) -> CommunityReport:
    age = rng.choice((0, 1, 7, 7, 12, 31))
    return CommunityReport(
        day=dt.date(2026, 3, 9), product="reasonkit-core", version="1.0", os="linux",
        arch="x86_64", cohort_week="2026-W10", install_age_days=age, new_install=age == 0,
        first_of_week=rng.random() < 0.3, first_of_month=rng.random() < 0.1,
        sessions=rng.randrange(4), commands=rng.randrange(12), errors=0,
        counts={"command": {"think": rng.randrange(3)}}, latency_ms=[0] * 11,
    )  # fmt: skip


def test_report_estimators_mix_exact_and_randomized_reports_of_any_epsilon() -> None:
    """Sums over exact reports and reports randomized at ε = 1 and ε = 2 land within four
    of their stated errors; exact reports alone give exact answers."""
    rng = random.Random(31)
    vocab = reasonkit_vocabulary()
    truth = [exact_report(rng) for _ in range(3000)]
    sent = [
        r if i % 3 == 0 else privatize(r, vocab, Fraction(i % 3), rng) for i, r in enumerate(truth)
    ]
    checks = {
        "WAU": (dp.flag_sum(sent, "first_of_week"), sum(r.first_of_week for r in truth)),
        "MAU": (dp.flag_sum(sent, "first_of_month"), sum(r.first_of_month for r in truth)),
        "age 7": (dp.age_count(sent, 7), sum(r.install_age_days == 7 for r in truth)),
        "new": (dp.age_count(sent, 0), sum(r.new_install for r in truth)),
        "sessions": (dp.count_sum(sent, lambda r: r.sessions, histogram=False),
                     sum(r.sessions for r in truth)),
        "commands (clipped)": (dp.count_sum(sent, lambda r: r.commands, histogram=False),
                               sum(min(r.commands, dp.COUNT_BOUND) for r in truth)),
        "think": (dp.count_sum(sent, lambda r: r.counts["command"]["think"], histogram=True),
                  sum(r.counts["command"]["think"] for r in truth)),
    }  # fmt: skip
    for name, (est, true) in checks.items():
        assert abs(est.value - true) < 4 * est.stderr, (name, est, true)
    exact_only = truth[:500]
    assert dp.Estimate(sum(r.first_of_week for r in exact_only), 0.0) == dp.flag_sum(
        exact_only, "first_of_week"
    )
    assert dp.Estimate(sum(r.install_age_days == 12 for r in exact_only), 0.0) == dp.age_count(
        exact_only, 12
    )
    with pytest.raises(ValueError, match="install age 12 is not kept"):
        dp.age_count(sent, 12)
