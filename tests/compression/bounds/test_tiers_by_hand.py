"""The tiers' remaining cases by hand (``bounds/bounds.py``; docs/method.md §3, docs/bounds-dag.md):
windows per pixel against a brute-force count, tier T's fixed-count inflation max m/(m−1), the stages
each tier sums, a draw without its quantized fraction, tier W's Δ and its compensated-bias term
√P‖b̂ − b‖, the null tiers of coupled baselines, and every reason word for word. Each right-hand side
is written out from the formulas with numbers set here, never read back from the code under test."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.layer_compress import LayerDraw, compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds import bounds
from netshrink.compression.bounds.bounds import layer_bounds, tier_P, tier_T, tier_W_bound, windows_per_pixel
from netshrink.compression.bounds.certificate import SigmaBound
from netshrink.compression.bounds.coupled import CoupledTerms
from netshrink.compression.graph.network import ConvGeometry, Layer
from netshrink.compression.spec import PruneSpec

W = np.array(
    [[0.5, -1.0, 0.25, 2.0], [1.5, 0.0, -0.75, 0.5], [-0.25, 1.0, 1.25, -0.5]], dtype=np.float32
)  # (n_out=3, n_in=4), ν = max|W| = 2, max_j ‖W[:, j]‖² = 4.5
X = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, -1.0, 3.0, 1.0]], dtype=torch.float64)  # (S=2, n_in)
Z2 = 8.625  # E_x‖ẑ‖² = (6 + 11.25) / 2
K = np.arange(-11.5, 12.5, 1.0, dtype=np.float32).reshape(3, 2, 2, 2) / 4  # (c_out, C, kh, kw)
Z = torch.tensor(np.linspace(-1.0, 1.0, 2 * 2 * 3 * 3).reshape(2, 2, 3, 3))  # (S=2, C=2, 3, 3)
K4 = np.linspace(-2.0, 2.5, 48, dtype=np.float32).reshape(3, 4, 2, 2)  # (c_out, C=4, kh, kw)
Z4 = torch.tensor(np.linspace(-1.0, 2.0, 2 * 4 * 3 * 3).reshape(2, 4, 3, 3))  # (S=2, C=4, 3, 3)
B = np.array([0.001, -0.5, 0.25], dtype=np.float32)  # a bias: (n_out,)
B_HAT = np.array([1.0, -0.25, 0.3], dtype=np.float32)  # a refit's bias


def _dense(bias: np.ndarray | None = None) -> Layer:
    return Layer("fc", 1, "dense", W, bias, "w", None if bias is None else "b")


def _conv(bias: np.ndarray | None = None, weight: np.ndarray = K) -> Layer:
    return Layer("c", 1, "conv", weight, bias, "w", None, conv=ConvGeometry((2, 2)), structured=True)


def _pruned(layer: Layer, inputs: torch.Tensor, keep: float = 0.5, **prune: Any) -> tuple[Any, LayerDraw]:
    """κ = 0.5, f = 0.75: m = 9 of N = 12 randomized, p = 1/3, τ² = 2 (test_formulas.py)."""
    stats = layer_stats(layer, inputs, groups=prune.get("granularity", "weight") != "weight")
    spec = PruneSpec(keep=keep, **{"fraction": 0.75, **prune})
    draw = compress_layer(layer, stats, prune=spec, quantize=None, keep=keep, generator=generator(0, 1, 0))
    return stats, draw


def _count_1d(k: int, s: int, d: int, n: int = 60) -> int:
    """Brute force along one axis: the most (window, tap) pairs that read one input row."""
    counts = np.zeros(n, int)
    for start in range(0, n - d * (k - 1), s):
        for u in range(k):
            counts[start + u * d] += 1
    return int(counts.max())


AXES = [(1, 1, 1), (3, 1, 1), (3, 2, 1), (2, 2, 1), (3, 1, 2), (3, 2, 2), (5, 3, 2), (3, 4, 2), (4, 3, 3)]


@pytest.mark.parametrize(("k", "s", "d"), AXES)
def test_windows_along_one_axis_are_the_brute_force_count(k: int, s: int, d: int) -> None:
    """⌈k·gcd(d, s)/s⌉ is exact (not only an upper bound) on a long enough axis, dilated or not."""
    assert bounds._windows_1d(k, s, d) == _count_1d(k, s, d)


def test_windows_per_pixel_is_the_product_of_the_axes_in_2d() -> None:
    """A 2-D count by brute force (every window and tap of a 3×5 kernel, stride (2, 3), dilation
    (1, 2) on a 24×30 input): the most pairs reading one pixel, 2·2 = 4; a dense layer: 1."""
    geom = ConvGeometry((3, 5), (2, 3), dilations=(1, 2))
    layer = Layer("c", 0, "conv", np.zeros((1, 1, 3, 5), np.float32), None, "w", None, conv=geom)
    counts = np.zeros((24, 30), int)
    for top in range(0, 24 - 2, 2):
        for left in range(0, 30 - 8, 3):
            for u in range(3):
                for v in range(5):
                    counts[top + u, left + 2 * v] += 1
    assert counts.max() == 4 == windows_per_pixel(layer)
    assert windows_per_pixel(_dense()) == 1


def test_tier_t_multiplies_pruning_by_the_largest_fixed_count_inflation() -> None:
    """Two randomized spaces read by the layer: m = 4 (one unit here, τ² = 1/2, Cov = −τ²/3) and m = 2
    (units 0, 1, τ² = 2, Cov = −τ²): the factors 1 + (τ²/(m−1))/τ² are 4/3 and 2; tier T's pruning term
    f τ² max_j‖W[:, j]‖² Z² = 0.75·2·4.5·Z² takes the larger (docs/bounds-dag.md "Fixed-count draws")."""
    layer = _dense()
    stats, base = _pruned(layer, X)
    assert (base.f, base.tau2) == (pytest.approx(0.75), pytest.approx(2.0))
    u_tau2 = np.array([2.0, 2.0, 0.5, 0.0])
    one = [(np.array([2]), 0.5 / 3)]
    both = [*one, (np.array([0, 1]), 2.0)]
    plain = 0.75 * 2.0 * 4.5 * Z2
    for joint, factor in ((both, 2.0), (one, 4 / 3), (None, 1.0), ([], 1.0)):
        draw = dataclasses.replace(base, group_tau2=u_tau2, group_joint=joint)
        assert tier_T(layer, draw, stats) == pytest.approx(factor * plain, rel=1e-12), joint


def _two_stage(layer: Layer) -> tuple[Any, LayerDraw]:
    """The pruned draw with a quantization stage set by hand: k = 3, M = (2, 1.5, 1), f_q = 1/2."""
    stats, base = _pruned(layer, X)
    M = np.array([2.0, 1.5, 1.0])
    return stats, dataclasses.replace(base, quant_randomized=True, M=M, k=3, quant_fraction=0.5)


def test_each_tier_sums_the_stages_marked_randomized() -> None:
    """A stage counts where the draw marks it randomized (``prune_randomized``/``quant_randomized``):
    T = f τ² 4.5 Z² + f_q ΣM²/(4k²) Z², P = 2f Z² τ² ν² n_out/(1−f) + 2f_q Z² max(M)² n_out/(k²(1−f_q))."""
    layer = _dense()
    stats, draw = _two_stage(layer)
    t_prune, t_quant = 0.75 * 2.0 * 4.5 * Z2, 0.5 * (4.0 + 2.25 + 1.0) / 36 * Z2
    p_prune = 2 * 0.75 * Z2 * 2.0 * 4.0 * 3 / 0.25
    p_quant = 2 * 0.5 * Z2 * 4.0 * 3 / (9 * 0.5)
    cases = {
        "both": (draw, t_prune + t_quant, p_prune + p_quant),
        "pruning": (dataclasses.replace(draw, quant_randomized=False), t_prune, p_prune),
        "quantization": (dataclasses.replace(draw, prune_randomized=False), t_quant, p_quant),
    }
    for name, (d, t, p) in cases.items():
        assert tier_T(layer, d, stats) == pytest.approx(t, rel=1e-12), name
        assert tier_P(layer, d, stats) == (pytest.approx(p, rel=1e-12), None), name


def test_a_quantized_fraction_not_recorded_counts_as_f_1() -> None:
    """``quant_fraction`` None (a hand-made draw): tier T takes f_q = 1 (the largest), tier P is then
    undefined, with the reason."""
    layer = _dense()
    stats, draw = _two_stage(layer)
    quant = dataclasses.replace(draw, prune_randomized=False, quant_fraction=None)
    assert tier_T(layer, quant, stats) == pytest.approx(1.0 * (4.0 + 2.25 + 1.0) / 36 * Z2, rel=1e-12)
    assert tier_P(layer, quant, stats) == (
        None,
        "P1's constant 2f/(1-f) is undefined at f = 1 (quantization)",
    )


def test_tier_t_of_channel_blocks_is_in_float64() -> None:
    """A conv's channel draw: max_c ‖W_c‖²_op by numpy's float64 SVD of each (3, 4) block, to 1e-12 (a
    float32 SVD would be off by ~1e-7); 4 windows per pixel for a 2×2 kernel at stride 1."""
    layer = _conv()
    # 2 input channels: κ = 0.5 would keep one on average, below what a channel draw accepts
    stats, draw = _pruned(layer, Z, keep=0.75, granularity="channel")
    kmat = K.reshape(3, 8).astype(np.float64)
    norm2 = max(np.linalg.svd(kmat[:, 4 * c : 4 * c + 4], compute_uv=False)[0] ** 2 for c in range(2))
    assert draw.f is not None and draw.tau2 is not None and not draw.group_joint
    z2 = float((Z**2).sum((1, 2, 3)).mean())
    assert tier_T(layer, draw, stats) == pytest.approx(draw.f * draw.tau2 * norm2 * z2 * 4, rel=1e-12)


def test_tier_w_certifies_w_minus_w_hat_in_float32_for_dense_and_float64_for_convs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The certificate gets Δ = W − Ŵ: a float32 subtraction for dense layers (half the memory; its
    rounding is inside the certificate's margin), float64 for convs, equal to the subtraction done here."""
    seen: list[np.ndarray] = []
    real = bounds.sigma_bound

    def spy(layer: Layer, input_hw: Any, weight: np.ndarray) -> SigmaBound:
        seen.append(weight.copy())
        return real(layer, input_hw, weight=weight)

    monkeypatch.setattr(bounds, "sigma_bound", spy)
    for layer, inputs, hw, dt in ((_dense(), X, None, np.float32), (_conv(), Z, (3, 3), np.float64)):
        stats, draw = _pruned(layer, inputs)
        seen.clear()
        A, cert = tier_W_bound(layer, draw, stats, hw)
        (delta,) = seen
        want = layer.weight.astype(dt) - draw.compressed.weight.astype(dt)
        assert delta.dtype == dt and delta.shape == layer.weight.shape
        np.testing.assert_array_equal(delta, want)
        assert A == pytest.approx(cert.value**2 * stats.z2, rel=1e-12)  # no bias: no bias term


