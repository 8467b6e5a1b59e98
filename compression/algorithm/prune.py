"""Pruning of one layer: P1's randomized greedy rule (unstructured and by groups) and the baselines.

Ref: docs/method.md §1 [P1 §3.2, Algorithm 1, Lemma 8]. Each weight chosen for compression becomes
t = w/p with probability p and 0 otherwise (E[t] = w, Var(t) = τ²w², τ² = (1−p)/p). The greedy
order is a single stable float64 sort of the scores (ties by flat index): the m = f·N smallest
are randomized and the rest stay exactly as they are. Groups (neurons = column blocks, channels)
share one Bernoulli draw and are ranked by E_x‖W_g ẑ_g‖² (docs/method.md §1 "Structured pruning").
Baselines (magnitude, OBD) are deterministic and keep round(κN) units without rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from netshrink.compression.algorithm.fraction import choose_fraction, group_max_m
from netshrink.compression.algorithm.rng import uniform
from netshrink.compression.algorithm.scores import LayerStats, column_groups
from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec

__all__ = ["PruneResult", "greedy_order", "prune_layer", "randomized_group_tau2"]


@dataclass
class PruneResult:
    """W̃ after pruning plus what the bounds need. ``tier_E_A`` is None for the (biased) baselines."""

    weight: torch.Tensor  # (n_out, n_in) float64 W̃ on the working device; (0,) for with_weight=False
    var: torch.Tensor | None  # (n_out, n_in) float64 per-entry Var(t); None (all zero): groups, baselines
    group_tau2: np.ndarray | None  # (n_groups,) τ² for randomized groups, 0 elsewhere (structured)
    tier_E_A: float | None  # E_h E_x‖(W − W̃) ẑ‖² given ẑ (docs/method.md §3 tier E)
    f: float | None
    p: float | None
    m: int  # randomized (or, for baselines, removed) units
    tau2: float | None
    expected_keep: float
    realized_keep: float
    dropped_groups: np.ndarray | None  # (d,) int64 group ids removed entirely (structured)
    from_greedy_sort: bool
    # fixed-count dependency-group draws: per randomized space (its units here, τ²/(m−1)) (group_prune.py)
    group_joint: list[tuple[np.ndarray, float]] | None = None
    # (n_in,) float64 factor of every column of W in ``weight`` (groups: 1/p, 0 or 1); None for entries
    column_scale: np.ndarray | None = None


def greedy_order(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` ascending: one stable float64 sort, ties broken by flat index."""
    return np.argsort(np.asarray(scores, dtype=np.float64).ravel(), kind="stable")


def prune_layer(
    layer: Layer,
    stats: LayerStats,
    spec: PruneSpec,
    keep: float,
    gen: torch.Generator,
    *,
    sensitivity: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    with_weight: bool = True,
) -> PruneResult:
    """Prune ``layer``'s im2col matrix to expected density ``keep``. Ref: docs/method.md §1.

    ``sensitivity`` switches to the output-aware score (docs/method.md §3): an (n_out, n_in) array
    E_x[ẑ_j² g_i] ranks entries by w²·E_x[ẑ_j² g_i]; for groups, an (n_groups,) array is taken as
    the exact group score E_x‖J W_g ẑ_g‖², while an (n_out, n_in) one gives its diagonal
    approximation Σ_{i, j∈g} w_ij²·E_x[ẑ_j² g_i]. Tier E always uses the layer-local energies.

    ``with_weight=False`` (groups only): the draw without W̃, ``weight`` empty and ``column_scale``
    saying what W̃ is (W's columns times it): the refit reads only the dropped groups, and the plain
    draw's judged Ŵ scales W block by block (``quantize_matrix(col_scale=...)``), so no (out, in)
    float64 copy of W is made (128 MiB on a 4096² layer, per draw of the budget search; issue 10).
    """
    if spec.granularity == "weight":
        W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=device)  # (out, in), a fresh copy
        Wn = layer.matrix.astype(np.float64)  # (out, in)
        energy = stats.energy if sensitivity is None else _as_matrix(sensitivity, Wn.shape)
        base = (Wn**2 * energy).ravel()  # (N,) w²·E[ẑ_j²] (OBD saliency; × τ² = P1's score)
        if spec.method == "randomized_greedy":
            return _randomized_entries(W, base, stats, spec, keep, gen, sensitivity is None)
        mag = np.abs(Wn).ravel() if spec.method == "magnitude" else base
        return _baseline_entries(W, mag, keep)
    if not layer.structured:
        raise InvalidSpecError(
            f"layer {layer.name!r} cannot be pruned by {spec.granularity}: its input units cannot be removed "
            "(the first layer's inputs are the model's features)",
            field="prune.granularity",
        )
    # (out, in) a fresh float64 copy, or (0,) without the weight
    W = torch.as_tensor(layer.matrix, dtype=torch.float64, device=device) if with_weight else _NO_WEIGHT
    gid = column_groups(layer)  # (n_in,)
    n_groups = int(gid[-1]) + 1
    if stats.group_energy is None:
        raise ValueError("structured pruning needs layer_stats(..., groups=True)")
    if sensitivity is None:
        gbase = stats.group_energy  # (G,) E_x‖W_g ẑ_g‖²
    elif np.asarray(sensitivity).size == n_groups:
        gbase = np.asarray(sensitivity, dtype=np.float64).ravel()  # (G,) E_x‖J W_g ẑ_g‖²
    else:
        gbase = _group_sum_sq(layer.matrix, gid, n_groups, _as_matrix(sensitivity, layer.matrix.shape))
    if spec.method == "randomized_greedy":
        return _randomized_groups(W, gbase, gid, stats.group_energy, spec, keep, gen, sensitivity is None)
    # ‖W_g‖_F² (magnitude) or OBD
    gscore = _group_sum_sq(layer.matrix, gid, n_groups) if spec.method == "magnitude" else gbase
    return _baseline_groups(W, gscore, gid, keep)


