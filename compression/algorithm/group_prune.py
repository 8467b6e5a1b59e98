"""Channel pruning by dependency groups: one draw per group, applied to every layer that reads the
group (docs/method.md §1 "Structured pruning", P1 §3.2 Algorithm 1's structured rule;
the groups are Torch-Pruning's DepGraph groups, ``graph/depgroups.py``).

Per channel space (the groups that live on the same tensors, e.g. a ResNet stage's residual stream)
P1's rule runs as for one layer: (f, p) from ``choose_fraction`` on the group scores, the m = f·G
lowest-score groups are randomized, the rest stay. The randomized groups are drawn **with a fixed
count** (derived, docs/bounds-dag.md "Fixed-count draws"): exactly d = G − max(1, ⌊κG + ½⌋) of the
m are dropped (a space always keeps one channel: an empty one no export can hold), a uniformly
random subset, and the k = m − d survivors are scaled by m/k = 1/p. Each group still survives with
probability p = k/m and E[scale] = 1 (unbiased), the space keeps exactly G − d channels (κ is the
realized fraction up to rounding, not only its expectation), and two randomized groups of one space
have Cov(s_g, s_h) = −τ²/(m−1), τ² = (1−p)/p = d/k.
A group's score is the sum over its readers ℓ of E_x‖W_ℓ,g ẑ_g‖² (or of the output-aware
E_x‖J W_ℓ,g ẑ_g‖²). Every reader's columns of a group get the same factor, so the deleted channel
is zero in every reader and physically removing it (rows of its producers, filters of depthwise
convs, BN entries, Concat offsets) changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netshrink.compression.algorithm.fraction import choose_fraction
from netshrink.compression.algorithm.prune import PruneResult, greedy_order
from netshrink.compression.algorithm.rng import uniform
from netshrink.compression.algorithm.scores import LayerStats, column_groups, pad_input
from netshrink.compression.graph.network import Layer

__all__ = ["GroupDraw", "Joint", "draw_groups", "group_tier_e", "joint_energy", "joint_terms", "prune_units"]

Joint = list[tuple[np.ndarray, float]]  # per randomized space: (its units in a layer, τ²/(m−1))


@dataclass
class GroupDraw:
    """One draw of every dependency group."""

    scale: np.ndarray  # (G,) 1 (kept), 1/p (randomized, survived) or 0 (dropped)
    tau2: np.ndarray  # (G,) τ² = (1−p)/p of randomized groups, 0 elsewhere
    dropped: np.ndarray  # (G,) bool
    f: np.ndarray  # (G,) the f of the group's space
    p: np.ndarray  # (G,) the p of the group's space (1 when nothing is randomized)
    space: np.ndarray  # (G,) space id of a randomized group, −1 elsewhere
    m: np.ndarray  # (G,) randomized groups in the group's space (0 when not randomized)


def draw_groups(
    spaces: list[np.ndarray],
    scores: np.ndarray,
    keeps: list[float],
    fraction: float | str,
    gen: torch.Generator,
    method: str = "randomized_greedy",
) -> GroupDraw:
    """P1's structured rule per space with a fixed count (module docstring); ``spaces`` lists the
    group ids of each space, ``keeps`` its κ. The deterministic baselines (``magnitude``/``obd``: the
    caller passes the matching scores) drop the G − max(1, ⌊κG + ½⌋) lowest-score groups of each space,
    without rescaling."""
    G = scores.size
    scale, tau2 = np.ones(G), np.zeros(G)
    dropped = np.zeros(G, dtype=bool)
    fs, ps = np.zeros(G), np.ones(G)
    space, ms = np.full(G, -1, dtype=np.int64), np.zeros(G, dtype=np.int64)
    for s_id, (idx, keep) in enumerate(zip(spaces, keeps, strict=True)):
        if keep >= 1.0 or idx.size == 0:
            continue
        kept = max(1, math.floor(keep * idx.size + 0.5))  # ⌊κG + ½⌋, and never 0: no space empties
        if method != "randomized_greedy":
            n_drop = idx.size - kept
            sel = idx[greedy_order(scores[idx])[:n_drop]]
            scale[sel], dropped[sel] = 0.0, True
            continue
        d = idx.size - kept  # exactly this many dropped
        if d == 0:
            continue
        f, _, m = choose_fraction(scores[idx], 1.0 - d / idx.size, fraction=fraction)  # type: ignore[arg-type]
        if m <= d:  # κ = 1 − d/G in floating point can put (1 − κ)G just below d, and with all-zero
            m = d + 1  # scores (E(m) = 0 everywhere) the first m > (1 − κ)G was d itself: k = 0
            f = m / idx.size
        k = m - d  # survivors among the m randomized, at least one
        p = k / m
        sel = idx[greedy_order(scores[idx])[:m]]
        ranks = np.argsort(uniform(gen, m, "cpu").numpy(), kind="stable")  # a uniform random permutation
        survive = np.zeros(m, dtype=bool)
        survive[ranks[:k]] = True  # a uniformly random k-subset of the m
        scale[sel] = np.where(survive, 1.0 / p, 0.0)
        tau2[sel] = (1.0 - p) / p
        dropped[sel] = ~survive
        fs[idx], ps[idx] = f, p
        space[sel], ms[sel] = s_id, m
    return GroupDraw(scale, tau2, dropped, fs, ps, space, ms)


def joint_terms(units: np.ndarray, gd: GroupDraw) -> Joint:
    """For each randomized space a layer reads: (the layer's units in it, τ²/(m−1)), the covariance
    correction of fixed-count draws (module docstring). ``units``: (n_units,) group id or −1."""
    g = np.maximum(units, 0)
    sp = np.where(units >= 0, gd.space[g], -1)  # (n_units,)
    out: Joint = []
    for s in np.unique(sp[sp >= 0]):
        idx = np.flatnonzero(sp == s)
        m = int(gd.m[g[idx[0]]])
        out.append((idx, float(gd.tau2[g[idx[0]]]) / (m - 1)))
    return out


def joint_energy(layer: Layer, Z: torch.Tensor, unit_idx: np.ndarray) -> float:
    """E_x‖Σ_{u ∈ unit_idx} W_u ẑ_u‖²: the layer's output energy with every other input unit's
    columns zeroed (whole output map for a conv; Z is (S, C, H, W) or (S, n_in))."""
    gid = column_groups(layer)
    mask = torch.as_tensor(np.isin(gid, unit_idx), dtype=torch.float64, device=Z.device)  # (n_in,)
    W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=Z.device) * mask[None, :]  # (out, in)
    Z = Z.detach().to(torch.float64)
    if layer.kind == "conv":
        assert layer.conv is not None and layer.conv.group == 1, "readers of a group are ungrouped convs"
        g = layer.conv
        K = W.reshape(layer.weight.shape)  # (c_out, C, kh, kw)
        out = F.conv2d(pad_input(Z, g), K, stride=g.strides, dilation=g.dilations)  # (S, c_out, H', W')
    else:
        out = Z.reshape(Z.shape[0], -1) @ W.T  # (S, out)
    return float((out.reshape(out.shape[0], -1) ** 2).sum(dim=1).mean())


def group_tier_e(
    layer: Layer, group_energy: np.ndarray, u_tau2: np.ndarray, Z: torch.Tensor, joint: Joint
) -> float:
    """Tier E of a fixed-count group draw (exact given ẑ, docs/bounds-dag.md "Fixed-count draws"):

        A = Σ_u τ²_u e_u + Σ_spaces τ²/(m−1) (Σ_{u∈space} e_u − E_x‖Σ_{u∈space} W_u ẑ_u‖²),

    e_u = E_x‖W_u ẑ_u‖² (``group_energy``): E‖Σ_u (s_u − 1) a_u‖² with Var = τ², Cov = −τ²/(m−1).
    """
    A = float((u_tau2 * group_energy).sum())
    for idx, c in joint:
        A += c * (float(group_energy[idx].sum()) - joint_energy(layer, Z, idx))
    return max(A, 0.0)


def prune_units(
    layer: Layer,
    stats: LayerStats,
    units: np.ndarray,
    gd: GroupDraw,
    device: str | torch.device,
    Z: torch.Tensor,
) -> PruneResult:
    """Apply the group draw to ``layer``'s input units (``units``: (n_units,) group id or −1).

    Tier E (exact, given ẑ = ``Z``): ``group_tier_e`` with the unit energies of ``stats``.
    """
    W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=device)  # (out, in), a fresh copy
    known = units >= 0
    u_scale = np.where(known, gd.scale[np.maximum(units, 0)], 1.0)  # (n_units,)
    u_tau2 = np.where(known, gd.tau2[np.maximum(units, 0)], 0.0)  # (n_units,)
    gid = column_groups(layer)  # (n_in,) unit of each column
    Wt = W.mul_(torch.as_tensor(u_scale[gid], dtype=torch.float64, device=device)[None, :])  # (out, in)
    assert stats.group_energy is not None, "group pruning needs layer_stats(..., groups=True)"
    drop = np.flatnonzero(known & gd.dropped[np.maximum(units, 0)]).astype(np.int64)
    rand = u_tau2 > 0
    tau2 = float(u_tau2.max()) if rand.any() else None
    joint = joint_terms(units, gd)
    p = float(gd.p[units[rand]].min()) if rand.any() else None
    return PruneResult(
        weight=Wt,
        var=None,
        group_tau2=u_tau2,
        tier_E_A=group_tier_e(layer, stats.group_energy, u_tau2, Z, joint),
        f=float(rand.mean()),
        p=p,
        m=int(rand.sum()),
        tau2=tau2,
        expected_keep=float(np.mean(np.where(rand, gd.p[np.maximum(units, 0)], 1.0))),
        realized_keep=1.0 - drop.size / max(units.size, 1),
        dropped_groups=drop,
        from_greedy_sort=False,  # the set was chosen from scores summed over the group's readers
        group_joint=joint,
    )
