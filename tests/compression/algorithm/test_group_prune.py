"""Fixed-count dependency-group draws (``algorithm/group_prune.py``, docs/bounds-dag.md "Fixed-count
draws"): exactly round((1−κ)G) channels dropped per space, unbiased scales with Var τ² and
Cov −τ²/(m−1), and tier E equal to the Monte-Carlo mean of the layer error (covariance term included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.group_prune import draw_groups, prune_units
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.graph.network import ConvGeometry, Layer
from tests.compression.algorithm.test_layer_compress import layer_error

torch.set_num_threads(1)


def _spaces() -> tuple[list[np.ndarray], np.ndarray]:
    scores = np.random.default_rng(0).exponential(size=24)  # (G,)
    return [np.arange(8), np.arange(8, 24)], scores


def test_fixed_count_drops_exactly_and_is_unbiased() -> None:
    spaces, scores = _spaces()
    draws = [draw_groups(spaces, scores, [0.75, 0.75], "auto", generator(0, -1, d)) for d in range(3000)]
    for idx, d in zip(spaces, (2, 4), strict=True):  # G − ⌊0.75·G + ½⌋ for G = 8, 16
        assert all(int(gd.dropped[idx].sum()) == d for gd in draws)
    S = np.stack([gd.scale for gd in draws])  # (R, G)
    gd0 = draws[0]
    rand = np.flatnonzero(gd0.tau2 > 0)
    assert rand.size > 0
    se = S[:, rand].std(axis=0, ddof=1) / np.sqrt(S.shape[0])
    assert np.all(np.abs(S[:, rand].mean(axis=0) - 1.0) <= 4 * se)  # E[scale] = 1
    for sp in range(2):
        r = rand[gd0.space[rand] == sp]
        tau2, m = gd0.tau2[r[0]], int(gd0.m[r[0]])
        assert m == r.size and gd0.p[r[0]] == pytest.approx((m - (2, 4)[sp]) / m)
        C = np.cov(S[:, r], rowvar=False)  # (m, m)
        off = C[~np.eye(m, dtype=bool)].mean()
        assert np.diag(C).mean() == pytest.approx(tau2, rel=0.1)
        assert off == pytest.approx(-tau2 / (m - 1), rel=0.15)


def _conv_layer(seed: int = 0) -> tuple[Layer, torch.Tensor]:
    rng = np.random.default_rng(seed)
    K = (rng.standard_normal((5, 8, 3, 3)) + 0.7).astype(np.float32)  # (c_out, C, kh, kw), aligned filters
    Z = torch.from_numpy(np.abs(rng.standard_normal((16, 8, 6, 6)) + 0.5))  # (S, C, H, W), correlated
    geom = ConvGeometry((3, 3), pads=(1, 1, 1, 1))
    return Layer("conv", 1, "conv", K, None, "w", None, conv=geom, structured=True), Z


def _dense_layer(seed: int = 0) -> tuple[Layer, torch.Tensor]:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((6, 8)).astype(np.float32)  # (out, in)
    Z = torch.from_numpy(rng.standard_normal((48, 8)) + 1.0)  # (S, in), non-zero mean: the cross terms matter
    return Layer("fc", 1, "dense", W, None, "w", None, structured=True), Z


@pytest.mark.parametrize("make", [_dense_layer, _conv_layer], ids=["dense", "conv"])
def test_tier_e_of_a_fixed_count_draw_equals_monte_carlo_mean(make) -> None:  # type: ignore[no-untyped-def]
    layer, Z = make()
    stats = layer_stats(layer, Z, groups=True)
    assert stats.group_energy is not None
    units = np.arange(8)
    errs, tiers = [], []
    for d in range(400):
        gd = draw_groups([units], stats.group_energy, [0.5], "auto", generator(3, -1, d))
        pr = prune_units(layer, stats, units, gd, "cpu", Z)
        errs.append(layer_error(layer, Z, pr.weight.numpy().reshape(layer.weight.shape)))
        tiers.append(pr.tier_E_A)
    err, tier = np.array(errs), np.array(tiers, dtype=np.float64)
    se = err.std(ddof=1) / np.sqrt(err.size)
    assert abs(err.mean() - tier.mean()) <= 3 * se, (err.mean(), tier.mean(), se)
    # the covariance term is not negligible here: the independent formula Σ τ² e_u is off by > 3 SE
    naive = float((pr.group_tau2 * stats.group_energy).sum())
    assert abs(err.mean() - naive) > 3 * se


@pytest.mark.parametrize("method", ["randomized_greedy", "magnitude"])
def test_a_space_always_keeps_one_group(method: str) -> None:
    """κ = 0.1 of 4 groups rounds to 0 kept (⌊0.4 + ½⌋): the space keeps one instead, in every draw.
    Before, it dropped all four, and the export of a zero-channel conv failed in onnxruntime."""
    spaces, scores = [np.arange(4)], np.random.default_rng(1).exponential(size=4)  # (G,)
    for d in range(200):
        gd = draw_groups(spaces, scores, [0.1], "auto", generator(0, -1, d), method=method)
        assert int((~gd.dropped).sum()) == 1
        assert np.all(gd.scale[~gd.dropped] > 0)


@pytest.mark.parametrize(("G", "keep"), [(3, 0.6), (6, 0.7), (10, 0.85), (12, 0.8)])
def test_all_zero_scores_still_leave_a_survivor_among_the_randomized(G: int, keep: float) -> None:
    """Scores of 0 (inputs that carry no signal) make E(m) = 0 for every m, so the first feasible m is
    taken; κ = 1 − d/G in floating point can put (1 − κ)G just below d, and that m was d itself:
    k = 0 survivors and a division by zero (an internal error in a budget search on all-zero inputs).
    The randomized set now always holds d + 1 groups at least."""
    kept = max(1, int(np.floor(keep * G + 0.5)))
    gd = draw_groups([np.arange(G)], np.zeros(G), [keep], "auto", generator(0, -1, 0))
    assert int(gd.dropped.sum()) == G - kept and np.all(np.isfinite(gd.scale))
    assert int(gd.m[gd.tau2 > 0][0]) > G - kept