def _randomized_entries(
    W: torch.Tensor,
    base: np.ndarray,
    stats: LayerStats,
    spec: PruneSpec,
    keep: float,
    gen: torch.Generator,
    greedy: bool,
) -> PruneResult:
    """Randomize the m smallest-score entries: t = w/p w.p. p, else 0 (p > 0 since m > (1−κ)N)."""
    N = W.numel()
    f, p, m = choose_fraction(base, keep, fraction=spec.fraction)
    sel = np.zeros(N, dtype=bool)
    sel[greedy_order(base)[:m]] = True
    sel_t = torch.from_numpy(sel).to(W.device).reshape(W.shape)  # (out, in)
    survive = (uniform(gen, N, W.device) < p).reshape(W.shape)  # (out, in) Bernoulli(p)
    Wt = torch.where(sel_t, torch.where(survive, W / p, torch.zeros_like(W)), W)  # (out, in)
    tau2 = (1.0 - p) / p
    var = torch.where(sel_t, tau2 * W**2, torch.zeros_like(W))  # (out, in) Var(t) = τ² w²
    col = torch.as_tensor(stats.energy, dtype=torch.float64, device=W.device)  # (1 or out, in)
    removed = int((sel_t & ~survive).sum())
    return PruneResult(
        weight=Wt,
        var=var,
        group_tau2=None,
        tier_E_A=stats.positions * float((var * col).sum()),
        f=f,
        p=p,
        m=m,
        tau2=tau2,
        expected_keep=(1 - f) + f * p,
        realized_keep=1 - removed / N,
        dropped_groups=None,
        from_greedy_sort=greedy,
    )


def randomized_group_tau2(gbase: np.ndarray, keep: float, spec: PruneSpec) -> np.ndarray:
    """(G,) τ² = (1−p)/p of the groups the randomized rule draws at ``keep``, 0 elsewhere: what
    ``prune_layer(...).group_tau2`` is for group scores ``gbase``, without the draw or the (out, in)
    copy of W (the budget search's prediction menu, search/mixed.py, asks for every keep)."""
    _, p, m = choose_fraction(gbase, keep, fraction=spec.fraction, max_m=group_max_m(gbase.size))
    sel = np.zeros(gbase.size, dtype=bool)
    sel[greedy_order(gbase)[:m]] = True
    return np.where(sel, (1.0 - p) / p, 0.0)


