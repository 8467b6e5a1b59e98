"""Per-layer input statistics that the greedy scores and the bound tiers need.

Ref: docs/method.md §1 "Greedy order" (score_ij = Var(t_ij)·E_x[ẑ_j²]), "Structured pruning"
(group scores τ²·E_x‖W_g ẑ_g‖², channel scores τ²·E_x‖K[:, c] ∗ ẑ_c‖²), "Unstructured conv
weights" (im2col: E_x[ẑ_j²] is the mean over samples AND output positions) and §3 tier T (Z²).
Everything is computed in float64 on the device of ``Z``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netshrink.compression.graph.network import ConvGeometry, Layer
from netshrink.compression.io.array_memo import ArrayMemo

__all__ = [
    "LayerStats",
    "column_groups",
    "im2col",
    "layer_stats",
    "n_units",
    "pad_input",
    "with_group_energy",
]

_BUDGET = 1 << 24  # float64 numbers per working chunk (128 MiB)
_ROWS_BLOCK = 1 << 20  # entries per row block of ``column_sq_sums`` / ``row_abs_max`` (8 MiB float64)


@dataclass
class LayerStats:
    """Second moments of one layer's (compressed-upstream) input ẑ_{ℓ−1}.

    ``positions`` is the number of conv output positions P (1 for dense). The exact expected layer
    error of independent entries is P · Σ_ij Var(t_ij) · col_energy[j] (tier E, docs/method.md §3),
    because ``col_energy`` is a per-position mean while the error sums over the whole output map.
    """

    col_energy: np.ndarray  # (n_in,) float64: E_x[ẑ_j²] (conv: mean over samples and positions);
    # (n_out, n_in) for a grouped conv, whose row i reads the input channels of its own group
    group_energy: np.ndarray | None  # (n_groups,) float64: E_x‖W_g ẑ_g‖² (whole output map)
    z2: float  # E_x‖ẑ‖², the whole input tensor per sample
    n_samples: int
    positions: int = 1  # conv output positions H'·W' (1 for dense)

    @property
    def energy(self) -> np.ndarray:
        """E_x[ẑ_j²] as a matrix that broadcasts against (n_out, n_in): (1, n_in) or (n_out, n_in)."""
        return self.col_energy if self.col_energy.ndim == 2 else self.col_energy[None, :]


def column_groups(layer: Layer) -> np.ndarray:
    """Group id of every im2col column: conv -> input channel c; dense -> j // input_group."""
    if layer.kind == "conv":
        per = int(np.prod(layer.weight.shape[2:]))
        return np.arange(layer.n_in, dtype=np.int64) // per  # (n_in,)
    g = max(1, layer.input_group)
    if layer.n_in % g:
        raise ValueError(f"layer {layer.name!r}: input_group={g} does not divide n_in={layer.n_in}")
    return np.arange(layer.n_in, dtype=np.int64) // g  # (n_in,)


def n_units(layer: Layer) -> int:
    """The number of input units (groups of ``column_groups``) a structured prune draws over."""
    if layer.kind == "conv":
        return layer.n_in // int(np.prod(layer.weight.shape[2:]))
    return layer.n_in // max(1, layer.input_group)


