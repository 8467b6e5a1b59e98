"""σ_ℓ: dense SVD and the conv map's norm against its explicit Toeplitz matrix (docs/method.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netshrink.compression.bounds.opnorm import conv_op_norm_upper, op_norm
from netshrink.compression.graph.network import ConvGeometry, Layer

torch.set_num_threads(1)


def _layer(W: np.ndarray, geom: ConvGeometry | None = None) -> Layer:
    kind = "conv" if geom is not None else "dense"
    return Layer("l", 0, kind, W.astype(np.float32), None, "w", None, conv=geom)


def toeplitz(K: np.ndarray, geom: ConvGeometry, hw: tuple[int, int]) -> np.ndarray:
    """The conv map as an explicit matrix, column by column from unit inputs (naive reference)."""
    c_in = K.shape[1]
    n = c_in * hw[0] * hw[1]
    t, l, b, r = geom.pads
    cols = []
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = 1.0
        x = F.pad(e.reshape(1, c_in, *hw), (l, r, t, b))
        y = F.conv2d(x, torch.from_numpy(K.astype(np.float64)), stride=geom.strides, dilation=geom.dilations)
        cols.append(y.ravel())
    return torch.stack(cols, 1).numpy()


def test_dense_is_largest_singular_value() -> None:
    W = np.random.default_rng(0).standard_normal((7, 11))
    assert op_norm(_layer(W)) == pytest.approx(
        np.linalg.norm(W.astype(np.float32).astype(np.float64), 2), rel=1e-12
    )


@pytest.mark.parametrize(
    "geom,hw",
    [
        (ConvGeometry((3, 3)), (5, 5)),
        (ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)), (6, 5)),
        (ConvGeometry((3, 2), (2, 2), (1, 0, 2, 1)), (7, 6)),
        (ConvGeometry((3, 3), (2, 1), (1, 1, 0, 0), (2, 2)), (8, 7)),
    ],
)
def test_conv_matches_explicit_toeplitz(geom: ConvGeometry, hw: tuple[int, int]) -> None:
    K = np.random.default_rng(1).standard_normal((3, 2, *geom.kernel_shape)).astype(np.float32)
    exact = np.linalg.norm(toeplitz(K, geom, hw), 2)
    assert op_norm(_layer(K, geom), hw) == pytest.approx(exact, rel=1e-6)
    assert op_norm(_layer(K, geom), hw, upper=True) >= exact * (1 - 1e-12)  # certified from above


def test_weight_override_and_missing_size() -> None:
    geom = ConvGeometry((3, 3), pads=(1, 1, 1, 1))
    K = np.random.default_rng(2).standard_normal((2, 2, 3, 3)).astype(np.float32)
    D = 0.1 * K
    assert op_norm(_layer(K, geom), (5, 5), weight=D) == pytest.approx(
        0.1 * op_norm(_layer(K, geom), (5, 5)), rel=1e-6
    )
    with pytest.raises(ValueError, match="input spatial size"):
        op_norm(_layer(K, geom))


def test_upper_bound_is_exact_for_circular_stride_one() -> None:
    """With circular padding the padded map *is* the circulant one: check against the FFT value by
    building the circulant matrix explicitly (wrap the input instead of zero-padding)."""
    rng = np.random.default_rng(3)
    K = rng.standard_normal((2, 3, 3, 3))
    hw = (5, 4)
    n = 3 * hw[0] * hw[1]
    cols = []
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = 1.0
        x = F.pad(e.reshape(1, 3, *hw), (1, 1, 1, 1), mode="circular")
        cols.append(F.conv2d(x, torch.from_numpy(K)).ravel())
    exact = np.linalg.norm(torch.stack(cols, 1).numpy(), 2)
    geom = ConvGeometry((3, 3))  # circular correlation on the 5x4 grid == FFT on that grid
    assert conv_op_norm_upper(K, geom, hw) == pytest.approx(exact, rel=1e-10)


def test_grouped_conv_norm_is_the_largest_group_norm() -> None:
    """A grouped conv is block diagonal over its groups, so ‖A‖_op = max_g ‖A_g‖_op. With 1×1
    kernels each group is one matrix applied per pixel: ‖A_g‖_op = σ_max(K_g[:, :, 0, 0]), by SVD."""
    from netshrink.compression.bounds.grouped import layer_op_norm

    rng = np.random.default_rng(3)
    K = rng.standard_normal((4, 3, 1, 1))  # (c_out = 4, C/G = 3, 1, 1): G = 2, C = 6
    K[2:] *= 3.0  # the second group is the larger one
    want = max(np.linalg.norm(K[g * 2 : (g + 1) * 2, :, 0, 0].astype(np.float32).astype(np.float64), 2)
               for g in range(2))  # fmt: skip
    layer = _layer(K, ConvGeometry((1, 1), group=2))
    assert layer_op_norm(layer, (3, 4)) == pytest.approx(want, rel=1e-9)
    one = _layer(K[:2], ConvGeometry((1, 1)))  # group = 1: the layer's own norm
    assert layer_op_norm(one, (3, 4)) == pytest.approx(
        np.linalg.norm(K[:2, :, 0, 0].astype(np.float32), 2), rel=1e-6
    )
    with pytest.raises(ValueError, match="needs the input spatial size"):
        layer_op_norm(layer)


def test_layer_op_norm_of_an_ungrouped_conv_is_the_conv_maps_norm() -> None:
    """Group 1: the conv map's own norm (the Toeplitz matrix's σ, by power iteration), not the FFT
    upper bound, which zero padding makes strictly larger here; ``weight`` replaces the layer's
    weight on both paths (a grouped conv too: 0.1·K scales the norm by 0.1)."""
    from netshrink.compression.bounds.grouped import layer_op_norm

    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    K = np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32)
    exact = float(np.linalg.norm(toeplitz(K, geom, (6, 5)), 2))
    assert conv_op_norm_upper(K.astype(np.float64), geom, (6, 5)) > exact * 1.01
    layer = _layer(K, geom)
    assert layer_op_norm(layer, (6, 5)) == pytest.approx(exact, rel=1e-6)
    assert layer_op_norm(layer, (6, 5), weight=0.1 * K) == pytest.approx(0.1 * exact, rel=1e-6)
    G = np.random.default_rng(3).standard_normal((4, 3, 1, 1)).astype(np.float32)
    grouped = _layer(G, ConvGeometry((1, 1), group=2))
    assert layer_op_norm(grouped, (3, 4), weight=0.1 * G) == pytest.approx(
        0.1 * layer_op_norm(grouped, (3, 4)),
        rel=1e-6,  # 0.1·G rounded to float32
    )
    assert layer_op_norm(grouped, (3, 4), weight=np.zeros_like(G)) == 0.0


def test_conv_power_iteration_is_deterministic() -> None:
    """The power iteration starts from its own seeded generator: the same bytes whatever state torch's
    global generator is in (docs/development.md: same seed and inputs, same bytes)."""
    geom = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    layer = _layer(np.random.default_rng(1).standard_normal((3, 2, 3, 3)), geom)
    torch.manual_seed(1)
    a = op_norm(layer, (6, 5))
    torch.manual_seed(2)
    b = op_norm(layer, (6, 5))
    assert a == b


def test_conv_norms_at_the_edges() -> None:
    """A zero kernel has norm 0 on both paths. A kernel taller (or wider) than the padded input has no
        valid window: the map is empty, its bound 0. A kernel exactly as tall and wide as the input has
        one window: the map is the (c_out, c_in·kh·kw) matrix, whose σ the FFT bound may not undercut (nor
    report 0)."""
    geom = ConvGeometry((3, 3))
    K = np.random.default_rng(4).standard_normal((2, 3, 3, 3))
    assert op_norm(_layer(np.zeros((2, 3, 3, 3)), geom), (5, 4)) == 0.0
    assert conv_op_norm_upper(np.zeros((2, 3, 3, 3)), geom, (5, 4)) == 0.0
    assert conv_op_norm_upper(K, geom, (2, 5)) == 0.0  # 3 rows of kernel, 2 of input
    assert conv_op_norm_upper(K, geom, (5, 2)) == 0.0
    sigma = float(np.linalg.norm(K.reshape(2, -1), 2))
    for hw in ((3, 3), (3, 4), (4, 3)):
        assert conv_op_norm_upper(K, geom, hw) >= sigma * (1 - 1e-12), hw


def test_upper_bound_uses_the_padded_grid() -> None:
    """With zero padding (top 1, left 1, bottom 2, right 2) the bound is the circulant norm on the
    padded (H + 3)×(W + 3) grid: the explicit circular correlation there, σ by numpy's SVD. The kernel
    alternates signs, so its largest frequency response is not at ω = 0 (which every grid has) and
    the grid size matters: 3 or 5 rows or columns instead of 7 move the bound by 3.5 % or more."""
    sign = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    K = np.random.default_rng(0).standard_normal((2, 3, 3, 3)) * sign
    hw, grid = (4, 4), (7, 7)
    n = 3 * grid[0] * grid[1]
    cols = []
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = 1.0
        x = F.pad(e.reshape(1, 3, *grid), (0, 2, 0, 2), mode="circular")  # wrap: windows start anywhere
        cols.append(F.conv2d(x, torch.from_numpy(K)).ravel())
    circ = np.linalg.norm(torch.stack(cols, 1).numpy(), 2)
    got = conv_op_norm_upper(K, ConvGeometry((3, 3), pads=(1, 1, 2, 2)), hw)
    assert got == pytest.approx(circ, rel=1e-10)
    for other in ((3, 7), (5, 7), (7, 3), (7, 5)):  # the grid matters for this kernel
        assert conv_op_norm_upper(K, ConvGeometry((3, 3)), other) != pytest.approx(circ, rel=1e-2)


def test_power_iteration_at_any_scale_and_dtype() -> None:
    """The stopping rule is relative: a kernel scaled by 1e-4 or 1e4 reaches the Toeplitz σ (numpy's
    SVD) as closely as the kernel itself (4e-9 of σ measured for all three; 1e-7 asked), and a float32
    kernel passed straight to ``conv_op_norm`` is read as float64."""
    from netshrink.compression.bounds.opnorm import conv_op_norm

    geom, hw = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)), (6, 5)
    K = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    for scale in (1e-4, 1.0, 1e4):
        exact = float(np.linalg.norm(toeplitz(scale * K, geom, hw), 2))
        assert conv_op_norm(scale * K, geom, hw) == pytest.approx(exact, rel=1e-7), scale
    K32 = K.astype(np.float32)
    assert conv_op_norm(K32, geom, hw) == pytest.approx(np.linalg.norm(toeplitz(K32, geom, hw), 2), rel=1e-7)


def test_power_iteration_of_a_positive_kernel() -> None:
    """An all-positive kernel (its top singular vectors are positive, Perron–Frobenius): the estimate
    is ‖Av‖ with ‖v‖ = 1, the Toeplitz σ from below, not a sum or a cube of the outputs."""
    from netshrink.compression.bounds.opnorm import conv_op_norm

    geom, hw = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)), (6, 5)
    K = np.abs(np.random.default_rng(1).standard_normal((2, 2, 3, 3)))
    exact = float(np.linalg.norm(toeplitz(K, geom, hw), 2))
    got = conv_op_norm(K, geom, hw)
    assert got <= exact * (1 + 1e-12) and got == pytest.approx(exact, rel=1e-7)


def test_power_iteration_stops_once_the_estimate_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1×1 conv with K = 2·Q (Q orthogonal) has every singular value 2: the estimate is exact from the
    first normalized vector on, so the loop stops at its third product (the first one is of the
    unscaled start) and one more product gives the value; never MAX_ITERS = 2000 of them.
    ``_conv`` is wrapped to count the products."""
    from netshrink.compression.bounds import opnorm

    calls = []
    conv = opnorm._conv
    monkeypatch.setattr(opnorm, "_conv", lambda *a: calls.append(1) or conv(*a))
    Q = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))[0]
    K = (2.0 * Q)[:, :, None, None]  # (3, 3, 1, 1)
    assert opnorm.conv_op_norm(K, ConvGeometry((1, 1)), (4, 5)) == pytest.approx(2.0, rel=1e-12)
    assert len(calls) <= 4
    # tol = 0 stops once the estimate repeats exactly ("changes by ≤ tol"): with the scalar kernel 2
    # every product is exact (powers of two), only the normalization rounds, and v/‖v‖ reaches its
    # fixed point within a few steps (4-5 products measured), far below the 100 allowed
    calls.clear()
    two = np.full((1, 1, 1, 1), 2.0)
    got = opnorm.conv_op_norm(two, ConvGeometry((1, 1)), (4, 5), tol=0.0, max_iters=100)
    assert got == pytest.approx(2.0, rel=1e-12) and len(calls) <= 10
