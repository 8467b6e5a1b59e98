"""Certified σ upper bounds against full SVDs on small matrices (docs/method.md §3, σ_ℓ)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netshrink.compression.bounds.certificate import (
    SigmaBound,
    conv_sigma,
    dense_sigma,
    kw_epsilon,
    rounding_margin,
)
from netshrink.compression.graph.network import ConvGeometry
from tests.compression.bounds.test_opnorm import toeplitz

torch.set_num_threads(1)


def _true_sigma(W: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(W, dtype=np.float64), 2))


def _matrices() -> list[np.ndarray]:
    g = np.random.default_rng(3)
    gauss = g.standard_normal((120, 90))
    low_rank = g.standard_normal((100, 3)) @ g.standard_normal((3, 140))  # a large gap
    flat = np.linalg.qr(g.standard_normal((80, 80)))[0] * np.linspace(1.0, 0.999, 80)  # no gap at all
    heavy = g.standard_t(1.5, size=(150, 70))  # heavy-tailed entries
    structured = np.eye(60) + 1e-3 * g.standard_normal((60, 60))
    return [gauss, low_rank, flat, heavy, structured, gauss.T.copy()]


@pytest.mark.parametrize("i", range(6))
def test_certified_upper_bound_is_above_the_true_sigma(i: int) -> None:
    """exact_flops=0 forces the Lanczos / deterministic path on matrices small enough to check."""
    W = _matrices()[i].astype(np.float32)
    truth = _true_sigma(W)
    b = dense_sigma(W, exact_flops=0, steps=24)
    assert b.value >= truth * (1 - 1e-12)
    assert b.estimate <= truth * (1 + 1e-6)  # Ritz values approach σ from below (float32 products)
    assert b.holds in ("deterministic", "probabilistic")
    assert (b.failure_probability > 0) == (b.holds == "probabilistic")
    assert b.gap >= 0


def test_many_random_starts_stay_above_sigma() -> None:
    """The KW certificate over 200 seeds on a gap-free spectrum: every one holds (η = 1e-4 each)."""
    g = np.random.default_rng(5)
    Q1, Q2 = np.linalg.qr(g.standard_normal((64, 64)))[0], np.linalg.qr(g.standard_normal((64, 64)))[0]
    W = Q1 @ np.diag(np.linspace(1.0, 0.9, 64)) @ Q2.T  # σ = 1, a cluster just below
    fails = sum(dense_sigma(W, exact_flops=0, steps=8, seed=s).value < 1.0 for s in range(200))
    assert fails == 0


def test_small_matrices_use_an_exact_svd() -> None:
    W = np.random.default_rng(0).standard_normal((40, 30))
    b = dense_sigma(W)
    assert (b.method, b.holds, b.gap) == ("svd", "exact", 0.0)
    assert b.value == pytest.approx(_true_sigma(W), rel=1e-12)


def test_zero_matrix() -> None:
    assert dense_sigma(np.zeros((5, 4))).value == 0.0


def test_deterministic_bound_wins_when_tighter() -> None:
    """A rank-one matrix: ‖W‖_F = σ exactly, tighter than any probabilistic certificate."""
    g = np.random.default_rng(1)
    W = np.outer(g.standard_normal(300), g.standard_normal(200))
    b = dense_sigma(W, exact_flops=0, steps=10)
    assert b.holds == "deterministic" and b.method == "frobenius"
    assert _true_sigma(W) <= b.value <= _true_sigma(W) * (1 + 2e-5)  # inflated by 1e-5 for rounding


def test_kw_epsilon_shrinks_with_steps_and_grows_with_confidence() -> None:
    assert kw_epsilon(4096, 63, 1e-4) < kw_epsilon(4096, 31, 1e-4)
    assert kw_epsilon(4096, 63, 1e-8) > kw_epsilon(4096, 63, 1e-4)
    # the formula: 1.648 √n exp(−(2k−1)√ε) = η
    eps = kw_epsilon(1000, 20, 1e-3)
    assert 1.648 * math.sqrt(1000) * math.exp(-39 * math.sqrt(eps)) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "geom,hw",
    [
        (ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)), (6, 5)),
        (ConvGeometry((3, 2), (2, 2), (1, 0, 2, 1)), (7, 6)),
        (ConvGeometry((3, 3), (2, 1), (1, 1, 0, 0), (2, 2)), (8, 7)),
    ],
)
def test_conv_certificate_is_above_the_toeplitz_norm(geom: ConvGeometry, hw: tuple[int, int]) -> None:
    K = np.random.default_rng(1).standard_normal((3, 2, *geom.kernel_shape)).astype(np.float32)
    exact = float(np.linalg.norm(toeplitz(K, geom, hw), 2))
    b = conv_sigma(K, geom, hw, steps=12)
    assert b.value >= exact * (1 - 1e-12)
    assert b.estimate <= exact * (1 + 1e-10)


def test_to_dict_is_json_ready() -> None:
    d = SigmaBound(2.0, 1.9, "lanczos_kw", "probabilistic", 1e-4, 64).to_dict()
    assert d["gap"] == pytest.approx(2.0 / 1.9 - 1) and d["failure_probability"] == 1e-4


def test_rounding_margin_is_higham_gamma_by_hand() -> None:
    """(max(m, n) + 3)·u·‖W‖_F with u the unit roundoff: 2⁻²⁴ for float32, 2⁻⁵³ for float64."""
    assert rounding_margin(4, 7, 2.0, torch.float32) == pytest.approx(10 * 2.0**-24 * 2.0, rel=1e-12)
    assert rounding_margin(9, 3, 0.5, torch.float64) == pytest.approx(12 * 2.0**-53 * 0.5, rel=1e-12)
