"""Every bound formula pinned against a hand computation on a tiny layer (docs/method.md §3, §7).

The numbers on the right-hand sides are written out from the method's formulas with the spec's own
(f, p, bits) — never read back from the draw — so a changed constant, a k where k² belongs or a
dropped factor fails here: tier P's 2f/(1−f) and its k², tier T's 4k², the loss bound's 2√(L·B).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.layer_compress import compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds.bounds import layer_bounds, tier_P, tier_T
from netshrink.compression.bounds.certificate import SigmaBound
from netshrink.compression.evaluation.metrics import loss_bound
from netshrink.compression.graph.network import ConvGeometry, Layer
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


def _op2(M: np.ndarray) -> float:
    """‖M‖²_op by a full SVD (numpy)."""
    return float(np.linalg.svd(M.astype(np.float64), compute_uv=False)[0] ** 2)


K = np.arange(-11.5, 12.5, 1.0, dtype=np.float32).reshape(3, 2, 2, 2) / 4  # (c_out, C, kh, kw), N = 24
KMAT = K.reshape(3, 8).astype(np.float64)  # (out, in) in (c, u, v) order: channel c = columns 4c..4c+3
Z = torch.tensor(np.linspace(-1.0, 1.0, 2 * 2 * 3 * 3).reshape(2, 2, 3, 3))  # (S=2, C=2, 3, 3)
W6 = np.linspace(-2.0, 1.5, 18, dtype=np.float32).reshape(3, 6)  # (out, in): 3 channels × 2 behind a Flatten
X6 = torch.tensor(np.linspace(-1.0, 2.0, 4 * 6).reshape(4, 6))  # (S=4, n_in=6)
K1 = np.linspace(-1.0, 2.0, 12, dtype=np.float32).reshape(3, 4, 1, 1)  # (c_out, C, 1, 1): 1 column a channel
Z1 = torch.tensor(np.linspace(-2.0, 1.0, 2 * 4 * 2 * 2).reshape(2, 4, 2, 2))  # (S=2, C=4, 2, 2)
CASES = {
    # name: (layer, input batch, granularity, windows per pixel, the norm term written out by hand)
    "conv-weight": ("conv", "weight", 4, max((KMAT**2).sum(0))),
    "conv-channel": ("conv", "channel", 4, max(_op2(KMAT[:, 4 * c : 4 * c + 4]) for c in range(2))),
    "conv1x1-channel": ("conv1x1", "channel", 1, max((K1.reshape(3, 4).astype(np.float64) ** 2).sum(0))),
    "flatten-weight": ("dense", "weight", 1, max((W6.astype(np.float64) ** 2).sum(0))),
    "flatten-neuron": ("dense", "neuron", 1, max(_op2(W6[:, 2 * g : 2 * g + 2]) for g in range(3))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tier_t_pruning_takes_the_norm_of_what_one_draw_removes(case: str) -> None:
    """Tier T's pruning term f τ² max‖·‖² Z²·w: a column's ‖W[:, j]‖² for weight draws (also in a conv
    and behind a Flatten), a block's ‖W_g‖²_op for channel/neuron draws of several columns; w = 4
    windows per pixel for a 2×2 kernel at stride 1 (a 1×1 kernel: one column a channel, one window). The
    norms by hand above; f, τ² the draw's own
    (pinned against the spec in the tests above)."""
    kind, granularity, windows, norm2 = CASES[case]
    if kind == "conv":
        layer = Layer("c", 1, "conv", K, None, "w", None, conv=ConvGeometry((2, 2)), structured=True)
        X, z2 = Z, float((Z**2).sum((1, 2, 3)).mean())
    elif kind == "conv1x1":
        layer = Layer("c", 1, "conv", K1, None, "w", None, conv=ConvGeometry((1, 1)), structured=True)
        X, z2 = Z1, float((Z1**2).sum((1, 2, 3)).mean())
    else:
        layer = Layer("fc", 1, "dense", W6, None, "w", None, structured=True, input_group=2)
        X, z2 = X6, float((X6**2).sum(1).mean())
    stats = layer_stats(layer, X, groups=granularity != "weight")
    assert stats.z2 == pytest.approx(z2)
    # K's 2 input channels: κ = 0.5 would keep one on average, below what a channel draw accepts
    keep = 0.75 if case == "conv-channel" else 0.5
    prune = PruneSpec(keep=keep, fraction=0.75, granularity=granularity)
    draw = compress_layer(layer, stats, prune=prune, quantize=None, keep=keep, generator=generator(0, 1, 0))
    assert draw.f is not None and draw.tau2 is not None and draw.from_greedy_sort
    assert not draw.group_joint  # no fixed-count inflation factor in these draws
    expected = draw.f * draw.tau2 * norm2 * z2 * windows
    assert tier_T(layer, draw, stats) == pytest.approx(expected, rel=1e-6)


def test_layer_bounds_propagates_every_tier_by_hand() -> None:
    """Two layers of the tiny one, L = 1/2 then 1, σ given: A_ℓ per tier, the step L²(σ²ê + A), the
    cumulative L²(σ²B_{ℓ−1} + A) and tier W's root form (L(σ√B + √A))², all written out by hand
    (A_T and A_P from the spec's f = 3/4, τ² = 2 as above; A_W = ‖W − Ŵ‖²_op·E‖ẑ‖² by numpy's SVD)."""
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, fraction=0.75), keep=0.5)
    first = Layer("fc0", 0, "dense", W, None, "w", None, lipschitz=0.5)
    second = Layer("fc1", 1, "dense", W, None, "w", None)
    A = {
        "E": draw.tier_E_A,
        "T": 0.75 * 2.0 * 4.5 * Z2,
        "P": 2 * 0.75 * Z2 * 2.0 * NU**2 * N_OUT / (1 - 0.75),
        "W": _op2(W.astype(np.float64) - draw.compressed.weight) * Z2,
    }
    assert A["E"] is not None
    tb1 = layer_bounds(first, stats, draw, sigma=3.0, measured_prev=0.0, prev=None)
    assert (tb1.layer, tb1.sigma, tb1.L, tb1.nu, tb1.Z2, tb1.windows) == ("fc0", 3.0, 0.5, NU, Z2, 1)
    assert (tb1.n_in, tb1.n_out, tb1.k, tb1.compressed) == (4, N_OUT, None, True)
    assert tb1.tau2 == pytest.approx(2.0) and tb1.f == pytest.approx(0.75)
    tb2 = layer_bounds(second, stats, draw, sigma=3.0, measured_prev=0.5, prev=tb1)
    for t in ("E", "T", "P", "W"):
        a = A[t]
        assert tb1.tiers[t].A == pytest.approx(a) and tb1.tiers[t].reason is None
        assert tb1.tiers[t].step == pytest.approx(0.25 * a)  # ê_0 = 0, B_0 = 0: L² A
        assert tb1.tiers[t].cumulative == pytest.approx(0.25 * a)
        b1 = 0.25 * a
        if t == "W":
            assert tb2.tiers[t].cumulative == pytest.approx((3.0 * math.sqrt(b1) + math.sqrt(a)) ** 2)
            assert tb2.tiers[t].step == pytest.approx((3.0 * math.sqrt(0.5) + math.sqrt(a)) ** 2)
        else:
            assert tb2.tiers[t].cumulative == pytest.approx(9.0 * b1 + a)
            assert tb2.tiers[t].step == pytest.approx(9.0 * 0.5 + a)


def test_layer_bounds_records_its_inputs() -> None:
    """The record beside the tiers: the σ certificate handed in, Z² times the 4 windows per pixel of a
    2×2 conv at stride 1, k = 3 of a 3-bit draw, and an uncompressed layer's zeros and nulls."""
    cert = SigmaBound(3.0, 2.9, "svd", "exact")
    layer, stats, draw = _draw(quantize=QuantizeSpec(bits=3, scale="per_row"))
    tb = layer_bounds(layer, stats, draw, sigma=3.0, measured_prev=0.0, prev=None, sigma_cert=cert)
    assert tb.sigma_bound is cert and tb.k == 3 and tb.tau2 is None
    conv = Layer("c", 1, "conv", K, None, "w", None, conv=ConvGeometry((2, 2)), structured=True)
    conv_stats = layer_stats(conv, Z, groups=False)
    tb = layer_bounds(conv, conv_stats, None, sigma=1.0, measured_prev=0.0, prev=None)
    assert tb.windows == 4 and tb.Z2 == pytest.approx(4 * float((Z**2).sum((1, 2, 3)).mean()))
    tb = layer_bounds(layer, None, None, sigma=1.0, measured_prev=0.0, prev=None)
    assert (tb.Z2, tb.compressed, tb.tau2, tb.k, tb.f, tb.sigma_bound) == (0.0, False, None, None, None, None)


