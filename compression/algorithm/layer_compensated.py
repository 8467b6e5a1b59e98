"""One layer, one draw, with error compensation: the randomized mask, then the refit.

Ref: docs/compensation.md. The pruning stage draws its mask exactly as P1's rule
does (``prune.prune_layer``: the m lowest-score units/entries, each kept with probability p), so
best-of-R still chooses between masks. The kept weights are then NOT rescaled by 1/p: they, the
bias, and (when quantizing) the rounding are refit by ``compensate.compensate_layer`` against the
dense layer's output on the fit split. The result is deterministic given the mask and is no longer
unbiased, so only tier W applies to it (docs/compensation.md "Which bound still holds").
"""

from __future__ import annotations

import numpy as np
import torch

from netshrink.compression.algorithm.compensate import Prepared, compensate_layer
from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.prune import prune_layer
from netshrink.compression.algorithm.scores import LayerStats, column_groups
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec, QuantizeSpec

__all__ = ["compress_layer_compensated"]


def compress_layer_compensated(
    layer: Layer,
    stats: LayerStats | None,
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    *,
    prune: PruneSpec | None,
    quantize: QuantizeSpec | None,
    keep: float,
    generator: torch.Generator,
    sensitivity: np.ndarray | None = None,
    prepared: Prepared | None = None,
    y: torch.Tensor | None = None,
) -> LayerDraw:
    """Draw the mask (P1's rule), then refit on the fit split.

    ``Z``: ẑ (the compressed upstream's output), ``Z_dense``: z (the dense one's), both (S, *in).
    ``stats``: those of ``Z``, read by the pruning stage only (None without one). ``prepared``:
    ``compensate.prepare(layer, Z, Z_dense)`` when the caller has it cached; ``y``:
    ``compensate.dense_output(layer, Z_dense)`` when the caller has that (the same numbers).
    """
    kept_t: torch.Tensor | None = None
    first: np.ndarray | None = None
    f = p = tau2 = None
    exp_keep = real_keep = 1.0
    n_rand = 0
    dropped = None
    if prune is not None:
        assert stats is not None, "the mask is ranked by the input's statistics"
        by_weight = prune.granularity == "weight"  # groups: the dropped ones are the mask, W̃ unread
        pr = prune_layer(
            layer,
            stats,
            prune,
            keep,
            generator,
            sensitivity=sensitivity,
            device=Z.device,
            with_weight=by_weight,
        )
        f, p, tau2, exp_keep, real_keep, n_rand = (
            pr.f,
            pr.p,
            pr.tau2,
            pr.expected_keep,
            pr.realized_keep,
            pr.m,
        )
        if prune.granularity == "weight":
            kept_t = pr.weight != 0  # (out, in)
        else:
            dropped = pr.dropped_groups
            gid = column_groups(layer)  # (n_in,)
            first = np.flatnonzero(np.isin(gid, np.asarray(dropped, np.int64)))
            kept_t = torch.ones(layer.n_out, layer.n_in, dtype=torch.bool, device=Z.device)
            kept_t[:, torch.as_tensor(first, device=Z.device)] = False
    c = compensate_layer(
        layer, Z, Z_dense, kept=kept_t, first=first, quantize=quantize, prepared=prepared, y=y
    )
    shape = layer.weight.shape
    cw = CompressedWeight(
        layer=layer.name,
        weight=c.weight.cpu().numpy().reshape(shape),
        codes=None if c.codes is None else c.codes.reshape(shape),
        scale=c.scale,
        bits=None if quantize is None else quantize.width,
        outliers=None,
        dropped_inputs=dropped,
        bias=c.bias,
    )
    return LayerDraw(
        compressed=cw,
        var=np.zeros((layer.n_out, layer.n_in), dtype=np.float32),
        group_tau2=None,
        tier_E_A=None,
        f=f,
        p=p,
        k=None if quantize is None else quantize.levels,
        tau2=tau2,
        expected_keep=exp_keep,
        realized_keep=real_keep,
        n_randomized=n_rand,
        from_greedy_sort=sensitivity is None,
        quant_fraction=None if quantize is None else 1.0,
        M=c.M,
        granularity="weight" if prune is None else prune.granularity,
        compensated=True,
    )
