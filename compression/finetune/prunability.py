"""How far a model's neurons/channels can be pruned by norm before accuracy drops by > tol points.

[P3] Wan et al. 2024 prune a fine-tuned network's hidden units by norm and report the largest
pruned fraction whose accuracy stays within a tolerance; docs/method.md §4.
Here, for a fraction r, every structurally prunable layer ℓ (``Layer.structured``: its input units
are neurons/channels of the layer before it) loses the ⌊r·G_ℓ⌋ input groups with the smallest
Frobenius norm ‖W_ℓ[:, g]‖ (a group is one input column, the H·W column block behind a Flatten, or one
input channel of a conv). Zeroing group g removes upstream unit g exactly (its outgoing weights are
gone), so accuracy is that of the physically smaller network. Layer 1's inputs are never pruned.

The prunable fraction is the largest grid r such that every grid fraction up to r keeps accuracy
≥ (unpruned accuracy − tol): the first failure ends the scan (a conservative reading of "largest").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from netshrink.compression.algorithm.scores import column_groups
from netshrink.compression.finetune.train import CancelFn, Model, Weights, accuracy, stop_if_cancelled
from netshrink.compression.graph.network import Network

FRACTIONS = tuple(float(r) for r in np.round(np.arange(0.0, 1.0, 0.025), 3))  # 0, 0.025, ..., 0.975


def structured_layers(net: Network) -> list[str]:
    return [layer.name for layer in net.layers if layer.structured and layer.producer is not None]


def pruned(net: Network, w: Weights, r: float) -> Weights:
    """``w`` with the ⌊r·G⌋ smallest-norm input groups of every structured layer zeroed."""
    out = Weights(weight=dict(w.weight), bias=w.bias)
    for name in structured_layers(net):
        layer = net.layer(name)
        W = w.weight[name]
        M = W.reshape(W.shape[0], -1)  # (n_out, n_in) im2col order
        gid = column_groups(layer)  # (n_in,)
        n_groups = int(gid[-1]) + 1
        k = int(np.floor(r * n_groups + 1e-9))
        if k == 0:
            continue
        norms = np.bincount(gid, weights=(M.astype(np.float64) ** 2).sum(axis=0), minlength=n_groups)  # (G,)
        drop = np.argsort(norms, kind="stable")[:k]  # (k,)
        keep = np.ones(n_groups, dtype=np.float32)
        keep[drop] = 0.0
        out.weight[name] = (M * keep[gid][None, :]).reshape(W.shape)
    return out


def prune_curve(
    net: Network,
    model_for: Any,
    w: Weights,
    X: torch.Tensor,
    y: torch.Tensor,
    tol: float,
    should_cancel: CancelFn | None = None,
) -> dict[str, Any]:
    """Accuracy at every grid fraction and the prunable fraction at ≤ ``tol`` points of drop.

    ``model_for(weights) -> Model`` builds the evaluator; X: (V, *input_shape), y: (V,).
    ``should_cancel`` is asked before every fraction (``CancelledError`` when it says so).
    """
    layers = structured_layers(net)
    if not layers:
        return {
            "fractions": [],
            "accuracy": [],
            "prunable_fraction": None,
            "reason": "no layer has structurally prunable inputs (neurons/channels)",
            "tolerance_points": tol,
        }
    accs: list[float] = []
    base = None
    best = 0.0
    failed = False
    for r in FRACTIONS:
        stop_if_cancelled(should_cancel)
        model: Model = model_for(pruned(net, w, r))
        acc = accuracy(model, X, y)
        accs.append(acc)
        if base is None:
            base = acc
        if not failed and acc >= base - tol - 1e-9:
            best = r
        else:
            failed = True
    return {
        "fractions": list(FRACTIONS),
        "accuracy": accs,
        "prunable_fraction": best,
        "tolerance_points": tol,
        "layers": layers,
    }