def test_tier_t_drops_the_fraction_when_the_output_aware_score_chose_the_set() -> None:
    """docs/method.md §3: the factor f (f_q) multiplies tier T only for the greedy sort of the same
    scores; a set chosen by the output-aware score (``sensitivity``) gets factor 1. Per-layer 3-bit
    grid: M_i = max|W| = 2 on each of the 3 rows, Σ M_i² / (4k²) = 12/36; pruning as above."""
    layer = _layer()
    stats = layer_stats(layer, X, groups=False)
    sens = np.ones((N_OUT, 4))  # (n_out, n_in)
    quant = QuantizeSpec(bits=3, scale="per_layer", fraction=0.5)
    prune = PruneSpec(keep=0.5, fraction=0.75)

    def draw(p: PruneSpec | None, qs: QuantizeSpec | None, keep: float, sensitivity: Any) -> Any:
        g = generator(0, 1, 0)
        return compress_layer(
            layer, stats, prune=p, quantize=qs, keep=keep, generator=g, sensitivity=sensitivity
        )

    for sensitivity, f_q, f_p in ((None, 0.5, 0.75), (sens, 1.0, 1.0)):
        q = draw(None, quant, 1.0, sensitivity)
        assert q.from_greedy_sort == (sensitivity is None)
        assert tier_T(layer, q, stats) == pytest.approx(f_q * 12 / 36 * Z2)
        p = draw(prune, None, 0.5, sensitivity)
        assert tier_T(layer, p, stats) == pytest.approx(f_p * 2.0 * 4.5 * Z2)


