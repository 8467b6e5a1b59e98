"""The bits menu's predicted error (``search/quant_menu.py``): the formula, and the former torch
expression's float64 numbers, whatever the block and sub-block sizes (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.quantize import grid_step
from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.search import quant_menu


def test_quant_menu_is_the_variance_weighted_sensitivity(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bits menu's prediction, Σ step²u(1−u)·E‖∂Φ/∂W‖² per width, from one pass over row blocks
    (several blocks here), equals the formula evaluated on the whole matrix."""
    layer = mlp_net.layers[1]
    rng = np.random.default_rng(1)
    sens = Sensitivity(layer.name, rng.uniform(0, 1, layer.weight.shape).astype(np.float32), np.zeros(1), 1)
    monkeypatch.setattr(quant_menu, "QUANT_PRED_BLOCK", 3 * layer.n_in)  # 3 rows per block
    got = quant_menu.quant_preds(layer, (8, 4, 2), "per_row", sens)
    W = torch.as_tensor(layer.matrix)
    for b in (8, 4, 2):
        step = grid_step(W, 2 ** (b - 1) - 1, "per_row")[0].numpy()[:, None]  # (out, 1)
        x = layer.matrix.astype(np.float64) / step
        u = x - np.floor(x)
        assert got[b] == pytest.approx(float((step**2 * u * (1 - u) * sens.weight_sq).sum()), rel=1e-12)
    assert list(got) == [8, 4, 2]


def _former(layer: Layer, widths: tuple[int, ...], scale: str, sens: Sensitivity, block: int) -> dict:
    """The former torch expression, block by block (one torch sum per block, added in order)."""
    W = torch.as_tensor(layer.matrix)
    steps = [grid_step(W, 2 ** (b - 1) - 1, scale)[0] for b in widths]
    safes = [torch.where(st > 0, st, torch.ones_like(st))[:, None] for st in steps]
    wsq = torch.as_tensor(sens.weight_sq.reshape(W.shape))
    rows = max(1, block // max(1, W.shape[1]))
    totals = [0.0] * len(widths)
    for r in range(0, W.shape[0], rows):
        w64 = W[r : r + rows].to(torch.float64)
        s64 = wsq[r : r + rows].to(torch.float64)
        for i, (step, safe) in enumerate(zip(steps, safes, strict=True)):
            x = w64 / safe[r : r + rows]
            u = x - torch.floor(x)
            var = (step[r : r + rows, None] ** 2) * u * (1 - u)
            totals[i] += float((var * s64).sum())
    return dict(zip(widths, totals, strict=True))


@pytest.mark.parametrize("shape", [(37, 300), (130, 64), (5, 2000)])
@pytest.mark.parametrize("scale", ["per_row", "per_layer"])
@pytest.mark.parametrize("sub", [1, 700, 1 << 15])
def test_the_former_torch_numbers_bit_for_bit(
    shape: tuple[int, int], scale: str, sub: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``==`` on the float64 totals against the former expression, with blocks of 4 rows or more and
    sub-blocks of one row, a few rows, or the default; a zero row (step 0: divided by 1) included."""
    rng = np.random.default_rng(sum(shape) + sub)
    W = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    W[2] = 0.0
    layer = Layer("fc", 1, "dense", W, None, "w", None, structured=True)
    sens = Sensitivity("fc", np.abs(rng.standard_normal(shape)).astype(np.float32), np.zeros(1), 1)
    block = 4 * shape[1] + 5
    monkeypatch.setattr(quant_menu, "QUANT_PRED_BLOCK", block)
    monkeypatch.setattr(quant_menu, "SUB", sub)
    assert quant_menu.quant_preds(layer, (8, 4, 2), scale, sens) == _former(
        layer, (8, 4, 2), scale, sens, block
    )