def _bias_change_sq() -> float:
    """‖b̂ − b‖² exactly (rationals), rounded once."""
    return float(sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(B_HAT, B, strict=True)))


def test_tier_w_adds_the_bias_change_at_every_output_position() -> None:
    """A refit that moves the bias: √A = ‖W − Ŵ‖_op √E‖ẑ‖² + √P ‖b̂ − b‖ with P = 1 for a dense layer and
    P = 2·2 output positions for the 2×2 conv on a 3×3 input (docs/compensation.md); Δb in float64 from
    the float32 biases, exactly (a float32 Δb would be off by ~1e-8 here)."""
    db = math.sqrt(_bias_change_sq())
    for layer, inputs, hw, positions in ((_dense(B), X, None, 1), (_conv(B), Z, (3, 3), 4)):
        stats, draw = _pruned(layer, inputs)
        assert stats.positions == positions
        moved = dataclasses.replace(draw, compressed=dataclasses.replace(draw.compressed, bias=B_HAT))
        A0, cert = tier_W_bound(layer, draw, stats, hw)
        A, cert_moved = tier_W_bound(layer, moved, stats, hw)
        assert cert_moved.value == cert.value and A0 == pytest.approx(cert.value**2 * stats.z2, rel=1e-12)
        want = (cert.value * math.sqrt(stats.z2) + math.sqrt(positions) * db) ** 2
        assert A == pytest.approx(want, rel=1e-13)
    # the certificate itself: ‖W − Ŵ‖_op of the dense layer by numpy's SVD (within its rounding margin)
    stats, draw = _pruned(_dense(), X)
    sigma = np.linalg.svd(W.astype(np.float64) - draw.compressed.weight, compute_uv=False)[0]
    assert tier_W_bound(_dense(), draw, stats)[1].value == pytest.approx(sigma, rel=1e-6)


