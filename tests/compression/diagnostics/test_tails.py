"""Oracles for the MMO tail-index estimator (compression/diagnostics/tails.py, docs/method.md §4 and §7).

Synthetic SαS data from the CMS sampler: the univariate α̂ must recover α within ±0.05 on 10⁶
entries, the multivariate α̂ within ±0.1 on 10⁴ rows. Rows of width 64 are used: the estimator is
exact in expectation for any width (a sum of K₁ i.i.d. SαS rows has the law of K₁^{1/α} times one),
and width 64 (6.4·10⁵ entries) is both fast and well inside the tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netshrink.compression.bounds.stable import sample_sas
from netshrink.compression.diagnostics.tails import block_sizes, estimate_alpha, estimate_alpha_univariate

ALPHAS = [1.5, 1.75, 1.9, 2.0]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_univariate_recovers_alpha_on_1e6_entries(alpha: float) -> None:
    x = sample_sas(alpha, 10**6, rng=np.random.default_rng(11))
    est = estimate_alpha_univariate(x)
    assert est.alpha is not None
    assert abs(est.alpha - alpha) <= 0.05
    assert est.alpha <= 2.0


@pytest.mark.parametrize("alpha", ALPHAS)
def test_multivariate_recovers_alpha_on_1e4_rows(alpha: float) -> None:
    X = sample_sas(alpha, (10**4, 64), rng=np.random.default_rng(12))
    est = estimate_alpha(X)
    assert est.alpha is not None
    assert abs(est.alpha - alpha) <= 0.1
    assert set(est.per_block) == {2, 5, 10, 20, 50, 100, 500, 1000}  # ⌊√10⁴⌋ = 100 is already listed
    lo, hi = est.spread or (math.nan, math.nan)
    assert lo <= est.alpha <= hi <= 2.0


def test_heavier_tails_give_lower_alpha() -> None:
    rng = np.random.default_rng(13)
    estimates = [estimate_alpha(sample_sas(a, (4000, 32), rng=rng)).alpha for a in (1.2, 1.6, 2.0)]
    assert estimates[0] is not None and estimates[1] is not None and estimates[2] is not None
    assert estimates[0] < estimates[1] < estimates[2]


def test_invariant_to_scale_and_shift_deterministic_in_seed() -> None:
    X = sample_sas(1.7, (2000, 16), rng=np.random.default_rng(14))
    base = estimate_alpha(X)
    assert base.alpha is not None
    assert estimate_alpha(X).alpha == base.alpha  # the permutations come from a fixed seed
    # A scale multiplies every norm: ln‖Y‖ − ln‖X‖ is unchanged. A column shift is removed by the median.
    assert estimate_alpha(3.5 * X).alpha == pytest.approx(base.alpha, abs=1e-9)
    assert estimate_alpha(X + np.arange(16.0)).alpha == pytest.approx(base.alpha, abs=1e-9)


def test_block_sizes_follow_the_spec() -> None:
    assert block_sizes(3) == []
    assert block_sizes(4) == [2]
    assert block_sizes(64) == [2, 5, 8, 10, 20]  # ⌊√64⌋ = 8; 50 > 64/2
    assert block_sizes(10**6) == [2, 5, 10, 20, 50, 100, 500, 1000]  # ⌊√10⁶⌋ = 1000 is already listed


def test_too_few_rows_gives_no_estimate() -> None:
    est = estimate_alpha(np.ones((3, 5)))
    assert est.alpha is None and est.per_block == {} and est.spread is None


def test_constant_rows_cap_at_two() -> None:
    # All rows equal: after median centring every norm is 0, no growth at all -> 1/α̂ = 0 -> capped at 2.
    assert estimate_alpha(np.ones((100, 4))).alpha == 2.0
