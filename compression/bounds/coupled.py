"""The coupled rule: the step bound of a layer that reads channel groups whose draw also reaches its
input (a residual stream read by several blocks), docs/bounds-dag.md "Coupled groups" (derived).

Write s for the group scales (E s = 1; a fixed-count draw per channel space, ``group_prune.py``),
W_s = W·diag(s) on the layer's input units, u the DENSE input and û the compressed one. For every
draw and input

    W_s û − W u = W_s (û − u) + (W_s − W) u,

and u does not depend on the draw, so E_h‖(W_s − W) u‖² = A_dense is tier E evaluated on the dense
input (Var τ², Cov −τ²/(m−1) within a space). û does depend on s (the same groups were read
upstream), so no cross term can be dropped; Minkowski's inequality in L²(h, x) gives

    √E‖W_s û − W u‖² ≤ σ̄ √B_u + √A_dense,   σ̄ = ‖W·diag(s̄)‖_op ≥ sup_s ‖W_s‖_op,

with s̄ = 1/p on randomized units and 1 elsewhere (every draw is diag(s̄) times a 0/1 mask, and
zeroing columns cannot raise an operator norm). A quantization stage drawn after the groups, from
its own generator, is zero-mean given (s, û), so its tier-E term A_q (on û) adds squared:

    B_v = (σ̄ √B_u + √A_dense)² + A_q.

Tier T replaces A_dense and A_q by their tier-T upper bounds (dense and compressed inputs); tier P is
not reported for group draws (``bounds.tier_P``); tier W keeps its per-draw root form, which never
needed independence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from netshrink.compression.algorithm.group_prune import group_tier_e
from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.scores import LayerStats, column_groups, layer_stats
from netshrink.compression.bounds.certificate import SigmaBound, sigma_bound
from netshrink.compression.bounds.prediction import sum_product
from netshrink.compression.graph.network import Layer

__all__ = ["CoupledTerms", "coupled_terms", "propagate_coupled"]


@dataclass
class CoupledTerms:
    """The coupled rule's inputs for one layer (module docstring)."""

    sigma_bar: float  # certified ‖W·diag(s̄)‖_op
    A: dict[str, float | None]  # A_dense per tier (E, T)
    fresh: dict[str, float | None]  # A_q per tier: the zero-mean stage drawn after the groups
    cert: SigmaBound


def propagate_coupled(L: float, terms: CoupledTerms, tier: str, prev: float | None) -> float | None:
    """L²((σ̄ √prev + √A_dense)² + A_q) for tiers E and T (None when not covered)."""
    A, fresh = terms.A.get(tier), terms.fresh.get(tier)
    if A is None or fresh is None or prev is None:
        return None
    return L * L * ((terms.sigma_bar * np.sqrt(max(prev, 0.0)) + np.sqrt(max(A, 0.0))) ** 2 + fresh)


def coupled_terms(
    layer: Layer,
    draw: LayerDraw,
    stats_hat: LayerStats,
    dense_in: torch.Tensor,
    input_hw: tuple[int, int] | None,
) -> CoupledTerms:
    """σ̄, A_dense (tiers E, T, on ``dense_in``: (S, C, H, W) or (S, n_in)) and A_q (on ẑ)."""
    from netshrink.compression.bounds.bounds import tier_T  # bounds imports this module

    assert draw.group_tau2 is not None
    u_tau2 = np.asarray(draw.group_tau2, dtype=np.float64)  # (n_units,)
    stats_dense = layer_stats(layer, dense_in, groups=True)
    assert stats_dense.group_energy is not None
    a_dense = group_tier_e(layer, stats_dense.group_energy, u_tau2, dense_in, draw.group_joint or [])
    a_q = stats_hat.positions * sum_product(draw.var, stats_hat.energy)  # var: (out, in), as the matrix
    prune_only = dataclasses.replace(draw, M=None)  # no quantization grid: tier T's quantization term is 0
    quant_only = dataclasses.replace(draw, tau2=None)  # no pruning τ²: tier T's pruning term is 0
    t_dense = tier_T(layer, prune_only, stats_dense)
    t_q = tier_T(layer, quant_only, stats_hat)  # 0 when no quantization was drawn
    s_bar = 1.0 + u_tau2  # (n_units,): 1/p = 1 + τ² on randomized units, 1 (τ² = 0) elsewhere
    W_bar = layer.matrix * s_bar[column_groups(layer)][None, :]  # (out, in) float64: float32 widened exactly
    cert = sigma_bound(layer, input_hw, weight=W_bar.reshape(layer.weight.shape))
    return CoupledTerms(cert.value, {"E": a_dense, "T": t_dense}, {"E": a_q, "T": t_q}, cert)
