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


def test_to_dict_by_hand() -> None:
    """Every key and value, written out: a finite gap, an infinite one (no Ritz run) as null, and a
    zero bound with a zero estimate (gap 0)."""
    assert SigmaBound(2.0, 1.6, "lanczos_kw", "probabilistic", 1e-4, 64).to_dict() == {
        "value": 2.0,
        "estimate": 1.6,
        "method": "lanczos_kw",
        "holds": "probabilistic",
        "failure_probability": 1e-4,
        "gap": pytest.approx(0.25),
        "steps": 64,
    }
    assert SigmaBound(3.0, None, "fft_grouped", "deterministic").to_dict() == {
        "value": 3.0,
        "estimate": None,
        "method": "fft_grouped",
        "holds": "deterministic",
        "failure_probability": 0.0,
        "gap": None,
        "steps": None,
    }
    assert SigmaBound(0.0, 0.0, "zero", "exact").to_dict()["gap"] == 0.0


def test_zero_weights_give_an_exact_zero() -> None:
    """An all-zero matrix or kernel: σ = 0 exactly, no Lanczos run."""
    zero = SigmaBound(0.0, 0.0, "zero", "exact")
    assert dense_sigma(np.zeros((5, 4))) == zero
    assert dense_sigma(np.zeros((600, 520)), exact_flops=0) == zero
    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    assert conv_sigma(np.zeros((3, 2, 3, 3)), geom, (6, 5)) == zero


def test_conv_kw_certificate_by_hand() -> None:
    """The KW certificate of a conv map: θ(1 + 1e-9)/√(1 − ε) with ε from Thm 4.2 written out for
    n = c_in·H·W (one input, not a batch) and k = steps − 1; θ ≤ the Toeplitz SVD's σ."""
    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    hw = (6, 5)
    K = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    exact = float(np.linalg.norm(toeplitz(K, geom, hw), 2))
    b = conv_sigma(K, geom, hw, steps=40)
    n = 2 * 6 * 5
    eps = (math.log(1.648 * math.sqrt(n) / 1e-4) / (2 * 39 - 1)) ** 2
    assert (b.method, b.holds, b.steps, b.failure_probability) == ("lanczos_kw", "probabilistic", 40, 1e-4)
    assert b.estimate <= exact * (1 + 1e-10)
    assert b.estimate == pytest.approx(exact, rel=1e-8)  # 40 steps on a 60-dim space: converged
    assert b.value == pytest.approx(b.estimate * (1 + 1e-9) / math.sqrt(1 - eps), rel=1e-12)


def test_a_pointwise_conv_takes_the_exact_fft_bound() -> None:
    """A 1×1 conv without padding applies the same (c_out, c_in) matrix at every pixel: its norm is that
    matrix's σ (numpy's SVD), which the per-frequency bound attains, below any KW certificate."""
    K = np.random.default_rng(4).standard_normal((3, 2, 1, 1))
    geom = ConvGeometry((1, 1), (1, 1), (0, 0, 0, 0))
    b = conv_sigma(K, geom, (5, 4), steps=12)
    assert (b.method, b.holds, b.failure_probability) == ("fft", "deterministic", 0.0)
    assert b.value == pytest.approx(_true_sigma(K[:, :, 0, 0]), rel=1e-12)


def test_the_seed_reaches_the_lanczos_start() -> None:
    """Three steps on a 60-dimensional map do not converge, so the Ritz value depends on the start:
    two seeds differ, one seed twice gives the same value, and both stay below the Toeplitz σ."""
    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    K = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    exact = float(np.linalg.norm(toeplitz(K, geom, (6, 5)), 2))
    a, b, a2 = (conv_sigma(K, geom, (6, 5), steps=3, seed=s).estimate for s in (1, 2, 1))
    assert a == a2 and a != b
    assert max(a, b) <= exact * (1 + 1e-10)
    W = np.random.default_rng(5).standard_normal((90, 70))
    d1, d2 = (dense_sigma(W, exact_flops=0, steps=3, seed=s).estimate for s in (1, 2))
    assert d1 != d2 and max(d1, d2) <= _true_sigma(W) * (1 + 1e-10)


