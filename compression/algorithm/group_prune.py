"""Channel pruning by dependency groups: one Bernoulli draw per group, applied to every layer that
reads the group (docs/method.md §1 "Structured pruning", P1 §3.2 Algorithm 1's structured rule;
the groups are Torch-Pruning's DepGraph groups, ``graph/depgroups.py``).

Per channel space (the groups that live on the same tensors, e.g. a ResNet stage's residual stream)
P1's rule runs as for one layer: (f, p) from ``choose_fraction`` on the group scores, the f·G
lowest-score groups are randomized (kept and scaled by 1/p with probability p, else dropped), the
rest stay. A group's score is the sum over its readers ℓ of E_x‖W_ℓ,g ẑ_g‖² (or of the output-aware
E_x‖J W_ℓ,g ẑ_g‖²). Every reader's columns of a group get the same factor, so the deleted channel
is zero in every reader and physically removing it (rows of its producers, filters of depthwise
convs, BN entries, Concat offsets) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from netshrink.compression.algorithm.fraction import choose_fraction
from netshrink.compression.algorithm.prune import PruneResult, greedy_order
from netshrink.compression.algorithm.rng import uniform
from netshrink.compression.algorithm.scores import LayerStats, column_groups
from netshrink.compression.graph.network import Layer

__all__ = ["GroupDraw", "draw_groups", "prune_units"]


@dataclass
class GroupDraw:
    """One draw of every dependency group."""

    scale: np.ndarray  # (G,) 1 (kept), 1/p (randomized, survived) or 0 (dropped)
    tau2: np.ndarray  # (G,) τ² = (1−p)/p of randomized groups, 0 elsewhere
    dropped: np.ndarray  # (G,) bool
    f: np.ndarray  # (G,) the f of the group's space
    p: np.ndarray  # (G,) the p of the group's space (1 when nothing is randomized)


def draw_groups(
    spaces: list[np.ndarray],
    scores: np.ndarray,
    keeps: list[float],
    fraction: float | str,
    gen: torch.Generator,
    method: str = "randomized_greedy",
) -> GroupDraw:
    """P1's structured rule per space; ``spaces`` lists the group ids of each space, ``keeps`` its κ.
    The deterministic baselines (``magnitude``/``obd``: the caller passes the matching scores) drop
    the G − round(κG) lowest-score groups of each space, without rescaling."""
    G = scores.size
    scale, tau2 = np.ones(G), np.zeros(G)
    dropped = np.zeros(G, dtype=bool)
    fs, ps = np.zeros(G), np.ones(G)
    for idx, keep in zip(spaces, keeps, strict=True):
        if keep >= 1.0 or idx.size == 0:
            continue
        if method != "randomized_greedy":
            n_drop = idx.size - round(keep * idx.size)
            sel = idx[greedy_order(scores[idx])[:n_drop]]
            scale[sel], dropped[sel] = 0.0, True
            continue
        f, p, m = choose_fraction(scores[idx], keep, fraction=fraction)  # type: ignore[arg-type]
        sel = idx[greedy_order(scores[idx])[:m]]
        survive = uniform(gen, sel.size, "cpu").numpy() < p  # (m,)
        scale[sel] = np.where(survive, 1.0 / p, 0.0)
        tau2[sel] = (1.0 - p) / p
        dropped[sel] = ~survive
        fs[idx], ps[idx] = f, p
    return GroupDraw(scale, tau2, dropped, fs, ps)


def prune_units(
    layer: Layer, stats: LayerStats, units: np.ndarray, gd: GroupDraw, device: str | torch.device
) -> PruneResult:
    """Apply the group draw to ``layer``'s input units (``units``: (n_units,) group id or −1).

    Tier E (exact, given ẑ): Σ_u τ²_{g(u)} E_x‖W_u ẑ_u‖², with the unit energies of ``stats``.
    """
    W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=device)  # (out, in)
    known = units >= 0
    u_scale = np.where(known, gd.scale[np.maximum(units, 0)], 1.0)  # (n_units,)
    u_tau2 = np.where(known, gd.tau2[np.maximum(units, 0)], 0.0)  # (n_units,)
    gid = column_groups(layer)  # (n_in,) unit of each column
    Wt = W * torch.as_tensor(u_scale[gid], dtype=torch.float64, device=device)[None, :]  # (out, in)
    assert stats.group_energy is not None, "group pruning needs layer_stats(..., groups=True)"
    drop = np.flatnonzero(known & gd.dropped[np.maximum(units, 0)]).astype(np.int64)
    rand = u_tau2 > 0
    tau2 = float(u_tau2.max()) if rand.any() else None
    p = float(gd.p[units[rand]].min()) if rand.any() else None
    return PruneResult(
        weight=Wt,
        var=torch.zeros_like(W),
        group_tau2=u_tau2,
        tier_E_A=float((u_tau2 * stats.group_energy).sum()),
        f=float(rand.mean()),
        p=p,
        m=int(rand.sum()),
        tau2=tau2,
        expected_keep=float(np.mean(np.where(rand, gd.p[np.maximum(units, 0)], 1.0))),
        realized_keep=1.0 - drop.size / max(units.size, 1),
        dropped_groups=drop,
        from_greedy_sort=False,  # the set was chosen from scores summed over the group's readers
    )
