"""Quantization of one layer: P1's randomized greedy stochastic rounding and round-to-nearest.

Ref: docs/method.md §1 [P1 §3.2, Lemma 8]. The grid is {0, ±M/k, …, ±M} with k = 2^(b−1) − 1 and M
taken once from the (already pruned) matrix before scoring: max|W| per layer or M_i per row.
Stochastic rounding to the two neighbouring grid points is unbiased, |t − w| ≤ M/k and
Var(t) = (M/k)² u(1−u) ≤ M²/(4k²). Greedy: one stable float64 sort of Var(t_ij)·E[ẑ_j²] over
the non-zero entries; the m = f·nnz smallest are put on the grid, the others stay float
"outliers" (f < 1). ``rtn`` rounds the same entries to the nearest grid point (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from netshrink.compression.algorithm.prune import greedy_order
from netshrink.compression.algorithm.rng import uniform
from netshrink.compression.spec import QuantizeSpec

__all__ = ["QuantizeResult", "grid_step", "grouped_scale", "quantize_matrix"]


@dataclass
class QuantizeResult:
    """Ŵ after quantization. ``tier_E_A`` is None for round-to-nearest (a biased baseline)."""

    weight: torch.Tensor  # (n_out, n_in) float64 Ŵ (exactly the float32 values the artifact holds)
    codes: np.ndarray  # (n_out, n_in) int8, |codes| <= k; 0 at outliers
    scale: np.ndarray  # (n_out,) or (1,) float32 step M/k (rounded up to a float32)
    outliers: np.ndarray | None  # (n_out, n_in) bool, entries kept as float (f < 1)
    var: torch.Tensor  # (n_out, n_in) float64 Var(t) of the rounded entries
    M: np.ndarray  # (n_out,) float64 grid maximum per row (per-layer: M repeated)
    k: int
    f: float
    n_randomized: int
    tier_E_A: float | None


def grid_step(W: torch.Tensor, k: int, scale: str) -> tuple[torch.Tensor, np.ndarray]:
    """Per-row (or per-layer) step M/k as float64 values that are exact float32 numbers ≥ M/k.

    Rounding the step *up* to float32 keeps |w|/step ≤ k, and Ŵ = codes·step is then exactly what
    ``DequantizeLinear`` computes from the stored float32 scale. Returns (step (out,), M (out,)).
    """
    absW = W.abs()  # (out, in)
    M = absW.max(dim=1).values if scale == "per_row" else absW.max().expand(W.shape[0])  # (out,)
    M_np = M.cpu().numpy().astype(np.float64)
    step = M_np / k
    s32 = step.astype(np.float32)
    s32 = np.where(s32.astype(np.float64) < step, np.nextafter(s32, np.float32(np.inf)), s32)  # (out,)
    return torch.as_tensor(s32.astype(np.float64), device=W.device), M_np


def grouped_scale(W: torch.Tensor, bits: int) -> Literal["per_row", "per_layer"]:
    """Per-row or per-layer scale for a grouped/depthwise conv, whose rows are short (9 weights for a
    3×3 depthwise filter), so that a float32 scale per row is a large part of the storage (derived).

    Stochastic rounding's worst-case variance is step²/4 per entry (Lemma 8), so summed over the
    matrix it is n_in Σ_i M_i²/(4k²) with per-row scales and n_out n_in M²/(4k²) with one scale.
    Dropping the per-row scales raises that error by r_err = n_out·M²/Σ_i M_i² − 1 and saves
    r_bytes = 32/(n_in·bits + 32) of the layer's bytes; the per-layer scale is taken when
    r_err ≤ r_bytes (it costs less error than the bytes it saves, relatively). W: (out, in).
    """
    M2 = W.abs().max(dim=1).values.double() ** 2  # (out,)
    total = float(M2.sum())
    if total == 0.0:
        return "per_layer"
    r_err = W.shape[0] * float(M2.max()) / total - 1.0
    r_bytes = 32.0 / (W.shape[1] * bits + 32.0)
    return "per_layer" if r_err <= r_bytes else "per_row"


def quantize_matrix(
    W: torch.Tensor,
    energy: np.ndarray,
    col_energy: np.ndarray,
    spec: QuantizeSpec,
    gen: torch.Generator,
    *,
    positions: int = 1,
) -> QuantizeResult:
    """Quantize the (pruned) matrix ``W`` (out, in) float64. ``energy`` ((1, in) or (out, in)) ranks
    the entries (E[ẑ_j²], or the output-aware sensitivity); ``col_energy`` (in,) or (out, in) (grouped
    convs) gives tier E.
    """
    k = spec.levels
    step, M = grid_step(W, k, spec.scale)  # (out,)
    safe = torch.where(step > 0, step, torch.ones_like(step))[:, None]  # (out, 1)
    x = W / safe  # (out, in) in grid units, |x| <= k
    rtn = torch.round(x) if spec.method != "randomized_greedy" else None  # (out, in)
    lo = torch.floor(x)
    frac = x.sub_(lo)  # (out, in) u ∈ [0, 1), in place of x (one float64 temporary fewer)
    var = (safe**2) * frac  # (out, in) Var(t) of stochastic rounding: (M/k)² u(1−u)
    var.mul_(1.0 - frac)
    var.masked_fill_(~(step[:, None] > 0), 0.0)
    elig = (W != 0).cpu().numpy().ravel()  # zeros are on the grid already
    idx = np.flatnonzero(elig)
    m = round(spec.fraction * idx.size)
    sel = np.zeros(W.numel(), dtype=bool)
    if m == idx.size:  # f = 1: every eligible entry goes on the grid, the order does not matter
        sel[idx] = True
    elif m:
        score = (var.cpu().numpy() * energy).ravel()[idx]  # Var(t_ij)·E[ẑ_j²]
        sel[idx[greedy_order(score)[:m]]] = True
    del idx
    sel_t = torch.from_numpy(sel).to(W.device).reshape(W.shape)
    if rtn is None:
        u = uniform(gen, W.numel(), W.device).reshape(W.shape)
        q = lo.add_(u < frac)  # (out, in) stochastic rounding, in place of lo
        del u
    else:
        q = rtn
    del frac
    codes_t = q.clamp_(-k, k).masked_fill_(~sel_t, 0.0)  # (out, in)
    outl = (elig & ~sel).reshape(W.shape)  # (out, in) non-zero entries left as float
    del elig, sel
    outl_t = torch.from_numpy(outl).to(W.device)
    Wq = (codes_t.to(torch.float32) * step.to(torch.float32)[:, None]).to(torch.float64)  # (out, in)
    if outl.any():
        Wq[outl_t] = W[outl_t].to(torch.float32).to(torch.float64)
    if rtn is None:
        var.masked_fill_(~sel_t, 0.0)
    else:
        var.zero_()
    col = torch.as_tensor(col_energy, dtype=torch.float64, device=W.device)
    col = col if col.dim() == 2 else col[None, :]  # (1 or out, in)
    A = positions * float((var * col).sum()) if rtn is None else None
    scale = step.cpu().numpy().astype(np.float32)
    codes = codes_t.cpu().numpy().astype(np.int8)
    del codes_t
    return QuantizeResult(
        weight=Wq,
        codes=codes,
        scale=scale if spec.scale == "per_row" else scale[:1],
        outliers=outl if outl.any() else None,
        var=var,
        M=M,
        k=k,
        f=float(spec.fraction),
        n_randomized=int(m),
        tier_E_A=A,
    )
