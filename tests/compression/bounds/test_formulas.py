"""Every bound formula pinned against a hand computation on a tiny layer (docs/method.md §3, §7).

The numbers on the right-hand sides are written out from the method's formulas with the spec's own
(f, p, bits) — never read back from the draw — so a changed constant, a k where k² belongs or a
dropped factor fails here: tier P's 2f/(1−f) and its k², tier T's 4k², the loss bound's 2√(L·B).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.layer_compress import compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds.bounds import tier_P, tier_T
from netshrink.compression.evaluation.metrics import loss_bound
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec, QuantizeSpec

W = np.array(
    [[0.5, -1.0, 0.25, 2.0], [1.5, 0.0, -0.75, 0.5], [-0.25, 1.0, 1.25, -0.5]], dtype=np.float32
)  # (n_out=3, n_in=4), N = 12, ν = max|W| = 2
X = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, -1.0, 3.0, 1.0]], dtype=torch.float64)  # (S=2, n_in)
Z2 = float((X**2).sum(1).mean())  # E_x‖ẑ‖² = (6 + 11.25) / 2 = 8.625
NU, N_OUT = 2.0, 3


def _layer() -> Layer:
    return Layer("fc", 1, "dense", W, None, "w", None)


def _draw(prune: PruneSpec | None = None, quantize: QuantizeSpec | None = None, keep: float = 1.0):  # type: ignore[no-untyped-def]
    layer = _layer()
    stats = layer_stats(layer, X, groups=False)
    assert stats.z2 == pytest.approx(8.625)
    draw = compress_layer(
        layer, stats, prune=prune, quantize=quantize, keep=keep, generator=generator(0, 1, 0)
    )
    return layer, stats, draw


def test_tier_p_pruning_is_p1s_constant() -> None:
    # κ = 0.5, f = 0.75: m = 9 randomized of N = 12, p = 1 − (1 − κ)N/m = 1/3, τ² = (1 − p)/p = 2.
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, fraction=0.75), keep=0.5)
    f, tau2 = 0.75, 2.0
    assert draw.f == pytest.approx(f) and draw.tau2 == pytest.approx(tau2)
    A, reason = tier_P(layer, draw, stats)
    assert reason is None
    assert A == pytest.approx(2 * f * Z2 * tau2 * NU**2 * N_OUT / (1 - f))  # = 1242


def test_tier_p_quantization_uses_k_squared() -> None:
    # 3 bits: k = 3; per-layer grid M = max|W| = 2; half the weights on the grid (f = 0.5).
    layer, stats, draw = _draw(quantize=QuantizeSpec(bits=3, scale="per_layer", fraction=0.5))
    f, k, M = 0.5, 3, 2.0
    A, reason = tier_P(layer, draw, stats)
    assert reason is None
    assert A == pytest.approx(2 * f * Z2 * M**2 * N_OUT / (k**2 * (1 - f)))  # = 11.5


def test_tier_p_is_null_with_the_reason_at_f_1() -> None:
    layer, stats, draw = _draw(quantize=QuantizeSpec(bits=3))
    A, reason = tier_P(layer, draw, stats)
    assert A is None and reason is not None and "P1's constant" in reason and "f = 1" in reason
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, fraction=1.0), keep=0.5)
    assert draw.f == pytest.approx(1.0)
    A, reason = tier_P(layer, draw, stats)
    assert A is None and reason is not None and "P1's constant" in reason and "(pruning)" in reason


def test_baselines_carry_no_tier_p_or_t() -> None:
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, method="magnitude"), keep=0.5)
    assert tier_T(layer, draw, stats) is None
    A, reason = tier_P(layer, draw, stats)
    assert A is None and reason is not None and "tier W" in reason


def test_tier_t_quantization_is_m_squared_over_4k_squared() -> None:
    # per-row M_i = max_j |W_ij| = (2, 1.5, 1.25); k = 3; f = 1 (every weight on the grid).
    layer, stats, draw = _draw(quantize=QuantizeSpec(bits=3, scale="per_row"))
    M = np.array([2.0, 1.5, 1.25])
    assert tier_T(layer, draw, stats) == pytest.approx(float((M**2).sum()) / (4 * 3**2) * Z2)


def test_tier_t_pruning_is_f_tau2_max_column_norm() -> None:
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, fraction=0.75), keep=0.5)
    col2 = (W.astype(np.float64) ** 2).sum(0).max()  # max_j ‖W[:, j]‖² = 4 + 0.25 + 0.25 = 4.5
    assert col2 == pytest.approx(4.5)
    assert tier_T(layer, draw, stats) == pytest.approx(0.75 * 2.0 * 4.5 * Z2)


def test_t_is_at_least_e_and_p_at_least_t_on_this_layer() -> None:
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, fraction=0.75), keep=0.5)
    T = tier_T(layer, draw, stats)
    P, _ = tier_P(layer, draw, stats)
    assert draw.tier_E_A is not None and T is not None and P is not None
    assert draw.tier_E_A <= T <= P


def test_loss_bound_is_the_square_of_the_triangle_inequality() -> None:
    # L(Φ̂) ≤ (√L + √B)² = L + 2√(L·B) + B: L = 1, B = 4 → 9; L = 9, B = 16 → 49.
    assert loss_bound(1.0, 4.0) == pytest.approx(9.0)
    assert loss_bound(9.0, 16.0) == pytest.approx(49.0)
    assert loss_bound(2.0, 0.0) == pytest.approx(2.0)
    assert loss_bound(0.5, 0.5) == pytest.approx((math.sqrt(0.5) + math.sqrt(0.5)) ** 2)
