"""The budget search's bits menu: the predicted error of stochastic rounding at each bit width
(docs/budget-search.md; docs/method.md §3 "A prediction that is not a bound").

For a layer W (out, in) and each width b, Σ_ij Var(t_ij)·E‖∂Φ/∂W_ij‖² with Var(t) = step²u(1−u),
u = frac(w/step), step = ``grid_step`` on the b-bit grid (P1 Lemma 8's variance). Float64, summed in
row blocks of ``QUANT_PRED_BLOCK`` entries (each block's sum in torch, added in order), so that no
full-size float64 copy is held (issue 10). Within a block the elementwise terms are made ``SUB``
entries at a time in numpy (one thread, buffers that stay in cache, no 8 MiB temporaries served by
mmap), with the same IEEE operations in the same order as the former torch expression
``(step**2 * u * (1 - u)) * s`` (division, floor, subtraction, products), written into the block
before its one torch sum: the same float64 numbers (tests/compression/search/test_quant_menu.py
compares them with ``==``). On the 17M MLP's 4096×4096 layer: about 4.5 → 1.2 CPU s for the three
widths (loaded 2-core machine, 00:28 UTC).
"""

from __future__ import annotations

import numpy as np
import torch

from netshrink.compression.algorithm.quantize import grid_step
from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.graph.network import Layer

__all__ = ["QUANT_PRED_BLOCK", "SUB", "quant_preds"]

QUANT_PRED_BLOCK = 1 << 20  # entries per float64 row block (one torch sum each)
SUB = 1 << 15  # entries per numpy sub-block of the elementwise terms (256 KiB of float64)


def quant_preds(
    layer: Layer, widths: tuple[int, ...], scale: str, sens: Sensitivity
) -> dict[int | None, float]:
    """Σ_ij Var(t_ij)·E‖∂Φ/∂W_ij‖² for stochastic rounding on each b-bit grid (Var = step²u(1−u))."""
    W = torch.as_tensor(layer.matrix)  # (out, in) float32, no copy on CPU
    steps = [grid_step(W, 2 ** (b - 1) - 1, scale)[0] for b in widths]  # (out,) float64 each
    safes = [torch.where(st > 0, st, torch.ones_like(st))[:, None].numpy() for st in steps]  # (out, 1)
    step2 = [(st[:, None] ** 2).numpy() for st in steps]  # (out, 1) step², as torch squared it
    Wn = np.asarray(layer.matrix)  # (out, in) float32
    wsq = np.asarray(sens.weight_sq).reshape(Wn.shape)  # (out, in) float32
    n_out, n_in = Wn.shape
    rows = max(1, QUANT_PRED_BLOCK // max(1, n_in))
    sub = max(1, SUB // max(1, n_in))  # rows per sub-block
    V = torch.empty(min(rows, n_out), n_in, dtype=torch.float64)  # (b, in) one block's terms
    Vn = V.numpy()  # the same memory
    X, T, S = (np.empty((min(sub, n_out), n_in)) for _ in range(3))  # (b', in) float64 buffers
    totals = [0.0] * len(widths)
    for r in range(0, n_out, rows):
        e = min(r + rows, n_out)
        for i in range(len(widths)):
            for q in range(r, e, sub):
                qe = min(q + sub, e)
                x, t, s64 = X[: qe - q], T[: qe - q], S[: qe - q]
                np.divide(Wn[q:qe], safes[i][q:qe], out=x, dtype=np.float64)  # w / step
                np.floor(x, out=t)
                np.subtract(x, t, out=x)  # u = x − floor(x)
                np.subtract(1.0, x, out=t)  # 1 − u
                np.multiply(step2[i][q:qe], x, out=x)  # step²·u
                np.multiply(x, t, out=x)  # step²·u·(1 − u) = Var(t)
                s64[...] = wsq[q:qe]  # float64
                np.multiply(x, s64, out=Vn[q - r : qe - r])  # Var(t)·E‖∂Φ/∂W‖²
            totals[i] += float(V[: e - r].sum())  # the block's sum, as before
    return {b: v for b, v in zip(widths, totals, strict=True)}
