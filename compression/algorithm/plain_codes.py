"""A quantized plain draw held as its codes alone, and its Ŵ and Var(t) rebuilt to the same values.

The uncompensated twin (``search/twin.py``) reuses the plain draws of the held-back check
(``layer_held_back.py``) where they do not depend on the layer's input: quantization alone with
f = 1, P1's stochastic rounding (docs/method.md §1 [P1 §3.2, Lemma 8]). Holding each such draw whole
until the twin is measured costs 9 bytes per weight (Ŵ, codes, Var) on top of the later layers'
refits (the 17M MLP's peak RSS rose by 57 MiB); its codes alone cost 1 byte. Neither Ŵ nor Var(t)
needs the generator again:

- Ŵ = codes · step in float32, the product ``quantize_matrix`` stores (one IEEE rounding of the same
  two float32 numbers, in numpy or torch);
- Var(t) = step² u(1 − u) with u the fractional part of W/step: the rounding's variance does not
  depend on which way the draw went. It is computed with ``quantize_matrix``'s float64 operations,
  in the same order and row blocks, then rounded to float32 as there.

tests/compression/algorithm/test_plain_codes.py checks both against ``quantize_matrix``, bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.quantize import _rows
from netshrink.compression.graph.network import Layer

__all__ = ["compact", "restore"]

_EMPTY = np.empty(0, dtype=np.float32)


def compact(d: LayerDraw) -> LayerDraw:
    """``d`` without Ŵ and Var(t) (its codes, scale and scalars stay): ``restore`` rebuilds them."""
    cw = d.compressed
    if cw.codes is None or cw.scale is None or cw.outliers is not None or d.tier_E_A is None:
        raise ValueError(f"layer {cw.layer!r}: only a stochastic rounding with f = 1 is held as codes")
    return dataclasses.replace(d, compressed=dataclasses.replace(cw, weight=_EMPTY), var=_EMPTY)


def restore(layer: Layer, d: LayerDraw) -> LayerDraw:
    """``d`` (from ``compact``) with Ŵ and Var(t) rebuilt from ``layer``'s weight and the codes."""
    cw = d.compressed
    assert cw.codes is not None and cw.scale is not None
    W = torch.as_tensor(layer.matrix)  # (out, in) float32, no copy
    out = W.shape[0]
    s32 = torch.as_tensor(np.broadcast_to(cw.scale, (out,)).copy())[:, None]  # (out, 1) float32 step
    step = s32.to(torch.float64)  # (out, 1): grid_step's exact float32 values, as float64
    safe = torch.where(step > 0, step, torch.ones_like(step))  # (out, 1)
    codes = torch.from_numpy(cw.codes.reshape(out, -1))  # (out, in) int8
    Wq = torch.empty(W.shape, dtype=torch.float32)  # (out, in)
    var = torch.empty(W.shape, dtype=torch.float32)  # (out, in)
    blocks = _rows(W)
    bs = blocks.step
    for r in blocks:
        sl = slice(r, r + bs)
        x = W[sl].to(torch.float64, copy=True).div_(safe[sl])  # (b, in) in grid units
        frac = x.sub_(torch.floor(x))  # (b, in) ∈ [0, 1)
        v = torch.mul(safe[sl] ** 2, frac)  # (b, in) float64 Var(t)
        v.mul_(1.0 - frac)
        var[sl].copy_(v)  # rounded to float32
        Wq[sl].copy_(codes[sl]).mul_(s32[sl])  # float32 codes·step
    shape = layer.weight.shape
    return dataclasses.replace(
        d, compressed=dataclasses.replace(cw, weight=Wq.numpy().reshape(shape)), var=var.numpy()
    )