def test_too_few_steps_leave_only_the_deterministic_bound() -> None:
    """With 6 Krylov steps (k = 5) on n = 60 (a 2×6×5 conv input) or n = 70 (a 90×70 matrix),
    ε = (ln(1.648√n/η)/9)² is between 1 and 2: the KW certificate says nothing and is left out."""
    for n in (60, 70):
        eps = (math.log(1.648 * math.sqrt(n) / 1e-4) / 9) ** 2
        assert 1.0 < eps < 2.0 and kw_epsilon(n, 5, 1e-4) == pytest.approx(eps)
    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    K = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    b = conv_sigma(K, geom, (6, 5), steps=6)
    assert (b.method, b.holds, b.steps) == ("fft", "deterministic", None)
    assert b.value >= float(np.linalg.norm(toeplitz(K, geom, (6, 5)), 2)) * (1 - 1e-12)
    W = np.random.default_rng(5).standard_normal((90, 70))
    d = dense_sigma(W, exact_flops=0, steps=6)
    assert d.holds == "deterministic" and d.method in ("frobenius", "schur")
    assert d.value >= _true_sigma(W)


def test_sigma_bound_of_a_conv_layer_is_the_conv_maps_norm() -> None:
    """``sigma_bound`` of a 3×3 padded conv bounds the norm of the conv map (the Toeplitz matrix's σ),
    which is larger here than σ of the (c_out, c_in·9) kernel matrix; a grouped conv takes the
    per-group FFT bound (its 1×1 groups: σ of each group's matrix); no input size, no norm."""
    from netshrink.compression.bounds.certificate import sigma_bound
    from netshrink.compression.graph.network import Layer

    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    K = np.random.default_rng(2).standard_normal((3, 2, 3, 3)).astype(np.float32)
    exact = float(np.linalg.norm(toeplitz(K.astype(np.float64), geom, (6, 5)), 2))
    assert exact > _true_sigma(K.reshape(3, -1)) * 1.2
    layer = Layer("c", 0, "conv", K, None, "w", None, conv=geom)
    b = sigma_bound(layer, (6, 5))
    assert b.value >= exact * (1 - 1e-9) and b.estimate <= exact * (1 + 1e-6)
    with pytest.raises(ValueError, match="needs the input spatial size"):
        sigma_bound(layer)

    G = np.random.default_rng(3).standard_normal((4, 3, 1, 1)).astype(np.float32)  # 2 groups of 2
    G[2:] *= 3.0
    grouped = Layer("g", 0, "conv", G, None, "w", None, conv=ConvGeometry((1, 1), group=2))
    g = sigma_bound(grouped, (3, 4))
    assert (g.method, g.holds, g.estimate) == ("fft_grouped", "deterministic", None)
    assert g.value == pytest.approx(max(_true_sigma(G[i : i + 2, :, 0, 0]) for i in (0, 2)), rel=1e-9)
    half = sigma_bound(grouped, (3, 4), weight=0.5 * G)  # a weight override (tier W's W − Ŵ) is used
    assert half.value == pytest.approx(0.5 * g.value, rel=1e-6)
    # a dense layer: its matrix's σ (exact SVD when small)
    dense = Layer("d", 0, "dense", K.reshape(3, -1), None, "w", None)
    assert sigma_bound(dense).value == pytest.approx(_true_sigma(K.reshape(3, -1)), rel=1e-9)


def test_abs_sums_equal_numpys_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Column and row sums of |W| over row blocks (ABS_BLOCK = 8 entries: blocks of 2 rows of 4, the
    last one short) are numpy's float64 sums of |W|, bit for bit (the docstring's promise), also for
    a float32 W, and as one block."""
    from netshrink.compression.bounds import certificate

    W = np.random.default_rng(6).standard_normal((7, 4)).astype(np.float32) * 3.3
    want_col = np.abs(W).sum(axis=0, dtype=np.float64)
    want_row = np.abs(W).sum(axis=1, dtype=np.float64)
    for block in (8, certificate.ABS_BLOCK):
        monkeypatch.setattr(certificate, "ABS_BLOCK", block)
        col, row = certificate._abs_sums(W)
        np.testing.assert_array_equal(col, want_col)
        np.testing.assert_array_equal(row, want_row)
