"""``compensate: null``'s per-layer rule: keep a layer's refit only where it lowers the layer's refit
objective on fit samples the refit never saw (docs/compensation.md "Default").

A least-squares refit has n_in + 1 unknowns per row; with about as many fit samples or fewer it can
fit them almost exactly whether or not that carries to new inputs (measured on random 784→4096→
4096→10 and 64→8192→8192→10 MLPs: held-out error ×3). So, per layer (derived; the held-back
quarter is the budget search's, search/verification.py):

1. Every 4th row of the layer's fit-split inputs (``HOLD_EVERY``; not the last quarter, since a
   calibration file may be sorted by class) is held back; the refit (``layer_compensated``: the
   mask, then bias, least squares and GPTQ rounding) sees only the other 3/4.
2. The plain draw is the uncompensated one (``layer_compress``: P1's unbiased rule, the kept weights
   rescaled by 1/p, stochastic rounding, the bias as it was: no mean replacement either), from the
   same generator seed as the uncompensated run's draw of this layer, on the whole fit split: it
   fits nothing, and it keeps tiers E, T and P.
3. Both are judged by what the refit minimizes, E‖y − Ŵx̂ − b̂‖² with y = W z + b the dense layer's
   output on the dense input z and x̂ = ẑ the compressed network's input (im2col rows for a conv),
   on the held-back rows only. The refit is kept only if its value is strictly lower; otherwise the
   plain draw ships. With fewer than ``MIN_SAMPLES`` fit samples nothing is held back, and the plain
   draw ships.

The mask itself is scored on the whole fit split (as without the rule); only the refit's values are
fit on the 3/4. Deterministic: fixed rows, seeded generators, no data-dependent randomness.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import torch

from netshrink.compression.algorithm.compensate import Prepared, design_matrix
from netshrink.compression.algorithm.layer_compensated import compress_layer_compensated
from netshrink.compression.algorithm.layer_compress import LayerDraw, compress_layer
from netshrink.compression.algorithm.prune import prune_layer
from netshrink.compression.algorithm.quantize import quantize_matrix
from netshrink.compression.algorithm.scores import LayerStats
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec, QuantizeSpec

__all__ = [
    "HOLD_EVERY",
    "MIN_SAMPLES",
    "compress_layer_held_back",
    "held_back_rows",
    "layer_objective",
    "layer_objectives",
]

HOLD_EVERY = 4  # every 4th fit sample is held back from the refit (search/verification.py's split)
MIN_SAMPLES = 8  # below this there is nothing to hold back: the plain draw ships
_ROWS = 1 << 16  # design-matrix rows per chunk of the objective


def held_back_rows(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(refit rows, held-back rows) of an n-sample fit split: every ``HOLD_EVERY``-th is held back.

    Made once per (n, device) and shared (the budget search asks twice per layer draw, issue 11):
    callers only index with them, never write into them."""
    return _rows(int(n), torch.device(device))


