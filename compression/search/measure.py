"""Measure a compressed network on the held-out split and propagate the bound tiers.

Ref: docs/method.md §2 (errors), §3 (tiers E/T/P/W, step and cumulative bounds). The per-layer
statistics behind the bounds are recomputed on the same held-out inputs as the measured errors,
so "measured vs bound" compares like with like.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.scores import LayerStats, layer_stats
from netshrink.compression.bounds.bounds import TIERS, TierBounds, layer_bounds
from netshrink.compression.bounds.dag import propagate_dag
from netshrink.compression.bounds.grouped import layer_op_norm
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import OutputError, classification, mean_sq_error, output_error
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw


@dataclass
class Measurement:
    error: OutputError
    classification: dict[str, float | None] | None
    layer_errors: dict[str, float]  # e_ℓ on the held-out split, after the activation
    bounds: dict[str, TierBounds]  # per layer; empty when the graph is not a covered chain
    end_to_end: dict[str, float | None]  # B_m per tier, on E‖Φ−Φ̂‖²
    sigmas: dict[str, float]
    phi: np.ndarray  # (S, K) dense logits on the held-out split
    phi_hat: np.ndarray  # (S, K)
    notes: list[str] = field(default_factory=list)


def tier_e(draw: LayerDraw, stats: LayerStats) -> float | None:
    """Tier E's A_ℓ for a draw, re-evaluated on other inputs (docs/method.md §3, tier E).

    Independent entries: P · Σ_ij Var(t_ij) E_x[ẑ_j²]; groups sharing a draw: Σ_g τ²_g E_x‖W_g ẑ_g‖².
    """
    if draw.tier_E_A is None:
        return None
    a = stats.positions * float((draw.var.reshape(draw.var.shape[0], -1) * stats.energy).sum())
    if draw.group_tau2 is not None and stats.group_energy is not None:
        a += float((np.asarray(draw.group_tau2, dtype=np.float64) * stats.group_energy).sum())
    return a


def _input_hw(z: torch.Tensor) -> tuple[int, int] | None:
    return (int(z.shape[-2]), int(z.shape[-1])) if z.dim() == 4 else None


def measure(
    net: Network, ex: Executor, nd: NetworkDraw, X: torch.Tensor, labels: np.ndarray | None
) -> Measurement:
    """Errors of ``nd`` on X (held-out), per layer and end to end, with every bound tier."""
    names = [n for layer in net.layers for n in (layer.input, layer.output)]
    with torch.no_grad():
        dense = ex.run(X, capture=names)
        comp = ex.run(X, overrides=nd.overrides(ex.device), capture=names)
    phi = dense[net.logits].double().cpu().numpy().reshape(X.shape[0], -1)  # (S, K)
    phi_hat = comp[net.logits].double().cpu().numpy().reshape(X.shape[0], -1)  # (S, K)
    err = output_error(phi, phi_hat)
    layer_errors = {
        layer.name: mean_sq_error(dense[layer.output], comp[layer.output]) for layer in net.layers
    }
    cls = classification(phi, phi_hat, labels) if net.is_classifier or labels is not None else None
    m = Measurement(err, cls, layer_errors, {}, dict.fromkeys(TIERS), {}, phi, phi_hat)
    if net.support != "full":
        m.notes.append("bounds not covered: the graph is not a chain of supported layers (generic support)")
        return m
    prev: TierBounds | None = None
    for layer in net.layers:
        z_in = comp[layer.input]
        hw = _input_hw(z_in)
        sigma = layer_op_norm(layer, hw)
        m.sigmas[layer.name] = sigma
        draw = nd.layers.get(layer.name)
        stats = None
        if draw is not None:
            stats = layer_stats(layer, z_in, groups=draw.group_tau2 is not None)
            draw = dataclasses.replace(draw, tier_E_A=tier_e(draw, stats))
        measured_prev = mean_sq_error(dense[layer.input], z_in)
        tb = layer_bounds(
            layer,
            stats,
            draw,
            sigma=sigma,
            measured_prev=measured_prev,
            prev=None if net.dag else prev,
            input_hw=hw,
        )
        m.bounds[layer.name] = tb
        prev = tb
    if net.dag:
        _dag_cumulative(net, m)
    elif prev is not None:
        m.end_to_end = {t: prev.tiers[t].cumulative for t in TIERS}
    return m


def _dag_cumulative(net: Network, m: Measurement) -> None:
    """Replace the chain recurrence's cumulative bounds by the DAG propagation (docs/bounds-dag.md)."""
    terms = {name: (m.sigmas[name], {t: tb.tiers[t].A for t in TIERS}) for name, tb in m.bounds.items()}
    B = propagate_dag(net, terms, TIERS)
    for layer in net.layers:
        tb = m.bounds[layer.name]
        for t in TIERS:
            tv = tb.tiers[t]
            tv.cumulative = B[layer.output][t]
            if tv.cumulative is None and tv.reason is None:
                tv.reason = "a layer upstream is not covered in this tier"
    m.end_to_end = {t: B[net.logits][t] for t in TIERS}
