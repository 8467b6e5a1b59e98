"""The refit's moments for the kept columns only, when a unit mask drops input columns and no cached
``Prepared`` is at hand (issue 10: the cost of the budget search's refits of a wide layer).

``compensate.prepare`` forms H = E[x̂ x̂ᵀ] (n, n) and B = E[y x̂ᵀ] (out, n) over every input column,
since a cached entry serves every mask of the layer. The refit reads only H_KK and B_K of the kept
columns K (docs/compensation.md: the removed units' columns are 0 in every row and drop out), plus
λ = DAMP · mean(diag H) over all n columns. Without a cache entry, forming the whole H and B costs
N·n² + N·n·out multiply-adds where N·m² + N·m·out do (m = |K|): on the 17M MLP's 4096-wide layer
at keep 0.3, 58 → 11 GFLOP per refit, and H and B take 2 × 64 MiB → 6 + 20 MiB.

Each entry of H_KK and B_K is the same dot product over the same N design rows as in the full
products, equal up to float32 rounding: a product of another shape may sum in another order, so
the bytes can move (on the 17M MLP the ``--target-top1 0.99`` job's model.onnx stayed the same,
the neuron keep 0.5 + 4 bits job's changed; docs/budget-search.md). diag H is taken from
products of ``DIAG_BLOCK`` columns at a time (the kernel's order of the N-term sums does not depend
on how many columns are multiplied at once: on MKL 2024.2 with 64 or more columns, the pinned
torch's, those values are identical bit for bit). tests/compression/algorithm/test_kept_moments.py
checks the moments and the refit against ``prepare``'s, to float32 rounding.
"""

from __future__ import annotations

import torch

from netshrink.compression.algorithm.compensate import DAMP, Prepared, design_matrix
from netshrink.compression.graph.network import Layer

__all__ = ["DIAG_BLOCK", "prepare_kept"]

DIAG_BLOCK = 128  # columns per product of the diagonal of H (λ)


def gram_diagonal(A: torch.Tensor) -> torch.Tensor:
    """diag(AᵀA) (n,) of A (N, n) from products of ``DIAG_BLOCK`` columns; the last block is the
    last ``DIAG_BLOCK`` columns (overlapping the one before), so that no product is narrower."""
    n = int(A.shape[1])
    if n <= DIAG_BLOCK:
        return torch.diagonal(A.T @ A).clone()  # (n,)
    out = torch.empty(n, dtype=A.dtype, device=A.device)
    for i in range(0, n, DIAG_BLOCK):
        j = min(i, n - DIAG_BLOCK)
        blk = A[:, j : j + DIAG_BLOCK]  # (N, DIAG_BLOCK)
        out[j : j + DIAG_BLOCK] = torch.diagonal(blk.T @ blk)  # (DIAG_BLOCK,)
    return out


def prepare_kept(
    layer: Layer,
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    order: torch.Tensor,
    damp: float = DAMP,
    *,
    y: torch.Tensor | None = None,
) -> Prepared:
    """``Prepared`` whose H is H_KK (m, m) and B is B_K (out, m), rows and columns in ``order`` (the
    kept input columns, then the bias column n_in when the layer has a bias), and whose λ is
    ``prepare``'s (the mean over all n diagonal entries). A dense layer with at most
    ``compensate._ROWS`` rows (one chunk). ``y``: ``dense_output(layer, Z_dense)`` when given."""
    dev = Z.device
    with_bias = layer.bias is not None
    X = design_matrix(layer, Z).to(torch.float32)  # (N, n_in)
    N = int(X.shape[0])
    if y is None:
        W = torch.as_tensor(layer.matrix, dtype=torch.float32, device=dev)  # (out, in)
        y = design_matrix(layer, Z_dense).to(torch.float32) @ W.T  # (N, out)
        if with_bias:
            y += torch.as_tensor(layer.bias, dtype=torch.float32, device=dev)
    cols = order[:-1] if with_bias else order  # (mk,) kept input columns
    a = X.index_select(1, cols)  # (N, mk)
    if with_bias:
        a = torch.cat([a, torch.ones(N, 1, device=dev)], 1)  # (N, m)
    H = (a.T @ a).div_(N)  # (m, m) float32
    B = (y.T @ a).div_(N)  # (out, m) float32
    del a
    diag = gram_diagonal(X)  # (n_in,) the full H's diagonal, undivided
    if with_bias:
        diag = torch.cat([diag, torch.full((1,), float(N), device=dev)])  # Σ 1·1 = N, exact
    diag = diag.div_(N)  # (n,) float32, as diag(H / N)
    lam = damp * max(float(diag.to(torch.float64).mean()), 1e-12)
    return Prepared(H, B, lam)