def _randomized_groups(
    W: torch.Tensor,
    gbase: np.ndarray,
    gid: np.ndarray,
    genergy: np.ndarray,
    spec: PruneSpec,
    keep: float,
    gen: torch.Generator,
    greedy: bool,
) -> PruneResult:
    """One Bernoulli(p)/p draw per group of columns; tier E = Σ_g τ² E_x‖W_g ẑ_g‖² (docs/method.md §3)."""
    G = gbase.size
    f, p, m = choose_fraction(gbase, keep, fraction=spec.fraction, max_m=group_max_m(G))  # top one stays
    sel = np.zeros(G, dtype=bool)
    sel[greedy_order(gbase)[:m]] = True
    survive = uniform(gen, G, "cpu").numpy() < p  # (G,)
    gscale = np.where(sel, np.where(survive, 1.0 / p, 0.0), 1.0)  # (G,)
    Wt = _scale_columns(W, gscale[gid])  # (out, in), or (0,) without the weight
    tau2 = (1.0 - p) / p
    group_tau2 = np.where(sel, tau2, 0.0)  # (G,)
    dropped = np.flatnonzero(sel & ~survive).astype(np.int64)
    return PruneResult(
        weight=Wt,
        var=None,
        group_tau2=group_tau2,
        tier_E_A=float((group_tau2 * genergy).sum()),
        f=f,
        p=p,
        m=m,
        tau2=tau2,
        expected_keep=(1 - f) + f * p,
        realized_keep=1 - dropped.size / G,
        dropped_groups=dropped,
        from_greedy_sort=greedy,
        column_scale=gscale[gid],
    )


_NO_WEIGHT = torch.empty(0, dtype=torch.float64)  # ``with_weight=False``: never written into


def _scale_columns(W: torch.Tensor, scale: np.ndarray) -> torch.Tensor:
    """W (out, in) float64 times ``scale`` (in,) per column, in place; W as it is when it is empty."""
    if W.numel() == 0:
        return W
    return W.mul_(torch.as_tensor(scale, dtype=torch.float64, device=W.device)[None, :])  # (out, in)


def _baseline(
    Wt: torch.Tensor,
    n_drop: int,
    n: int,
    dropped: np.ndarray | None,
    column_scale: np.ndarray | None = None,
) -> PruneResult:
    kept = 1 - n_drop / n
    return PruneResult(
        weight=Wt,
        var=None,
        group_tau2=None,
        tier_E_A=None,
        f=None,
        p=None,
        m=n_drop,
        tau2=None,
        expected_keep=kept,
        realized_keep=kept,
        dropped_groups=dropped,
        from_greedy_sort=False,
        column_scale=column_scale,
    )


def _baseline_entries(W: torch.Tensor, score: np.ndarray, keep: float) -> PruneResult:
    """Keep the round(κN) largest scores, zero the rest, no rescaling (docs/method.md §1 baselines)."""
    N = W.numel()
    n_drop = N - round(keep * N)
    drop = np.zeros(N, dtype=bool)
    drop[greedy_order(score)[:n_drop]] = True
    mask = torch.from_numpy(drop).to(W.device).reshape(W.shape)
    return _baseline(torch.where(mask, torch.zeros_like(W), W), n_drop, N, None)


def _baseline_groups(W: torch.Tensor, gscore: np.ndarray, gid: np.ndarray, keep: float) -> PruneResult:
    """Drop the (1−κ)G lowest-score groups entirely, no rescaling."""
    G = gscore.size
    n_drop = G - max(1, round(keep * G))  # a layer keeps one unit at least (fraction.group_max_m)
    dropped = np.sort(greedy_order(gscore)[:n_drop]).astype(np.int64)
    gmask = np.ones(G)
    gmask[dropped] = 0.0
    return _baseline(_scale_columns(W, gmask[gid]), n_drop, G, dropped, gmask[gid])


_ROWS = 1 << 20  # entries per row block of ``_group_sum_sq`` (8 MiB of float64)


def _group_sum_sq(W: np.ndarray, gid: np.ndarray, n_groups: int, S: np.ndarray | None = None) -> np.ndarray:
    """Σ over rows and the columns of each group of w² (times ``S`` when given): (out, in) -> (G,).

    Row blocks of float64, so no full-size float64 copy of W exists (issue 10, memory)."""
    step = max(1, _ROWS // max(1, W.shape[1]))
    col = np.zeros(W.shape[1], dtype=np.float64)  # (in,)
    for r in range(0, W.shape[0], step):
        sq = W[r : r + step].astype(np.float64) ** 2  # (b, in)
        col += (sq if S is None else sq * S[r : r + step]).sum(axis=0)
    return np.bincount(gid, weights=col, minlength=n_groups).astype(np.float64)


def _as_matrix(sensitivity: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    s = np.asarray(sensitivity, dtype=np.float64)
    if s.size != shape[0] * shape[1]:
        raise ValueError(f"sensitivity has {s.size} entries, expected {shape[0]}x{shape[1]}")
    return s.reshape(shape)
