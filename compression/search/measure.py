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

from netshrink.compression.algorithm.group_prune import group_tier_e
from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.scores import LayerStats, layer_stats
from netshrink.compression.bounds.bounds import TIERS, TierBounds, layer_bounds
from netshrink.compression.bounds.certificate import SigmaBound, sigma_bound
from netshrink.compression.bounds.coupled import coupled_terms
from netshrink.compression.bounds.dag import propagate_dag
from netshrink.compression.bounds.prediction import sum_product
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import OutputError, classification, mean_sq_error, output_error
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.io.array_memo import ArrayMemo
from netshrink.compression.search.greedy import NetworkDraw


@dataclass
class Measurement:
    error: OutputError
    classification: dict[str, float | None] | None
    layer_errors: dict[str, float]  # e_ℓ on the held-out split, after the activation
    bounds: dict[str, TierBounds]  # per layer; empty when the graph is not a covered chain
    end_to_end: dict[str, float | None]  # B_m per tier, on E‖Φ−Φ̂‖²
    sigmas: dict[str, float]  # certified upper bounds on ‖W_ℓ‖_op (what the tiers use)
    phi: np.ndarray  # (S, K) dense logits on the held-out split
    phi_hat: np.ndarray  # (S, K)
    notes: list[str] = field(default_factory=list)
    sigma_bounds: dict[str, SigmaBound] = field(default_factory=dict)

    def sigma_failure_probability(self) -> float:
        """Σ η over the probabilistic σ certificates the bounds used (σ_ℓ and ‖W − Ŵ‖_op), a union bound."""
        certs = [*self.sigma_bounds.values()]
        certs += [tb.delta_bound for tb in self.bounds.values() if tb.delta_bound is not None]
        certs += [tb.coupled.cert for tb in self.bounds.values() if tb.coupled is not None]
        return float(sum(c.failure_probability for c in certs))


_SIGMA_CACHE: ArrayMemo[SigmaBound] = ArrayMemo()


def layer_sigma(net: Network, name: str, hw: tuple[int, int] | None) -> SigmaBound:
    """The certified σ of a dense/conv layer's weight, computed once per weight array (the budget
    search and the baselines measure many draws of the same network)."""
    return _SIGMA_CACHE.get(net.layer(name).weight, hw, lambda: sigma_bound(net.layer(name), hw))


def tier_e(
    draw: LayerDraw, stats: LayerStats, layer: Layer | None = None, Z: torch.Tensor | None = None
) -> float | None:
    """Tier E's A_ℓ for a draw, re-evaluated on other inputs (docs/method.md §3, tier E).

    Independent entries: P · Σ_ij Var(t_ij) E_x[ẑ_j²]; groups sharing a draw: Σ_g τ²_g E_x‖W_g ẑ_g‖²,
    plus the fixed-count covariance term of ``group_prune.group_tier_e`` (needs ``layer`` and ``Z``).
    """
    if draw.tier_E_A is None:
        return None
    a = stats.positions * sum_product(draw.var.reshape(draw.var.shape[0], -1), stats.energy)
    if draw.group_tau2 is not None and stats.group_energy is not None:
        u_tau2 = np.asarray(draw.group_tau2, dtype=np.float64)
        if draw.group_joint and layer is not None and Z is not None:
            a += group_tier_e(layer, stats.group_energy, u_tau2, Z, draw.group_joint)
        else:
            a += float((u_tau2 * stats.group_energy).sum())
    return a


def _input_hw(z: torch.Tensor) -> tuple[int, int] | None:
    return (int(z.shape[-2]), int(z.shape[-1])) if z.dim() == 4 else None


def measure(
    net: Network,
    ex: Executor,
    nd: NetworkDraw,
    X: torch.Tensor,
    labels: np.ndarray | None,
    *,
    top1: bool = False,
) -> Measurement:
    """Errors of ``nd`` on X (held-out), per layer and end to end, with every bound tier. Top-1
    agreement (``classification``) for a classifier's tail, with labels, or when ``top1`` asks
    (a top-1 target: ``CompressSpec.top1_target``)."""
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
    cls = classification(phi, phi_hat, labels) if net.is_classifier or labels is not None or top1 else None
    m = Measurement(err, cls, layer_errors, {}, dict.fromkeys(TIERS), {}, phi, phi_hat)
    if net.support != "full":
        m.notes.append("bounds not covered: the graph is not a chain of supported layers (generic support)")
        return m
    prev: TierBounds | None = None
    for layer in net.layers:
        z_in = comp[layer.input]
        hw = _input_hw(z_in)
        cert = layer_sigma(net, layer.name, hw)
        sigma = cert.value
        m.sigmas[layer.name] = sigma
        m.sigma_bounds[layer.name] = cert
        draw = nd.layers.get(layer.name)
        stats = None
        coupled = None
        if draw is not None:
            stats = layer_stats(layer, z_in, groups=draw.group_tau2 is not None)
            draw = dataclasses.replace(draw, tier_E_A=tier_e(draw, stats, layer, z_in))
            if draw.coupled and draw.tier_E_A is not None:
                coupled = coupled_terms(layer, draw, stats, dense[layer.input], hw)
        measured_prev = mean_sq_error(dense[layer.input], z_in)
        tb = layer_bounds(
            layer,
            stats,
            draw,
            sigma=sigma,
            measured_prev=measured_prev,
            prev=None if net.dag else prev,
            input_hw=hw,
            sigma_cert=cert,
            coupled=coupled,
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
    coupled = {name: tb.coupled for name, tb in m.bounds.items() if tb.coupled is not None}
    B = propagate_dag(net, terms, TIERS, coupled=coupled)
    for layer in net.layers:
        tb = m.bounds[layer.name]
        for t in TIERS:
            tv = tb.tiers[t]
            tv.cumulative = B[layer.output][t]
            if tv.cumulative is None and tv.reason is None:
                tv.reason = "a layer upstream is not covered in this tier"
    m.end_to_end = {t: B[net.logits][t] for t in TIERS}
