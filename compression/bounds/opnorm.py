"""Operator norms σ_ℓ = ‖W_ℓ‖_op of dense layers and of the actual conv maps.

Ref: docs/method.md "Notation" (σ_ℓ: the largest singular value; for a conv, the operator norm of
the actual conv map, found by power iteration on the op and its transpose) and §3 tier W
(‖W − Ŵ‖_op, through ``weight=W - Ŵ``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from netshrink.compression.algorithm.scores import pad_input
from netshrink.compression.graph.network import ConvGeometry, Layer

__all__ = ["conv_op_norm", "conv_op_norm_upper", "op_norm"]

MAX_ITERS = 2000
TOL = 1e-10
_SEED = 20260101


def op_norm(
    layer: Layer,
    input_hw: tuple[int, int] | None = None,
    *,
    weight: np.ndarray | None = None,
    upper: bool = False,
) -> float:
    """‖W‖_op of ``layer`` (or of ``weight``, same shape, e.g. W − Ŵ for tier W).

    Dense: the largest singular value (float64). Conv: the operator norm of the conv map with its
    padding, stride and dilation on inputs of spatial size ``input_hw`` (required). Power iteration
    approaches σ from below; ``upper=True`` returns the certified FFT upper bound instead (conv only).
    """
    W = np.asarray(layer.weight if weight is None else weight, dtype=np.float64)
    if layer.kind == "conv":
        assert layer.conv is not None  # a conv layer always carries its geometry
        if input_hw is None:
            raise ValueError(f"op_norm of conv layer {layer.name!r} needs the input spatial size")
        if upper:
            return conv_op_norm_upper(W, layer.conv, input_hw)
        return conv_op_norm(W, layer.conv, input_hw)
    return float(torch.linalg.matrix_norm(torch.from_numpy(W), ord=2))  # W: (n_out, n_in)


def conv_op_norm(
    K: np.ndarray,
    geom: ConvGeometry,
    input_hw: tuple[int, int],
    *,
    max_iters: int = MAX_ITERS,
    tol: float = TOL,
) -> float:
    """Power iteration on AᵀA for the conv map A (K: (c_out, c_in, kh, kw)); Aᵀ by conv_transpose.

    Seeded start, at most ``max_iters`` steps, stops when the estimate of σ² changes by ≤ ``tol``
    (relative). The estimate ‖Av‖ (‖v‖ = 1) approaches σ_max from below.
    """
    Kt = torch.from_numpy(np.ascontiguousarray(K, dtype=np.float64))
    c_in = Kt.shape[1]
    H, W = input_hw
    g = torch.Generator().manual_seed(_SEED)
    v = torch.randn(c_in, H, W, generator=g, dtype=torch.float64)[None]  # (1, C, H, W), any scale
    prev = math.inf
    for _ in range(max_iters):
        y = _conv(v, Kt, geom)  # A v
        w = _conv_t(y, Kt, geom, (H, W))  # AᵀA v
        nrm = float(w.norm())
        if not nrm:
            return 0.0
        v = w / nrm  # ‖v‖ = 1 from here on
        # ‖Av‖² of the previous v (its scale is arbitrary at the start): it only decides when to stop,
        # and the value returned is recomputed from the last v below
        new = float((y**2).sum())  # pragma: no mutate
        if abs(new - prev) <= tol * new:  # new > 0 here: y = 0 would have given w = 0
            break
        prev = new
    return float(np.sqrt(float((_conv(v, Kt, geom) ** 2).sum())))  # ‖Av‖ ≤ σ


def conv_op_norm_upper(K: np.ndarray, geom: ConvGeometry, input_hw: tuple[int, int]) -> float:
    """A certified upper bound on the conv map's norm (derived).

    pad∘conv is (isometric embedding) -> circular correlation on the padded grid (no valid window
    wraps) -> selection of the strided valid outputs (norm ≤ 1). The circular map's norm is exactly
    max_ω σ_max(K̂(ω)) over the grid's frequencies (Sedghi, Gupta & Long 2019, Thm 6), so it bounds
    ‖A‖_op from above; equality holds for stride 1 with circular padding.
    """
    t, l, b, r = geom.pads
    Hp, Wp = input_hw[0] + t + b, input_hw[1] + l + r
    c_out, c_in, kh, kw = K.shape
    dh, dw = geom.dilations
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # dilated kernel extent
    if eh > Hp or ew > Wp:
        return 0.0  # no valid window: the map is empty
    Kd = np.zeros((c_out, c_in, eh, ew))
    Kd[:, :, ::dh, ::dw] = K
    Khat = np.fft.fft2(Kd, s=(Hp, Wp))  # (c_out, c_in, Hp, Wp)
    mats = Khat.transpose(2, 3, 0, 1).reshape(Hp * Wp, c_out, c_in)  # (Hp·Wp, c_out, c_in)
    return float(np.linalg.norm(mats, 2, axis=(1, 2)).max())  # max over ω of σ_max(K̂(ω))


def _conv(x: torch.Tensor, K: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    return F.conv2d(pad_input(x, geom), K, stride=geom.strides, dilation=geom.dilations)


def _conv_t(y: torch.Tensor, K: torch.Tensor, geom: ConvGeometry, hw: tuple[int, int]) -> torch.Tensor:
    """Adjoint of pad∘conv: conv_transpose back to the padded size, then crop the padding."""
    t, l, b, r = geom.pads
    Hp, Wp = hw[0] + t + b, hw[1] + l + r
    x = F.conv_transpose2d(y, K, stride=geom.strides, dilation=geom.dilations)  # (1, C, ≤ Hp, ≤ Wp)
    full = x.new_zeros(*x.shape[:2], Hp, Wp)  # rows and columns past the last window got no gradient
    full[:, :, : x.shape[2], : x.shape[3]] = x
    return full[:, :, t : t + hw[0], l : l + hw[1]]
