"""Error compensation for one layer: a ridge least-squares refit with GPTQ-style sequential rounding.

Refs: Hassibi & Stork, "Optimal Brain Surgeon" (1993, eq. 5: the update of the remaining weights when
one is removed); Frantar & Alistarh, "Optimal Brain Compression" (OBC, NeurIPS 2022, §3-4, the same
update applied row-wise to quantization); Frantar et al., "GPTQ" (ICLR 2023, Algorithm 1: one fixed
column order for all rows, the Cholesky factor of H⁻¹, lazy block updates, dampening λ = 1% of the
mean diagonal); Frantar & Alistarh, "SparseGPT" (ICML 2023, Algorithm 1: a mask inside the same
loop). docs/compensation.md states the method and which bound still holds.

The objective, on the fit split, is the dense layer's output given the COMPRESSED input (derived):

    min_V E‖[W b]·x − V·x̂‖²,  x = [z; 1], x̂ = [ẑ; 1] (im2col columns for a conv).

Its unconstrained minimizer is V* = [W b]·C·H⁻¹ with C = E[x x̂ᵀ], H = E[x̂ x̂ᵀ] (+λI), and for any V the
objective equals E‖(V* − V) x̂‖² plus a constant, so GPTQ's loop on V* with H minimizes it column by
column. Columns are processed in one order for every row: the removed units first (their error is
pushed onto every kept column and onto the bias column, which is exactly the OBS/least-squares refit
of the kept columns and, through the constant input, the mean replacement of the removed units'
contribution), then the kept columns, each rounded to nearest on the grid with its error fed forward
to the columns not yet rounded. The bias column is last and stays float. Without quantization the
loop is an exact (ridge) least-squares refit of the kept entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from netshrink.compression.algorithm.quantize import grid_step
from netshrink.compression.algorithm.scores import im2col
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import QuantizeSpec

__all__ = ["Compensated", "Prepared", "compensate_layer", "design_matrix", "prepare"]

DAMP = 0.01  # GPTQ's percdamp: λ = DAMP · mean(diag H)
BLOCK = 128  # GPTQ's lazy-batch block of columns
_ROWS = 1 << 16  # design-matrix rows per moment chunk


@dataclass
class Compensated:
    """The compensated layer: Ŵ (float64, (out, in)), its codes/step when quantized, and the new bias."""

    weight: torch.Tensor  # (out, in) float64, exactly the float32 values the artifact holds
    codes: np.ndarray | None  # (out, in) int8, |codes| <= k
    scale: np.ndarray | None  # (out,) or (1,) float32 step
    M: np.ndarray | None  # (out,) grid maximum per row
    bias: np.ndarray | None  # (out,) float32, None when the layer has no bias
    fit_objective: float  # E‖[W b]x − [Ŵ b̂]x̂‖² on the fit split (per sample, summed over positions)


def design_matrix(layer: Layer, Z: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of the im2col matrix: dense (S, n_in); conv (S·P, C·kh·kw)."""
    if layer.kind == "conv":
        assert layer.conv is not None
        cols = im2col(Z, layer.conv)  # (S, C·q, P)
        return cols.transpose(1, 2).reshape(-1, layer.n_in)  # (S·P, n_in)
    return Z.reshape(Z.shape[0], -1)  # (S, n_in)


