"""Oracles for the ℓ2 compressibility curves and q(ε) (diagnostics/compressibility.py, docs/method.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netshrink.compression.bounds.stable import sample_sas
from netshrink.compression.diagnostics.compressibility import (
    compressibility_curve,
    gaussian_magnitude_q,
    gaussian_q,
    prunable_fraction,
    sorted_energy,
    square_sum,
)

KAPPA = np.linspace(0.0, 1.0, 101)


def naive_prunable_fraction(values: np.ndarray, eps: float) -> float:
    """The definition, one candidate at a time: q = max{1 − k/n : e(k/n) ≤ ε}, e = sqrt(tail/total).

    The squares are summed in ascending order, left to right, like the cumulative sum, so the two
    implementations must agree exactly.
    """
    sq = sorted(float(v) * float(v) for v in np.abs(values).ravel())  # ascending
    n = len(sq)
    total = 0.0
    for s in sq:
        total += s
    best = 0.0
    for kept in range(n, -1, -1):  # keep the `kept` largest, prune the n − kept smallest
        pruned = 0.0
        for s in sq[: n - kept]:
            pruned += s
        if pruned <= eps * eps * total:
            best = max(best, (n - kept) / n)  # 1 − κ with κ = kept/n, as an exact ratio
    return best


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_q_equals_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    values = sample_sas(1.6, n, rng=rng) if seed % 2 else rng.standard_normal(n)
    if seed == 4:
        values[: n // 2] = 0.0  # exact zeros and ties
    for eps in (0.0, 0.05, 0.1, math.sqrt(0.1), 0.5, 1.0):
        assert prunable_fraction(values, eps) == pytest.approx(naive_prunable_fraction(values, eps), abs=0)


def test_curves_are_monotone_from_one_to_zero() -> None:
    rng = np.random.default_rng(20)
    W = sample_sas(1.75, (300, 80), rng=rng)  # (out, in)
    for values in (np.abs(W).ravel(), np.linalg.norm(W, axis=1), np.linalg.svd(W, compute_uv=False)):
        e = compressibility_curve(values, KAPPA)
        assert e[0] == 1.0 and e[-1] == 0.0
        assert np.all(np.diff(e) <= 0.0)
        assert np.all((e >= 0.0) & (e <= 1.0))


def test_q_grows_with_eps_and_matches_the_curve() -> None:
    w = np.random.default_rng(21).standard_normal(5000)
    eps_grid = np.linspace(0.0, 1.0, 41)
    q = [prunable_fraction(w, float(eps)) for eps in eps_grid]
    assert np.all(np.diff(q) >= 0.0) and q[0] == 0.0 and q[-1] == 1.0
    # q(ε) is the largest pruned fraction whose curve value is within budget, and one more breaks it.
    for eps, qe in zip(eps_grid[1:-1], q[1:-1], strict=True):
        kept = round((1.0 - qe) * w.size)
        assert compressibility_curve(w, np.array([kept / w.size]))[0] <= eps
        assert compressibility_curve(w, np.array([(kept - 1) / w.size]))[0] > eps


def _gaussian_q_standard_error(eps: float, n: int) -> float:
    """Delta-method SE of the empirical magnitude q̂(ε) for n i.i.d. N(0, 1) entries (derived).

    With Y = Z², c = t² the pruning threshold and A(q) = ∫₀^q G⁻¹ the pruned energy, the influence
    function of the L-statistic A is cq − A − (c − Y)₊; with B = E Y = 1, q̂ solves A/B = ε², and
    dA/dq = c, so Var q̂ ≈ Var[(c − Y)₊ + ε²Y] / (c² n). The variance is integrated on a fine grid.
    """
    q = gaussian_magnitude_q(eps)
    t = math.sqrt(2.0) * _erfinv(q)
    c = t * t
    z = np.linspace(-12.0, 12.0, 400_001)
    dz = z[1] - z[0]
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    h = np.maximum(c - z * z, 0.0) + eps * eps * z * z
    mean = float(np.sum(h * pdf) * dz)
    var = float(np.sum((h - mean) ** 2 * pdf) * dz)
    return math.sqrt(var / n) / c


def _erfinv(y: float) -> float:
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return lo


def test_gaussian_reference_closed_form_matches_the_spec() -> None:
    # docs/method.md §4 quotes 0.265 and 0.555 to three decimals: ±0.0005 is the rounding.
    assert gaussian_magnitude_q(0.1) == pytest.approx(0.265, abs=5e-4)
    assert gaussian_magnitude_q(math.sqrt(0.1)) == pytest.approx(0.555, abs=5e-4)


@pytest.mark.parametrize("eps", [0.1, math.sqrt(0.1)])
def test_gaussian_reference_matches_simulation(eps: float) -> None:
    n = 10**6
    w = np.random.default_rng(22).standard_normal(n)
    se = _gaussian_q_standard_error(eps, n)
    assert 1e-4 < se < 5e-3  # the derived SE is of the expected order 1/sqrt(n)
    # 5 SE for the sampling noise, plus 1/n for the grid of q.
    assert prunable_fraction(w, eps) == pytest.approx(gaussian_magnitude_q(eps), abs=5 * se + 1.0 / n)


def test_gaussian_reference_for_a_shape() -> None:
    ref = gaussian_q((512, 256))
    assert ref["magnitude"]["eps_0.1"] == pytest.approx(0.2653, abs=1e-4)
    for kind in ("node", "spectral"):
        assert 0.0 <= ref[kind]["eps_0.1"] <= ref[kind]["sq_eps_0.1"] <= 1.0
    assert ref == gaussian_q((512, 256))  # fixed seed: deterministic
    # Gaussian row norms concentrate (χ with 256 dof), so few whole rows can go within 10%.
    assert ref["node"]["eps_0.1"] < ref["magnitude"]["eps_0.1"]


@pytest.mark.parametrize("alpha", [1.5, 1.75])
def test_heavier_tails_are_more_compressible_than_gaussian(alpha: float) -> None:
    rng = np.random.default_rng(23)
    shape = (400, 250)
    heavy = sample_sas(alpha, shape, rng=rng)
    gauss = rng.standard_normal(shape)
    for eps in (0.1, math.sqrt(0.1)):
        assert prunable_fraction(heavy, eps) > prunable_fraction(gauss, eps) + 0.1
        heavy_nodes = np.linalg.norm(heavy, axis=1)
        assert prunable_fraction(heavy_nodes, eps) > prunable_fraction(np.linalg.norm(gauss, axis=1), eps)


def test_all_zero_and_empty_inputs() -> None:
    assert prunable_fraction(np.zeros(10), 0.1) == 1.0
    e = compressibility_curve(np.zeros(10), np.array([0.0, 0.5, 1.0]))
    assert e.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        prunable_fraction(np.zeros(0), 0.1)


def _full_cumsum(values: np.ndarray) -> np.ndarray:
    """The n + 1 float64 array ``sorted_energy`` used to build (the oracle for ``SortedEnergy``)."""
    v = np.asarray(values)
    sq = np.square(v.astype(np.float32 if v.dtype == np.float32 else np.float64).ravel())
    sq.sort()
    out = np.zeros(sq.size + 1)
    np.cumsum(sq, dtype=np.float64, out=out[1:])
    return out


@pytest.mark.parametrize("n", [1, 7, 4095, 4096, 4097, 3 * 4096 * 256 + 17])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sorted_energy_checkpoints_give_the_full_cumulative_sum_bit_for_bit(n: int, dtype: type) -> None:
    """Issue 10 (memory): S_j is recomputed from checkpoints, and must equal the whole array's entry
    exactly (same float64 additions, same order); ties and zeros included."""
    rng = np.random.default_rng(n)
    x = rng.standard_t(2, size=n).astype(dtype)
    x[rng.random(n) < 0.2] = 0.0  # runs of equal values
    x[rng.random(n) < 0.1] = 1.5
    ref = _full_cumsum(x)
    S = sorted_energy(x)
    assert S.size == ref.size and S.total == ref[-1]
    idx = np.unique(np.r_[0, 1, rng.integers(0, ref.size, 200), ref.size - 1])
    assert np.array_equal(np.asarray(S[idx]), ref[idx])
    assert S[-1] == ref[-1]
    probes = [0.0, ref[-1], *ref[rng.integers(0, ref.size, 50)], *rng.uniform(0, ref[-1], 50)]
    for v in probes:
        assert S.searchsorted_right(float(v)) == int(np.searchsorted(ref, v, side="right"))


@pytest.mark.parametrize("big", [2e19, 1e27, float(np.finfo(np.float32).max)])
def test_float32_values_past_the_square_range_are_measured_in_float64(big: float) -> None:
    """A finite float32 weight above ~1.8e19 (a heavy-tailed noise arm that grew, or an upload) has no
    float32 square: squared in float32 it was inf (numpy's overflow warning, an error under pytest),
    and q(ε) came out 1.0 for any ε. Squared in float64 every S_j is the float64 oracle's, exactly."""
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)  # (5000,)
    x[17] = np.float32(big)
    ref = np.zeros(x.size + 1)
    np.cumsum(np.sort(np.square(x.astype(np.float64))), out=ref[1:])  # (n + 1,) the float64 oracle
    S = sorted_energy(x)
    assert math.isfinite(S.total) and S.total == ref[-1]
    assert np.array_equal(np.asarray(S[np.arange(ref.size)]), ref)
    assert prunable_fraction(x, 0.1) == (x.size - 1) / x.size  # all but the one huge entry can go


def test_float32_values_inside_the_square_range_keep_float32_squares() -> None:
    """Half the memory (issue 10): the float64 squares are only for arrays that need them."""
    x = np.float32([1.0, -3.0, 1.8e19])  # (3,) 1.8e19² < float32 max
    assert sorted_energy(x).sq.dtype == np.float32
    assert sorted_energy(np.float32([1.0, 1.9e19])).sq.dtype == np.float64


@pytest.mark.parametrize("shape", [(4096, 4096), (3000, 777), (10, 1_228_803), (1, 5)])
def test_square_sum_is_numpys_float64_sum_without_the_copy(shape: tuple[int, int]) -> None:
    X = np.random.default_rng(0).standard_t(3, size=shape).astype(np.float32)
    assert square_sum(X) == float(np.square(X, dtype=np.float64).sum())