def test_a_coupled_baseline_keeps_its_null_tiers_and_reason() -> None:
    """A deterministic baseline read by a coupled group (magnitude pruning on a residual stream): tiers E
    and T stay null, with the baseline's reason, with or without the coupled rule's terms."""
    layer = _dense()
    stats, base = _pruned(layer, X, method="magnitude")
    assert base.tier_E_A is None
    draw = dataclasses.replace(base, coupled=True)
    terms = CoupledTerms(
        1.5, {"E": 0.3, "T": 0.4}, {"E": 0.05, "T": 0.06}, SigmaBound(1.5, 1.5, "svd", "exact")
    )
    for coupled in (None, terms):
        tb = layer_bounds(layer, stats, draw, sigma=3.0, measured_prev=0.25, prev=None, coupled=coupled)
        for t in ("E", "T"):
            tv = tb.tiers[t]
            assert (tv.A, tv.step, tv.cumulative) == (None, None, None), (t, coupled)
            assert tv.reason == "deterministic baseline: not zero-mean, only tier W applies", (t, coupled)
        assert tb.tiers["W"].A is not None


def test_the_conv_note_of_tier_p_is_for_convs_that_report_p() -> None:
    """P1 proves tier P for stride-1 circular convolutions: the note goes with a conv's tier P only (a
    dense layer's P, a conv whose P is null for channel blocks: no note)."""
    stats, draw = _pruned(_dense(), X)
    tb = layer_bounds(_dense(), stats, draw, sigma=1.0, measured_prev=0.0, prev=None)
    assert tb.tiers["P"].A is not None and tb.notes == []
    conv = _conv(weight=K4)
    stats, draw = _pruned(conv, Z4, granularity="channel")
    assert draw.f == pytest.approx(0.75)  # P is null for the 4-column blocks, not for f = 1
    tb = layer_bounds(conv, stats, draw, sigma=1.0, measured_prev=0.0, prev=None, input_hw=(3, 3))
    assert tb.tiers["P"].A is None and tb.notes == []


