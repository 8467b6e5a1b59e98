"""Oracles for the Chambers–Mallows–Stuck SαS sampler (compression/bounds/stable.py).

The characteristic function of a standard SαS variable is exp(−|t|^α) (CMS 1976). Since |cos| ≤ 1,
the empirical mean of cos(tX) over n draws has standard error ≤ 1/sqrt(n): 5/sqrt(n) is a 5-SE band.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netshrink.compression.bounds.stable import sample_sas
from netshrink.compression.errors import InvalidSpecError

N = 200_000


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5, 1.75, 1.9, 2.0])
def test_characteristic_function(alpha: float) -> None:
    X = sample_sas(alpha, N, rng=np.random.default_rng(1))
    tol = 5.0 / math.sqrt(N)  # 5 standard errors; |cos| ≤ 1 so its variance is at most 1
    for t in (0.25, 0.5, 1.0, 2.0):
        empirical = float(np.mean(np.cos(t * X)))
        assert empirical == pytest.approx(math.exp(-(t**alpha)), abs=tol), (alpha, t)
        assert abs(float(np.mean(np.sin(t * X)))) < tol  # symmetric: the imaginary part vanishes


def test_alpha_two_is_gaussian_with_variance_two() -> None:
    X = sample_sas(2.0, N, rng=np.random.default_rng(2))
    # Var(X²) = 2σ⁴ = 8 for σ² = 2, so the sample variance has standard error sqrt(8/N).
    assert float(np.var(X)) == pytest.approx(2.0, abs=5 * math.sqrt(8.0 / N))


def test_alpha_one_is_cauchy() -> None:
    X = sample_sas(1.0, N, rng=np.random.default_rng(3))
    # The median of |X| for a standard Cauchy is tan(π/4) = 1; the sample median's SE is 1/(2 f(1) sqrt N)
    # with f the density of |X| at 1, f(1) = 2/(π·2) = 1/π.
    assert float(np.median(np.abs(X))) == pytest.approx(1.0, abs=5 * math.pi / (2 * math.sqrt(N)))


def test_scale_and_reproducibility() -> None:
    a = sample_sas(1.5, 1000, rng=np.random.default_rng(7), scale=0.003)
    b = sample_sas(1.5, 1000, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, 0.003 * b)
    np.testing.assert_array_equal(b, sample_sas(1.5, 1000, rng=np.random.default_rng(7)))
    assert sample_sas(1.75, (3, 4), rng=np.random.default_rng(0)).shape == (3, 4)


@pytest.mark.parametrize("alpha", [0.0, -1.0, 2.01, float("nan")])
def test_rejects_alpha_outside_0_2(alpha: float) -> None:
    with pytest.raises(InvalidSpecError) as info:
        sample_sas(alpha, 10, rng=np.random.default_rng(0))
    assert info.value.field == "alpha"
    assert str(info.value) == f"the stability index alpha must lie in (0, 2], got {float(alpha)}"


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_rejects_a_scale_that_is_not_positive(scale: float) -> None:
    with pytest.raises(InvalidSpecError) as info:
        sample_sas(1.5, 10, rng=np.random.default_rng(0), scale=scale)
    assert info.value.field == "scale"
    assert str(info.value) == f"the scale must be positive, got {scale}"