def _moments(
    X: torch.Tensor, Xd: torch.Tensor, with_bias: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """H = E[x̂ x̂ᵀ], C = E[x x̂ᵀ], Dd = E[x xᵀ] for augmented rows (float64, chunked)."""
    n = X.shape[1] + int(with_bias)
    H = torch.zeros(n, n, dtype=torch.float64, device=X.device)
    C = torch.zeros_like(H)
    D = torch.zeros_like(H)
    N = X.shape[0]
    for i in range(0, N, _ROWS):
        a = X[i : i + _ROWS].to(torch.float64)  # (r, n_in)
        d = Xd[i : i + _ROWS].to(torch.float64)  # (r, n_in)
        if with_bias:
            one = torch.ones(a.shape[0], 1, dtype=torch.float64, device=X.device)
            a, d = torch.cat([a, one], 1), torch.cat([d, one], 1)  # (r, n)
        H += a.T @ a
        C += d.T @ a
        D += d.T @ d
    return H / N, C / N, D / N


@dataclass
class Prepared:
    """What the refit needs that depends only on the layer and its two inputs, not on mask or bits.

    A budget search refits the same layer, given the same upstream draw, for many settings of the
    layer itself; ``prepare`` once per (upstream draw, layer) and pass it to every such refit.
    """

    H: torch.Tensor  # (n, n) E[x̂ x̂ᵀ] (undamped), n = n_in (+1 with a bias)
    Hinv: torch.Tensor  # (n, n) (H + λI)⁻¹
    WC: torch.Tensor  # (out, n) [W b]·C, C = E[x x̂ᵀ]
    V: torch.Tensor  # (out, n) V* = [W b] C (H + λI)⁻¹, the unconstrained minimizer
    const: float  # tr([W b] D [W b]ᵀ), D = E[x xᵀ]: the objective's constant
    positions: int  # output positions per sample (conv: P; dense: 1)

    @property
    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for t in (self.H, self.Hinv, self.WC, self.V))


def _augmented(layer: Layer, dev: torch.device) -> torch.Tensor:
    """[W b] (out, n_in (+1)) in float64."""
    W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=dev)  # (out, in)
    if layer.bias is None:
        return W
    return torch.cat([W, torch.as_tensor(layer.bias, dtype=torch.float64, device=dev)[:, None]], 1)