def pad_input(Z: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Zero-pad (S, C, H, W) with ONNX pads (top, left, bottom, right)."""
    t, l, b, r = geom.pads
    return F.pad(Z, (l, r, t, b)) if any(geom.pads) else Z


def im2col(Z: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """(S, C, H, W) -> (S, C·kh·kw, P) patches in (c, u, v) order, matching ``Layer.matrix``."""
    return F.unfold(pad_input(Z, geom), geom.kernel_shape, dilation=geom.dilations, stride=geom.strides)


def layer_stats(layer: Layer, Z: torch.Tensor, *, groups: bool) -> LayerStats:
    """Statistics of the input batch ``Z`` ((S, n_in) dense, (S, C, H, W) conv) for ``layer``.

    ``groups=True`` also computes the group energies E_x‖W_g ẑ_g‖² needed by structured pruning,
    as tr(W_gᵀW_g · E[ẑ_g ẑ_gᵀ]) (summed over positions for a conv): the same number as a grouped
    conv, E_x‖K[:, c] ∗ ẑ_c‖², without materializing its (S, C·c_out, H', W') output.
    Ref: docs/method.md §1 (scores, structured pruning), §3 (tiers E and T).
    """
    Z = Z.detach().to(torch.float64)
    S = int(Z.shape[0])
    if layer.kind == "conv":
        assert layer.conv is not None, "conv layer without geometry"
        z2 = float((Z.reshape(S, -1) ** 2).sum(dim=1).mean())
        if layer.conv.group != 1:
            return _grouped_conv_stats(layer, Z, z2)
        C = int(layer.weight.shape[1])
        W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=Z.device)  # (out, in)
        return _conv_stats(W.reshape(W.shape[0], C, -1), Z, layer.conv, groups, z2)
    X = Z.reshape(S, -1)  # (S, n_in)
    X2 = X**2  # (S, n_in): squared once for both sums below (the same values as squaring twice)
    z2 = float(X2.sum(dim=1).mean())
    col_energy = X2.mean(dim=0)  # (in,)
    del X2
    group_energy = _dense_group_energy(layer, X, col_energy) if groups else None
    return LayerStats(col_energy.cpu().numpy(), group_energy, z2, S, 1)


def with_group_energy(layer: Layer, Z: torch.Tensor, stats: LayerStats) -> LayerStats:
    """``stats`` (from ``layer_stats(layer, Z, groups=False)``) with the group energies that
    ``layer_stats(layer, Z, groups=True)`` gives: the same sums over the same chunks, so the same
    numbers. The budget search computes a structured layer's group energies only when a candidate
    prunes that layer (issue 11: on the digits CNN, 6.4 → 14.9 ms per statistics of its second conv)."""
    if (
        stats.group_energy is not None
        or layer.kind == "conv"
        and layer.conv is not None
        and layer.conv.group != 1
    ):
        return stats
    Z = Z.detach().to(torch.float64)
    S = int(Z.shape[0])
    if layer.kind == "conv":
        assert layer.conv is not None
        C = int(layer.weight.shape[1])
        W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=Z.device)  # (out, in)
        K = W.reshape(W.shape[0], C, -1)  # (c_out, C, q)
        q = int(K.shape[2])
        R = torch.zeros(C, q, q, dtype=torch.float64, device=Z.device)  # Σ_p E[patch patchᵀ]
        step = _chunk(S, int(im2col(Z[:1], layer.conv).numel()))
        for i in range(0, S, step):
            cols = im2col(Z[i : i + step], layer.conv)  # (s, C·q, P)
            Cq = cols.reshape(cols.shape[0], C, q, int(cols.shape[2]))  # (s, C, q, P)
            R += torch.einsum("sckp,sclp->ckl", Cq, Cq)
        return dataclasses.replace(stats, group_energy=_trace_energy(K, R / S))
    col = torch.as_tensor(stats.col_energy, dtype=torch.float64, device=Z.device)  # (in,)
    return dataclasses.replace(stats, group_energy=_dense_group_energy(layer, Z.reshape(S, -1), col))


def _dense_group_energy(layer: Layer, X: torch.Tensor, col_energy: torch.Tensor) -> np.ndarray:
    """E_x‖W_g ẑ_g‖² of a dense layer from its float64 input X (S, n_in) and E[ẑ_j²] (n_in,)."""
    S = int(X.shape[0])
    g = max(1, layer.input_group)
    column_groups(layer)  # validates that g divides n_in
    if g == 1:  # E‖W[:, j] ẑ_j‖² = ‖W[:, j]‖² E[ẑ_j²]; float64 in row blocks (no full copy of W)
        return (weight_col_sq(layer, X.device) * col_energy).cpu().numpy()
    W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=X.device)  # (out, in)
    R = torch.zeros(layer.n_in // g, g, g, dtype=torch.float64, device=X.device)  # (G, g, g)
    for i in range(0, S, _chunk(S, layer.n_in * g)):
        Xg = X[i : i + _chunk(S, layer.n_in * g)].reshape(-1, layer.n_in // g, g)  # (s, G, g)
        R += torch.einsum("sgk,sgl->gkl", Xg, Xg)
    return _trace_energy(W.reshape(W.shape[0], -1, g), R / S)


def _conv_stats(K: torch.Tensor, Z: torch.Tensor, geom: ConvGeometry, groups: bool, z2: float) -> LayerStats:
    """One pass of im2col chunks. K (c_out, C, q) with q = kh·kw; Z (S, C, H, W)."""
    S = int(Z.shape[0])
    c_out, C, q = K.shape
    col = torch.zeros(C * q, dtype=torch.float64, device=Z.device)
    R = torch.zeros(C, q, q, dtype=torch.float64, device=Z.device) if groups else None  # Σ_p E[patch patchᵀ]
    positions = 0
    step = _chunk(S, int(im2col(Z[:1], geom).numel()))
    for i in range(0, S, step):
        cols = im2col(Z[i : i + step], geom)  # (s, C·q, P)
        positions = int(cols.shape[2])
        col += (cols**2).sum(dim=(0, 2))
        if R is not None:
            Cq = cols.reshape(cols.shape[0], C, q, positions)  # (s, C, q, P)
            R += torch.einsum("sckp,sclp->ckl", Cq, Cq)
    col_energy = (col / (S * positions)).cpu().numpy()
    group_energy = None if R is None else _trace_energy(K, R / S)
    return LayerStats(col_energy, group_energy, z2, S, positions)


def _grouped_conv_stats(layer: Layer, Z: torch.Tensor, z2: float) -> LayerStats:
    """Grouped/depthwise conv: row i of group γ reads input channels [γ·C/G, (γ+1)·C/G), so the
    column energies are per group, repeated over the group's rows: col_energy (c_out, C/G·kh·kw).
    No group energies: a grouped conv's input channels are coupled to its outputs (never cut alone).
    """
    assert layer.conv is not None
    geom, S = layer.conv, int(Z.shape[0])
    G, n_in = geom.group, layer.n_in
    col = torch.zeros(G, n_in, dtype=torch.float64, device=Z.device)
    positions = 0
    step = _chunk(S, int(im2col(Z[:1], geom).numel()))
    for i in range(0, S, step):
        cols = im2col(Z[i : i + step], geom)  # (s, C·q, P)
        positions = int(cols.shape[2])
        col += (cols.reshape(cols.shape[0], G, n_in, positions) ** 2).sum(dim=(0, 3))  # (G, C/G·q)
    per_group = (col / (S * positions)).cpu().numpy()  # (G, n_in)
    col_energy = np.repeat(per_group, layer.n_out // G, axis=0)  # (c_out, n_in)
    return LayerStats(col_energy, None, z2, S, positions)


def _trace_energy(Wg: torch.Tensor, R: torch.Tensor) -> np.ndarray:
    """tr(W_gᵀW_g R_g) per group. Wg (out, G, g), R (G, g, g) second moments of ẑ_g."""
    gram = torch.einsum("ogk,ogl->gkl", Wg, Wg)  # (G, g, g)
    return (gram * R).sum(dim=(1, 2)).cpu().numpy()


def column_sq_sums(M: np.ndarray) -> np.ndarray:
    """(in,) float64 Σ_i M_ij² of M (out, in), the same numbers as ``(M.astype(float64)**2).sum(axis=0)``
    (numpy adds the rows in order along axis 0, and so does this loop) without its two (out, in)
    float64 arrays: row blocks of ``_ROWS_BLOCK`` entries are squared, then added row by row (memory)."""
    out = np.zeros(M.shape[1])  # (in,)
    step = max(1, _ROWS_BLOCK // max(1, M.shape[1]))
    for r in range(0, M.shape[0], step):
        B = M[r : r + step].astype(np.float64)  # (b, in)
        B *= B
        for row in B:
            out += row
    return out


def row_abs_max(M: np.ndarray) -> np.ndarray:
    """(out,) float64 max_j |M_ij| without an |M| copy (row blocks; a max is exact in any order)."""
    step = max(1, _ROWS_BLOCK // max(1, M.shape[1]))
    return np.concatenate([np.abs(M[r : r + step]).max(axis=1) for r in range(0, M.shape[0], step)]).astype(
        np.float64
    )


# Σ_i W_ij² of a layer's weight depends on the weight alone, and the budget search asks for it at every
# structured draw of a layer (issue 10: 10 times in one ``--target-top1 0.99`` on the 17M MLP, each a
# 128 MiB float64 copy of the 4096×4096 weight and its square)
_COL_SQ: ArrayMemo[torch.Tensor] = ArrayMemo()


def weight_col_sq(layer: Layer, device: torch.device) -> torch.Tensor:
    """``_col_sq(layer.matrix, device)`` (in,) float64, made once per weight array and device."""
    return _COL_SQ.get(layer.weight, torch.device(device), lambda: _col_sq(layer.matrix, device))


def _col_sq(M: np.ndarray, device: torch.device) -> torch.Tensor:
    """Σ_i M_ij² in float64, ``_BUDGET`` entries at a time: (out, in) -> (in,)."""
    W = torch.as_tensor(M, device=device)  # (out, in), float32, no copy on CPU
    step = max(1, _BUDGET // max(1, W.shape[1]))
    out = torch.zeros(W.shape[1], dtype=torch.float64, device=device)  # (in,)
    for r in range(0, W.shape[0], step):
        out += (W[r : r + step].to(torch.float64) ** 2).sum(dim=0)
    return out


def _chunk(S: int, per_sample: int) -> int:
    """Samples per chunk so that one chunk holds about ``_BUDGET`` float64 numbers."""
    return max(1, min(S, _BUDGET // max(1, per_sample)))