def test_every_reason_word_for_word() -> None:
    """The reasons a report shows for a null tier (and the assert on a missing input statistic)."""
    from netshrink.compression.algorithm.layer_compensated import compress_layer_compensated

    layer = _dense()
    stats, magnitude = _pruned(layer, X, method="magnitude")
    assert tier_P(layer, magnitude, stats) == (None, "baselines carry only tier W")
    stats, full = _pruned(layer, X, fraction=1.0)
    assert tier_P(layer, full, stats) == (None, "P1's constant 2f/(1-f) is undefined at f = 1 (pruning)")
    conv = _conv(weight=K4)
    conv_stats, channels = _pruned(conv, Z4, granularity="channel")
    assert tier_P(conv, channels, conv_stats) == (
        None,
        "P1's constant is not a bound for draws of groups of 4 columns (one draw per neuron/channel "
        "block): a block's ‖W_g‖²_op can exceed n_out·ν², so P could sit below E",
    )
    args: dict[str, Any] = {"sigma": 1.0, "measured_prev": 0.0, "prev": None}
    tb = layer_bounds(layer, stats, magnitude, **args)
    assert [tb.tiers[t].reason for t in "ETP"] == [
        "deterministic baseline: not zero-mean, only tier W applies",
        "deterministic baseline: not zero-mean, only tier W applies",
        "baselines carry only tier W",
    ]
    comp = compress_layer_compensated(
        layer, stats, X, X, prune=PruneSpec(keep=0.5, fraction=0.75), quantize=None, keep=0.5,
        generator=generator(0, 1, 0),
    )  # fmt: skip
    tb = layer_bounds(layer, stats, comp, **args)
    assert {tb.tiers[t].reason for t in "ETP"} == {
        "compensated (refit on the fit split): not zero-mean, only tier W applies"
    }
    _, draw = _pruned(layer, X)
    tb = layer_bounds(layer, stats, dataclasses.replace(draw, group_draw=True), **args)
    assert tb.tiers["P"].reason == "P1's constant is for its per-layer rule, not dependency-group draws"
    with pytest.raises(AssertionError) as info:
        layer_bounds(layer, None, draw, **args)
    assert str(info.value) == "a compressed layer needs its input statistics"
