"""How tight the σ certificates of ``bounds/certificate.py`` are, not only that they hold: each value
against numpy's exact SVD and the documented formula written out by hand (docs/method.md §3, σ_ℓ).

The KW certificate is θ(1 + 1e-9)/√(1 − ε) + (max(m, n) + 3)·u·‖W‖_F with ε = (ln(1.648√n/η)/(2k − 1))²,
n = min(m, n) and k = steps − 1 (Kuczyński & Woźniakowski 1992, Thm 4.2). On a float64 matrix that
Lanczos resolves in its 64 steps θ is σ to rounding (1e-15 here), so the certificate is that formula at
θ = σ to 1e-12; on a float32 matrix the products round, and θ moves by far less than the additive
margin that covers it (measured: 1e-8 of σ against a margin of 1e-5 of σ).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netshrink.compression.bounds.certificate import conv_sigma, dense_sigma, kw_epsilon, lanczos_top
from netshrink.compression.graph.network import ConvGeometry

torch.set_num_threads(1)


def _sigma(W: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(W, dtype=np.float64), 2))


def _kw(sigma: float, n: int, steps: int, eta: float = 1e-4) -> float:
    """θ(1 + 1e-9)/√(1 − ε) at θ = σ, Thm 4.2's ε for k = steps − 1 written out."""
    eps = (math.log(1.648 * math.sqrt(n) / eta) / (2 * (steps - 1) - 1)) ** 2
    return sigma * (1 + 1e-9) / math.sqrt(1 - eps)


def test_the_kw_certificate_of_a_float64_matrix_by_hand() -> None:
    """200×150 and its transpose: Lanczos runs on the side with the smaller Gram matrix (n = 150 both
    ways), 64 steps, and the certificate is the formula at θ = σ plus (200 + 3)·2⁻⁵³·‖W‖_F."""
    W = np.random.default_rng(7).standard_normal((200, 150))
    sigma, fro = _sigma(W), float(np.linalg.norm(W))
    want = _kw(sigma, 150, 64) + 203 * 2.0**-53 * fro
    for M in (W, W.T.copy()):
        b = dense_sigma(M, exact_flops=0)
        assert (b.method, b.holds, b.steps) == ("lanczos_kw", "probabilistic", 64)
        assert b.failure_probability == 1e-4
        assert b.estimate == pytest.approx(sigma, rel=1e-12)
        assert b.value == pytest.approx(want, rel=1e-12)
        assert b.value >= sigma


def test_the_rounding_margin_of_float32_products_is_added() -> None:
    """The same matrix in float32: the products run in float32 and the certificate adds
    (200 + 3)·2⁻²⁴·‖W‖_F (1e-5 of σ here), which the float32 rounding of θ (1e-8 of σ) cannot hide."""
    W = np.random.default_rng(7).standard_normal((200, 150)).astype(np.float32)
    sigma, fro = _sigma(W), float(np.linalg.norm(W.astype(np.float64)))
    margin = 203 * 2.0**-24 * fro
    assert margin > 1e-5 * sigma
    b = dense_sigma(W, exact_flops=0)
    assert b.method == "lanczos_kw"
    assert abs(b.estimate - sigma) < 0.01 * margin
    assert _kw(sigma, 150, 64) + 0.5 * margin < b.value < _kw(sigma, 150, 64) + 1.5 * margin


def test_other_dtypes_are_widened_to_float64() -> None:
    """A float16 or integer weight runs as float64: the float64 certificate of the same numbers."""
    W = np.random.default_rng(8).standard_normal((60, 40)) * 4
    for M in (W.astype(np.float16), np.round(W).astype(np.int32)):
        wide = M.astype(np.float64)
        want = _kw(_sigma(wide), 40, 24) + 63 * 2.0**-53 * float(np.linalg.norm(wide))
        b = dense_sigma(M, exact_flops=0, steps=24)
        assert b.method == "lanczos_kw" and b.value == pytest.approx(want, rel=1e-12)


def test_the_exact_svd_threshold_by_hand() -> None:
    """A full SVD when m·n·min(m, n) ≤ exact_flops: 40·30·30 = 36,000 (a 40×30 or a 30×40 matrix);
    the SVD is float64 also for a float32 weight (numpy's σ of the widened weight, to 1e-12)."""
    W = np.random.default_rng(9).standard_normal((40, 30)).astype(np.float32)
    for M in (W, W.T.copy()):
        exact = dense_sigma(M, exact_flops=36_000)
        assert (exact.method, exact.holds) == ("svd", "exact")
        assert exact.value == pytest.approx(_sigma(M), rel=1e-12)
        assert dense_sigma(M, exact_flops=35_999).holds != "exact"