@functools.lru_cache(maxsize=8)
def _rows(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(n, device=device)  # (n,)
    held = idx % HOLD_EVERY == HOLD_EVERY - 1  # (n,) bool
    return idx[~held], idx[held]


def layer_objective(
    layer: Layer, d: LayerDraw, Z: torch.Tensor, Z_dense: torch.Tensor
) -> tuple[float, float]:
    """(E‖y − Ŵx̂ − b̂‖², E‖y‖²) over the design rows of ``Z`` (ẑ) and ``Z_dense`` (z), y = W z + b."""
    errs, energy = layer_objectives(layer, (d,), Z, Z_dense)
    return errs[0], energy


def layer_objectives(
    layer: Layer,
    draws: tuple[LayerDraw, ...],
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
) -> tuple[list[float], float]:
    """``layer_objective`` of several draws on the same rows: the design matrices (im2col for a
    conv) and the dense output y are made once for all of them; each draw's sum runs over the same
    chunks in the same order as alone, so its value is the one ``layer_objective`` gives. ``y``:
    ``compensate.dense_output(layer, Z_dense)`` when the caller has it (one chunk; the same numbers)."""
    return _objectives(layer, [_hat(layer, d, Z.device) for d in draws], Z, Z_dense, y)


def _hat(
    layer: Layer, d: LayerDraw, device: torch.device | None = None
) -> tuple[torch.Tensor, np.ndarray | None]:
    """(Ŵ float32, b̂) of a draw: its compensated bias, else the layer's own."""
    b = d.compressed.bias if d.compressed.bias is not None else layer.bias
    return torch.as_tensor(d.compressed.weight, dtype=torch.float32, device=device), b


def _objectives(
    layer: Layer,
    hats: list[tuple[torch.Tensor, np.ndarray | None]],
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    y: torch.Tensor | None,
) -> tuple[list[float], float]:
    """``layer_objectives`` of (Ŵ float32 (out, *in), b̂ or None) pairs (``layer.bias`` is not implied)."""
    dev = Z.device
    W = torch.as_tensor(layer.matrix, dtype=torch.float32, device=dev)  # (out, in)
    b = None if layer.bias is None else torch.as_tensor(layer.bias, dtype=torch.float32, device=dev)  # (out,)
    mats = []
    for Wd, bh_src in hats:
        Wh = Wd.reshape(layer.n_out, -1)  # (out, in)
        bh = None if bh_src is None else torch.as_tensor(bh_src, dtype=torch.float32, device=dev)  # (out,)
        mats.append((Wh, bh))
    X = design_matrix(layer, Z)  # (N, in)
    N = max(int(X.shape[0]), 1)
    errs = [0.0] * len(hats)
    energy = 0.0
    given = y if y is not None and int(X.shape[0]) <= _ROWS else None
    Xd = design_matrix(layer, Z_dense) if given is None else X  # (N, in); z's rows only where y is made here
    for i in range(0, int(X.shape[0]), _ROWS):
        x = X[i : i + _ROWS].to(torch.float32)  # (r, in)
        if given is not None:
            y = given  # (r, out), the one chunk
        else:
            y = Xd[i : i + _ROWS].to(torch.float32) @ W.T  # (r, out)
            if b is not None:
                y += b
        for j, (Wh, bh) in enumerate(mats):
            yh = x @ Wh.T  # (r, out)
            if bh is not None:
                yh += bh
            errs[j] += float((y - yh).to(torch.float64).square().sum())
        energy += float(y.to(torch.float64).square().sum())
    return [e / N for e in errs], energy / N


def compress_layer_held_back(
    layer: Layer,
    stats: LayerStats | Callable[[], LayerStats],
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    *,
    prune: PruneSpec | None,
    quantize: QuantizeSpec | None,
    keep: float,
    generators: tuple[torch.Generator, torch.Generator],
    sensitivity: np.ndarray | None = None,
    prepared: Prepared | None = None,
    plain_out: list[LayerDraw] | None = None,
    dense_out: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
) -> LayerDraw:
    """The refit (on 3/4 of the rows of ``Z``) or the plain draw, whichever the held-back 1/4 prefers.

    ``generators``: two generators seeded alike (the refit's mask, the plain draw); ``prepared``:
    ``compensate.prepare`` on the refit rows (``Z[refit]``, ``Z_dense[refit]``), when cached.
    The returned draw's ``refit_check`` says which was kept and both held-back objectives.
    ``plain_out``: the plain draw is appended to it (the uncompensated twin's layer, search/twin.py).
    ``dense_out``: ``compensate.dense_output`` of ``Z_dense``'s refit rows and of its held-back rows,
    when the caller has them (the budget search: they depend on the dense input only).
    ``stats``: the statistics of ``Z``, or a function that makes them, called only where they are
    read: by a pruning stage, or by the plain draw drawn whole (the budget search: an unpruned layer
    whose refit wins reads none, issue 11).
    """
    n = int(Z.shape[0])

    def the_stats() -> LayerStats:
        return stats if isinstance(stats, LayerStats) else stats()

    def plain_draw() -> LayerDraw:
        d = compress_layer(
            layer,
            the_stats(),
            prune=prune,
            quantize=quantize,
            keep=keep,
            generator=generators[1],
            sensitivity=sensitivity,
            device=Z.device,
        )
        if plain_out is not None:
            plain_out.append(d)
        return d

    if n < MIN_SAMPLES:
        only = plain_draw()
        only.refit_check = {
            "kept": False,
            "reason": f"fewer than {MIN_SAMPLES} fit samples: nothing to hold back",
        }
        return only
    r, v = held_back_rows(n, Z.device)
    # the refit first, then the plain draw: each has its own generator, so the order changes no
    # number, and the plain draw's Ŵ, codes and Var(t) (2.25x the layer's float32 bytes) are not
    # held through the refit's H, B, Cholesky factor and solves (peak RSS, issue 10)
    refit = compress_layer_compensated(
        layer,
        None if prune is None else the_stats(),
        Z[r],
        Z_dense[r],
        prune=prune,
        quantize=quantize,
        keep=keep,
        generator=generators[0],
        sensitivity=sensitivity,
        prepared=prepared,
        y=None if dense_out is None else dense_out[0],
    )
    Zv, Zdv = Z[v], Z_dense[v]  # (S_v, *in) rows the refit never saw
    y_v = None if dense_out is None else dense_out[1]
    # nobody keeps the plain draw unless it ships: judge its Ŵ alone (``plain_weight``), draw it whole
    # only if it wins (from the same generator state: the same bytes)
    state = generators[1].get_state() if plain_out is None else None
    Wp = None
    if state is not None:
        st = None if prune is None and not isinstance(stats, LayerStats) else the_stats()
        Wp = plain_weight(layer, st, prune, quantize, keep, generators[1], sensitivity, Z.device)
    plain: LayerDraw | None = None
    if Wp is None:
        plain = plain_draw()
        hat_p = _hat(layer, plain, Z.device)
    else:
        hat_p = (Wp, layer.bias)
    (e_refit, e_plain), energy = _objectives(layer, [_hat(layer, refit, Z.device), hat_p], Zv, Zdv, y_v)
    kept = e_refit < e_plain
    if not kept and plain is None:
        assert state is not None and Wp is not None
        generators[1].set_state(state)
        plain = plain_draw()
        if not np.array_equal(plain.compressed.weight.reshape(Wp.shape), Wp.cpu().numpy()):
            raise RuntimeError(f"layer {layer.name!r}: the plain draw's Ŵ is not the one judged")
    check = {
        "kept": kept,
        "refit_samples": int(r.numel()),
        "held_back_samples": int(v.numel()),
        "held_back_objective_refit": e_refit,
        "held_back_objective_plain": e_plain,
        "held_back_relative_refit": _rel(e_refit, energy),
        "held_back_relative_plain": _rel(e_plain, energy),
    }
    out = refit if kept else plain
    assert out is not None
    return dataclasses.replace(out, refit_check=check)


def plain_weight(
    layer: Layer,
    stats: LayerStats | None,
    prune: PruneSpec | None,
    quantize: QuantizeSpec | None,
    keep: float,
    gen: torch.Generator,
    sensitivity: np.ndarray | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """The plain draw's Ŵ (out, in) float32, the same bytes as ``compress_layer``'s from ``gen``
    (the same pruning stage, then ``quantize_matrix(weight_only=True)``), without its Var(t), codes or
    tier E; None where that shortcut is not taken (no randomized quantizer with f = 1, a grouped conv).

    The budget search draws a layer per candidate and the refit almost always wins the held-back
    check (issue 11: 19 of 20 layer draws of bench.budget's MLP search), so the rest of the plain
    draw was made for nothing."""
    q = quantize
    if q is None or q.method != "randomized_greedy" or float(q.fraction) != 1.0:
        return None
    if layer.conv is not None and layer.conv.group != 1:
        return None
    W = torch.as_tensor(layer.matrix, device=device)  # (out, in) float32, no copy on CPU
    col_scale = None
    if prune is not None:
        assert stats is not None, "the pruning stage ranks by the input's statistics"
        by_groups = prune.granularity != "weight"  # W̃ = W's columns scaled: quantized without its copy
        pr = prune_layer(
            layer, stats, prune, keep, gen, sensitivity=sensitivity, device=device, with_weight=not by_groups
        )
        W, col_scale = (W, pr.column_scale) if by_groups else (pr.weight, None)
    # f = 1: no entry is ranked and no tier E made, so quantize_matrix reads no energy (``stats`` None)
    return quantize_matrix(W, None, None, q, gen, weight_only=True, col_scale=col_scale).weight


def _rel(e: float, energy: float) -> float | None:
    return None if energy <= 0 else float(np.sqrt(e / energy))