def test_layer_bounds_says_why_a_tier_is_null() -> None:
    """A deterministic baseline (magnitude pruning) and a compensated draw (refit after P1's mask) are
    not zero-mean: tiers E and T (and P) are null with the reason, tier W still holds (docs/method.md
    §3); an uncompressed layer downstream inherits the reason with the null cumulative bound."""
    from netshrink.compression.algorithm.layer_compensated import compress_layer_compensated

    layer, stats, base = _draw(prune=PruneSpec(keep=0.5, method="magnitude"), keep=0.5)
    prune = PruneSpec(keep=0.5, fraction=0.75)
    comp = compress_layer_compensated(
        layer, stats, X, X, prune=prune, quantize=None, keep=0.5, generator=generator(0, 1, 0)
    )
    assert comp.compensated
    for draw, words, tiers in ((base, "deterministic baseline", "ET"), (comp, "compensated", "ETP")):
        tb = layer_bounds(layer, stats, draw, sigma=1.0, measured_prev=0.0, prev=None)
        for t in "ETP":
            assert tb.tiers[t].A is None and tb.tiers[t].cumulative is None and tb.tiers[t].step is None
            reason = tb.tiers[t].reason
            assert reason is not None and "tier W" in reason, (t, reason)
            assert t not in tiers or words in reason, (t, reason)
        assert tb.tiers["W"].A is not None and tb.tiers["W"].reason is None
        after = layer_bounds(_layer(), None, None, sigma=1.0, measured_prev=0.0, prev=tb)
        assert all(after.tiers[t].reason == tb.tiers[t].reason for t in "ETPW")


def test_layer_bounds_reports_no_tier_p_for_a_dependency_group_draw() -> None:
    """P1's constant is proved for its per-layer rule: a layer pruned by a network-wide dependency-group
    draw (``group_draw``) gets P null with the reason, while E, T and W keep their values."""
    layer, stats, draw = _draw(prune=PruneSpec(keep=0.5, fraction=0.75), keep=0.5)
    alone = layer_bounds(layer, stats, draw, sigma=1.0, measured_prev=0.0, prev=None)
    grouped = layer_bounds(
        layer, stats, dataclasses.replace(draw, group_draw=True), sigma=1.0, measured_prev=0.0, prev=None
    )
    assert alone.tiers["P"].A is not None and grouped.tiers["P"].A is None
    assert grouped.tiers["P"].cumulative is None
    reason = grouped.tiers["P"].reason
    assert reason is not None and "P1's constant" in reason and "dependency-group" in reason
    for t in "ETW":
        assert grouped.tiers[t].A == pytest.approx(alone.tiers[t].A) and grouped.tiers[t].reason is None