def test_the_deterministic_norms_are_inflated_by_exactly_1e_5() -> None:
    """A diagonal matrix: Schur's √(‖W‖₁‖W‖_∞) = max|d| = σ, below ‖W‖_F and below any KW certificate
    (ε > 0); a rank-one matrix: ‖W‖_F = σ. Each is reported as σ·(1 + 1e-5)."""
    D = np.diag(np.linspace(1.0, 3.0, 40))
    b = dense_sigma(D, exact_flops=0)
    assert (b.method, b.holds) == ("schur", "deterministic")
    assert b.value == pytest.approx(3.0 * (1 + 1e-5), rel=1e-12)
    g = np.random.default_rng(1)
    R = np.outer(g.standard_normal(300), g.standard_normal(200))
    r = dense_sigma(R, exact_flops=0, steps=10)
    assert (r.method, r.holds) == ("frobenius", "deterministic")
    assert r.value == pytest.approx(_sigma(R) * (1 + 1e-5), rel=1e-12)


def test_kw_epsilon_at_one_step_and_one_dimension() -> None:
    """k = 1 and n = 1 (√n = 1): ε = ln(1.648/η)²; η = 1 gives ln(1.648)², below 1 (a usable ε);
    no products (k = 0) give no certificate (ε = ∞), and n = 0 counts as n = 1."""
    assert kw_epsilon(1, 1, 1.0) == pytest.approx(math.log(1.648) ** 2, rel=1e-12)
    assert kw_epsilon(0, 1, 0.5) == pytest.approx(math.log(1.648 / 0.5) ** 2, rel=1e-12)
    assert kw_epsilon(1, 2, 0.5) == pytest.approx((math.log(1.648 / 0.5) / 3) ** 2, rel=1e-12)
    assert kw_epsilon(4, 0, 0.5) == math.inf


def test_an_epsilon_of_exactly_one_leaves_the_kw_certificate_out() -> None:
    """η = 1.648√n/e⁹ with 6 steps (k = 5, 2k − 1 = 9) gives ε = 1 exactly: θ/√(1 − ε) is no bound, so
    only the deterministic candidate is left, for a 40×30 matrix (n = 30) and a 2×6×5 conv input
    (n = 60)."""
    W = np.random.default_rng(5).standard_normal((40, 30))
    K = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    eta = {n: 1.648 * math.sqrt(n) / math.exp(9) for n in (30, 60)}
    for n in (30, 60):
        assert (math.log(1.648 * math.sqrt(n) / eta[n]) / 9) ** 2 == 1.0 == kw_epsilon(n, 5, eta[n])
    for b in (
        dense_sigma(W, exact_flops=0, steps=6, failure=eta[30]),
        conv_sigma(K, geom, (6, 5), steps=6, failure=eta[60]),
    ):
        assert b.holds == "deterministic" and b.failure_probability == 0.0


def _ops(A: np.ndarray):  # type: ignore[no-untyped-def]
    At = torch.from_numpy(A)  # (m, n) float64
    return (lambda x: At @ x), (lambda y: At.T @ y)


def test_lanczos_stops_at_the_krylov_dimension() -> None:
    """From a generic start the Krylov space of AᵀA has one dimension per distinct eigenvalue: three
    for singular values (500, 300, 100) repeated 3, 7 and 10 times (a 30×20 matrix, norm 500, where a
    rounding-level β is 1e-14 of α and far above 1e-14/α), two for diag(2, 0, 0) (eigenvalues 4 and 0;
    there the next α is an exact zero). Lanczos stops there with θ = σ and says the space is invariant.
    A Gaussian 30×20 matrix is not resolved by 10 steps: all 10 run, θ ≤ σ, not invariant."""
    g = np.random.default_rng(7)
    Q1, Q2 = np.linalg.qr(g.standard_normal((30, 30)))[0], np.linalg.qr(g.standard_normal((20, 20)))[0]
    A = (Q1[:, :20] * np.repeat([500.0, 300.0, 100.0], [3, 7, 10])) @ Q2.T
    theta, j, invariant = lanczos_top(*_ops(A), 20, 20)
    assert (j, invariant) == (3, True) and theta == pytest.approx(500.0, rel=1e-12)
    theta, j, invariant = lanczos_top(*_ops(np.diag([2.0, 0.0, 0.0])), 3, 3)
    assert (j, invariant) == (2, True) and theta == pytest.approx(2.0, rel=1e-12)
    G = g.standard_normal((30, 20))
    theta, j, invariant = lanczos_top(*_ops(G), 20, 10)
    assert (j, invariant) == (10, False)
    assert _sigma(G) * (1 - 1e-3) < theta <= _sigma(G) * (1 + 1e-12)


def test_lanczos_on_a_small_norm_matrix() -> None:
    """Nothing in the iteration depends on the scale: 1e-3·G gives 1e-3 times G's θ and dimension."""
    G = np.random.default_rng(3).standard_normal((30, 20))
    big, small = lanczos_top(*_ops(G), 20, 20), lanczos_top(*_ops(1e-3 * G), 20, 20)
    assert small[1:] == big[1:] and small[0] == pytest.approx(1e-3 * big[0], rel=1e-12)
    assert big[0] == pytest.approx(_sigma(G), rel=1e-12)
