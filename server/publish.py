"""Central differential privacy for what the public transparency report releases.

The maintainers' internal reports show debiased sums with their errors; what is
published to everyone gets, in addition, discrete Laplace noise from OpenDP
(``make_laplace`` on an integer domain: the geometric mechanism, sampled exactly by its
Rust core). Each family of released numbers (a vector, e.g. MAU per month) gets an
equal share of ``epsilon`` and noise scaled to its L1 sensitivity: how much one install
can change the whole vector (MAU per month: one per month it was active).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from rkd.client import dp

PUBLIC_EPSILON: Final = 1.0  # per transparency report (one a year), over all families


class Published(NamedTuple):
    """A released integer and one standard error of the noise added to it."""

    value: int
    noise_stderr: float


def _laplace(scale: float) -> Any:
    import opendp.prelude as odp  # imported here: only publishing needs it

    odp.enable_features("contrib")  # OpenDP gates mechanisms not yet formally vetted
    return odp.m.make_laplace(odp.atom_domain(T=int), odp.absolute_distance(T=int), scale=scale)


def noise_stderr(sensitivity: float, epsilon: float) -> float:
    """Standard deviation of discrete Laplace noise of scale sensitivity/ε."""
    return math.sqrt(dp.laplace_variance(epsilon / sensitivity))


def publish(
    values: Mapping[str, float], sensitivity: float, epsilon: float
) -> dict[str, Published]:
    """``values`` (one family) with discrete Laplace noise of scale sensitivity/ε each:
    ε-DP for the whole family when one install changes it by at most ``sensitivity`` in
    L1. Values are rounded to integers first (they are counts or debiased counts)."""
    if sensitivity <= 0 or epsilon <= 0:
        raise ValueError("sensitivity and epsilon must be positive")
    mechanism = _laplace(sensitivity / epsilon)
    err = noise_stderr(sensitivity, epsilon)
    return {k: Published(int(mechanism(round(v))), err) for k, v in values.items()}


# Dated changes to what rkd collects or keeps: the "privacy improvements made" of §10.2.
# Add a line with every release that changes what leaves a machine or what the server keeps.
PRIVACY_CHANGES: Final[tuple[tuple[str, str], ...]] = (
    ("2026-12", "Community reports: one anonymous report per install and active day, with no id of any kind; optional local differential privacy (randomized response, discrete Laplace)."),
    ("2026-12", "The server stores no IP address and no key id with any event or report."),
    ("2026-12", "Published statistics carry central differential-privacy noise (OpenDP); cells of fewer than 10 contributors are never shown."),
)  # fmt: skip