def prepare(layer: Layer, Z: torch.Tensor, Z_dense: torch.Tensor, damp: float = DAMP) -> Prepared:
    """The moments, the damped inverse and V* for ``layer`` given ẑ = ``Z`` and z = ``Z_dense``."""
    dev = Z.device
    Wa = _augmented(layer, dev)  # (out, n)
    n = Wa.shape[1]
    X, Xd = design_matrix(layer, Z), design_matrix(layer, Z_dense)  # (N, n_in)
    H, C, D = _moments(X, Xd, layer.bias is not None)  # (n, n)
    Hd = H + damp * float(torch.diagonal(H).mean().clamp_min(1e-12)) * torch.eye(
        n, dtype=torch.float64, device=dev
    )
    L = torch.linalg.cholesky(Hd)
    WC = Wa @ C  # (out, n)
    V = torch.cholesky_solve(WC.T, L).T  # (out, n): V* = [W b] C H⁻¹
    Hinv = torch.cholesky_inverse(L)  # (n, n)
    const = float((Wa @ D * Wa).sum())
    return Prepared(H, Hinv, WC, V, const, X.shape[0] // max(Z.shape[0], 1))


def compensate_layer(
    layer: Layer,
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    *,
    kept: torch.Tensor | None,
    first: np.ndarray | None,
    quantize: QuantizeSpec | None,
    damp: float = DAMP,
    prepared: Prepared | None = None,
) -> Compensated:
    """Refit ``layer`` given its compressed input ``Z`` (ẑ) and dense input ``Z_dense`` (z), fit split.

    ``kept`` (out, in) bool: entries that may stay non-zero (None: all); ``first``: column indices
    removed for every row (dropped units), processed first; ``quantize``: round kept entries on the
    b-bit grid (to nearest, with error feedback), else keep them float. ``prepared``: ``prepare``'s
    result for these inputs, when the caller already has it (the budget search's cache).
    """
    dev = Z.device
    Wa = _augmented(layer, dev)  # (out, n)
    n_out, n_in = layer.n_out, layer.n_in
    with_bias = layer.bias is not None
    n = Wa.shape[1]  # n_in (+1)
    pr = prepared if prepared is not None else prepare(layer, Z, Z_dense, damp)
    V = pr.V
    mask = torch.ones(n_out, n, dtype=torch.bool, device=dev)
    if kept is not None:
        mask[:, :n_in] = kept
    first_cols = np.zeros(0, np.int64) if first is None else np.unique(np.asarray(first, np.int64))
    rest = np.setdiff1d(np.arange(n_in), first_cols)
    order = np.concatenate([first_cols, rest, [n_in] if with_bias else np.zeros(0, np.int64)]).astype(
        np.int64
    )
    perm = torch.as_tensor(order, device=dev)
    step_t: torch.Tensor | None = None
    M = scale = None
    k = 0
    if quantize is not None:
        k = quantize.levels
        step_t, M = grid_step(
            torch.where(mask[:, :n_in], V[:, :n_in], torch.zeros_like(V[:, :n_in])), k, quantize.scale
        )
    Vp, mp = V[:, perm].clone(), mask[:, perm]  # (out, n) in processing order
    qcol = torch.ones(n, dtype=torch.bool, device=dev)  # columns rounded on the grid
    if with_bias:
        qcol[-1] = False
    # (P H P^T)⁻¹ = P H⁻¹ P^T: the permuted inverse, then GPTQ's upper Cholesky factor of it
    U = torch.linalg.cholesky(pr.Hinv[perm][:, perm], upper=True)  # (n, n)
    Q = torch.zeros_like(Vp)  # (out, n)
    safe = None if step_t is None else torch.where(step_t > 0, step_t, torch.ones_like(step_t))  # (out,)
    # The removed columns come first and are 0 in every row: the sequential loop over them solves
    # E_F U_FF = V_F (U_FF upper triangular) and pushes E_F U_F,rest onto the rest, in one step.
    i0 = int(first_cols.size) if bool((~mp[:, : first_cols.size]).all()) else 0
    if i0:
        E_F = torch.linalg.solve_triangular(U[:i0, :i0], Vp[:, :i0], upper=True, left=False)  # (out, |F|)
        Vp[:, i0:] -= E_F @ U[:i0, i0:]
    s64 = None if safe is None else safe.to(torch.float32).to(torch.float64)  # (out,) the stored step
    rounds, full, diag = qcol.tolist(), mp.all(0).tolist(), torch.diagonal(U).tolist()
    for i1 in range(i0, n, BLOCK):
        i2 = min(i1 + BLOCK, n)
        V1 = Vp[:, i1:i2].clone()  # (out, b)
        E1 = torch.zeros_like(V1)  # (out, b)
        for i in range(i2 - i1):
            c = i1 + i
            w = V1[:, i]  # (out,)
            if rounds[c] and safe is not None and s64 is not None:
                q = torch.round(w / safe).clamp_(-k, k).mul_(s64)
            else:
                q = w.clone()
            if not full[c]:
                q.masked_fill_(~mp[:, c], 0.0)
            Q[:, c] = q
            err = (w - q).div_(diag[c])  # (out,)
            V1[:, i:].addr_(err, U[c, c:i2], alpha=-1)
            E1[:, i] = err
        Vp[:, i2:] -= E1 @ U[i1:i2, i2:]
    Qa = torch.empty_like(Q)
    Qa[:, perm] = Q  # back to the natural column order
    What = Qa[:, :n_in]  # (out, in)
    codes = None
    if safe is not None:
        codes_t = torch.round(What / safe[:, None]).clamp(-k, k)  # (out, in) exact integers
        s32 = safe.to(torch.float32)
        What = (codes_t.to(torch.float32) * s32[:, None]).to(torch.float64)
        codes = codes_t.cpu().numpy().astype(np.int8)
        sc = s32.cpu().numpy()
        scale = sc if quantize is not None and quantize.scale == "per_row" else sc[:1]
    else:
        What = What.to(torch.float32).to(torch.float64)
    bias = None if not with_bias else Qa[:, n_in].to(torch.float32).cpu().numpy()
    Vh = (
        What
        if not with_bias
        else torch.cat([What, torch.as_tensor(bias, dtype=torch.float64, device=dev)[:, None]], 1)
    )
    # E‖Wa x − Vh x̂‖² = tr(Wa D Waᵀ) − 2 tr(Wa C Vhᵀ) + tr(Vh H Vhᵀ)
    obj = pr.const - 2 * float((pr.WC * Vh).sum()) + float((Vh @ pr.H * Vh).sum())
    return Compensated(What, codes, scale, M, bias, max(obj, 0.0) * pr.positions)