def test_layer_bounds_of_shared_and_coupled_draws_by_hand() -> None:
    """A draw shared by several layers: E, T, P null with the draw's reason (W stays). A coupled group
    draw without the coupled terms: E and T null with the reason, P and W untouched; with the terms
    (σ̄ = 1.5, A_dense E 0.3 / T 0.4, A_q E 0.05 / T 0.06) at L = 2: A is A_dense, the cumulative
    bound from B = 0 is L²(A_dense + A_q) and the step from ê = 0.25 is L²((σ̄·0.5 + √A_dense)² + A_q)."""
    from netshrink.compression.bounds.coupled import CoupledTerms

    layer, stats, base = _draw(prune=PruneSpec(keep=0.5, fraction=0.75), keep=0.5)
    layer = dataclasses.replace(layer, lipschitz=2.0)
    args: dict[str, Any] = {"sigma": 3.0, "measured_prev": 0.25, "prev": None}
    plain = layer_bounds(layer, stats, base, **args)
    assert plain.tiers["P"].A is not None and plain.tiers["W"].A is not None

    shared = layer_bounds(
        layer, stats, dataclasses.replace(base, shared_draw="one draw for two layers"), **args
    )
    for t in ("E", "T", "P"):
        assert shared.tiers[t].A is None and shared.tiers[t].reason == "one draw for two layers", t
    assert shared.tiers["W"].A == plain.tiers["W"].A

    bare = layer_bounds(layer, stats, dataclasses.replace(base, coupled=True), **args)
    for t in ("E", "T"):
        assert bare.tiers[t].A is None and bare.tiers[t].cumulative is None
        assert bare.tiers[t].reason == "coupled group draw: the coupled rule's terms were not computed"
    assert bare.tiers["P"].A == plain.tiers["P"].A and bare.tiers["W"].A == plain.tiers["W"].A

    terms = CoupledTerms(
        1.5, {"E": 0.3, "T": 0.4}, {"E": 0.05, "T": 0.06}, SigmaBound(1.5, 1.5, "svd", "exact")
    )
    tb = layer_bounds(layer, stats, dataclasses.replace(base, coupled=True), coupled=terms, **args)
    assert tb.coupled is terms
    for t, a, q in (("E", 0.3, 0.05), ("T", 0.4, 0.06)):
        assert tb.tiers[t].A == a
        assert tb.tiers[t].cumulative == pytest.approx(4.0 * (a + q))
        assert tb.tiers[t].step == pytest.approx(4.0 * ((1.5 * 0.5 + math.sqrt(a)) ** 2 + q))
    assert tb.tiers["P"].A == plain.tiers["P"].A and tb.tiers["P"].cumulative == plain.tiers["P"].cumulative
    both = dataclasses.replace(base, coupled=True, shared_draw="one draw for two layers")
    assert layer_bounds(layer, stats, both, coupled=terms, **args).tiers["E"].A is None  # shared wins


def test_layer_bounds_of_a_conv_without_its_input_size() -> None:
    """Tier W of a conv needs the conv map's norm, hence the input's spatial size: without it W is null
    with the reason; tier P of a conv carries the note that P1 proves it for stride-1 circular convs."""
    conv = Layer("c", 1, "conv", K, None, "w", None, conv=ConvGeometry((2, 2)))
    conv_stats = layer_stats(conv, Z, groups=False)
    draw = compress_layer(
        conv, conv_stats, prune=PruneSpec(keep=0.5, fraction=0.75), quantize=None, keep=0.5,
        generator=generator(0, 1, 0),
    )  # fmt: skip
    tb = layer_bounds(conv, conv_stats, draw, sigma=1.0, measured_prev=0.0, prev=None)
    assert tb.tiers["W"].A is None and "spatial size" in (tb.tiers["W"].reason or "")
    assert tb.tiers["E"].A is not None  # the other tiers do not need it
    hw = tuple(Z.shape[2:])
    ok = layer_bounds(conv, conv_stats, draw, sigma=1.0, measured_prev=0.0, prev=None, input_hw=hw)
    assert ok.tiers["W"].A is not None and ok.tiers["W"].reason is None
    assert ok.tiers["P"].A is not None
    assert ok.notes == ["P: outside P1's assumptions (P1 proves it for stride-1 circular convolutions)"]


def test_tier_p_with_nu_three_by_hand() -> None:
    """The same draws on 1.5·W (ν = max|W| = 3, so ν² = 9 is not 2ν): pruning at κ = 0.5, f = 0.75
    (τ² = 2) gives 2fZ²τ²ν²n_out/(1−f); 3 bits on a per-layer grid (M = 3, k = 3) at f = 0.5 give
    2fZ²M²n_out/(k²(1−f))."""
    layer = Layer("fc", 1, "dense", W * 1.5, None, "w", None)
    stats = layer_stats(layer, X, groups=False)
    prune = compress_layer(
        layer, stats, prune=PruneSpec(keep=0.5, fraction=0.75), quantize=None, keep=0.5,
        generator=generator(0, 1, 0),
    )  # fmt: skip
    A, reason = tier_P(layer, prune, stats)
    assert reason is None and A == pytest.approx(2 * 0.75 * Z2 * 2.0 * 9.0 * N_OUT / 0.25)
    quant = compress_layer(
        layer, stats, prune=None, quantize=QuantizeSpec(bits=3, scale="per_layer", fraction=0.5), keep=1.0,
        generator=generator(0, 1, 0),
    )  # fmt: skip
    A, reason = tier_P(layer, quant, stats)
    assert reason is None and A == pytest.approx(2 * 0.5 * Z2 * 9.0 * N_OUT / (9 * 0.5))
