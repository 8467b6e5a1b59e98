"""Pruning: unbiasedness (docs/method.md §7), the greedy set, groups and the deterministic baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.prune import greedy_order, prune_layer, randomized_group_tau2
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import LayerStats, layer_stats
from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec

torch.set_num_threads(1)
DRAWS = 2000


def _setup(structured: bool = False, group: int = 1, seed: int = 0) -> tuple[Layer, LayerStats]:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((5, 8)).astype(np.float32)
    X = rng.standard_normal((64, 8)) * np.linspace(0.2, 2.0, 8)  # uneven column energies
    layer = Layer("fc2", 1, "dense", W, None, "w", None, structured=structured, input_group=group)
    return layer, layer_stats(layer, torch.from_numpy(X), groups=structured)


def _assert_unbiased(samples: np.ndarray, W: np.ndarray, var: np.ndarray) -> None:
    """CLT: every entry's mean over the draws is within 4.5 standard errors of w."""
    se = np.sqrt(var / samples.shape[0]) + 1e-9
    z = np.abs(samples.mean(axis=0) - W) / se
    assert z.max() < 4.5, z.max()


def test_randomized_unstructured_is_unbiased_and_greedy() -> None:
    layer, stats = _setup()
    W = layer.matrix.astype(np.float64)
    spec = PruneSpec(keep=0.5)
    runs = [prune_layer(layer, stats, spec, 0.5, generator(0, 1, d)) for d in range(DRAWS)]
    r0 = runs[0]
    assert r0.tau2 is not None and r0.p is not None and r0.tier_E_A is not None and r0.from_greedy_sort
    _assert_unbiased(np.stack([r.weight.numpy() for r in runs]), W, r0.var.numpy())
    base = (W**2 * stats.col_energy[None]).ravel()
    chosen = np.zeros(W.size, bool)
    chosen[np.argsort(base, kind="stable")[: r0.m]] = True
    np.testing.assert_array_equal(r0.var.numpy().ravel() > 0, chosen)  # exactly the m smallest scores
    for r in runs[:50]:
        Wt = r.weight.numpy().ravel()
        np.testing.assert_array_equal(Wt[~chosen], W.ravel()[~chosen])  # the rest untouched
        assert np.all(np.isclose(Wt[chosen], 0) | np.isclose(Wt[chosen], W.ravel()[chosen] / r0.p))
    realized = np.mean([r.realized_keep for r in runs])
    sd = np.sqrt(r0.m * r0.p * (1 - r0.p) / DRAWS) / W.size  # binomial removals, averaged over draws
    assert abs(realized - r0.expected_keep) < 4 * sd
    assert r0.tier_E_A == pytest.approx(r0.tau2 * base[chosen].sum(), rel=1e-12)


def test_neuron_groups_are_unbiased_and_drop_whole_columns() -> None:
    layer, stats = _setup(structured=True, group=2)
    W = layer.matrix.astype(np.float64)
    runs = [
        prune_layer(layer, stats, PruneSpec(keep=0.5, granularity="neuron"), 0.5, generator(1, 1, d))
        for d in range(DRAWS)
    ]
    r0 = runs[0]
    assert r0.group_tau2 is not None and r0.tau2 is not None and r0.p is not None
    var = np.repeat(r0.group_tau2, 2)[None, :] * W**2  # (out, in) per-entry variance
    _assert_unbiased(np.stack([r.weight.numpy() for r in runs]), W, var)
    for r in runs[:50]:
        assert r.dropped_groups is not None
        Wt = r.weight.numpy()
        for g in range(4):
            blk, orig = Wt[:, 2 * g : 2 * g + 2], W[:, 2 * g : 2 * g + 2]
            if g in r.dropped_groups:
                assert not blk.any()
            elif r0.group_tau2[g] > 0:
                np.testing.assert_allclose(blk, orig / r0.p, rtol=1e-12)
            else:
                np.testing.assert_array_equal(blk, orig)
    assert r0.tier_E_A == pytest.approx(float((r0.group_tau2 * stats.group_energy).sum()), rel=1e-12)


@pytest.mark.parametrize("fraction", ["auto", 1.0])
def test_a_neuron_draw_never_drops_every_group(fraction: str | float) -> None:
    """4 groups of 2 columns at κ = 0.3: the top group is never randomized (m ≤ G − 1), so no draw
    empties the layer. Before, equal scores (and f = 1 always) randomized all four, each surviving
    with p = 0.3, and about a quarter of the draws dropped every one: an exported layer with no
    input, which the ONNX checker refused as an unreadable model."""
    layer, _ = _setup(structured=True, group=2)
    flat = layer_stats(layer, torch.ones(64, 8, dtype=torch.float64), groups=True)  # (S, in): equal energies
    spec = PruneSpec(keep=0.3, granularity="neuron", fraction=fraction)  # type: ignore[arg-type]
    runs = [prune_layer(layer, flat, spec, 0.3, generator(2, 1, d)) for d in range(300)]
    assert all(r.m == 3 for r in runs)
    assert all(r.dropped_groups is not None and r.dropped_groups.size < 4 for r in runs)
    assert any(r.dropped_groups is not None and r.dropped_groups.size == 3 for r in runs)  # it can reach 1


@pytest.mark.parametrize("fraction", ["auto", 0.9])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2])
def test_group_tau2_without_a_draw_is_prune_layers(keep: float, fraction: str | float) -> None:
    """The budget search's menu takes the randomized groups' τ² from ``randomized_group_tau2``; it
    must be exactly what a draw of ``prune_layer`` reports, for every keep and fraction rule."""
    layer, stats = _setup(structured=True, group=1, seed=3)
    assert stats.group_energy is not None
    spec = PruneSpec(keep=keep, granularity="neuron", fraction=fraction)  # type: ignore[arg-type]
    drawn = prune_layer(layer, stats, spec, keep, generator(0, 1, 0)).group_tau2
    assert drawn is not None
    np.testing.assert_array_equal(randomized_group_tau2(stats.group_energy, keep, spec), drawn)


def test_structured_needs_a_structured_layer() -> None:
    layer, stats = _setup(structured=False)
    with pytest.raises(InvalidSpecError) as exc:
        prune_layer(layer, stats, PruneSpec(granularity="neuron"), 0.5, generator(0, 0, 0))
    assert exc.value.field == "prune.granularity"


@pytest.mark.parametrize("method", ["magnitude", "obd"])
def test_baselines_are_deterministic_top_kappa_without_rescale(method: str) -> None:
    layer, stats = _setup()
    W = layer.matrix.astype(np.float64)
    a = prune_layer(layer, stats, PruneSpec(keep=0.3, method=method), 0.3, generator(0, 0, 0))
    b = prune_layer(layer, stats, PruneSpec(keep=0.3, method=method), 0.3, generator(9, 9, 9))
    assert torch.equal(a.weight, b.weight) and a.tier_E_A is None and not a.from_greedy_sort
    score = np.abs(W) if method == "magnitude" else W**2 * stats.col_energy[None]
    kept = a.weight.numpy() != 0
    assert kept.sum() == round(0.3 * W.size)
    assert score[kept].min() >= score[~kept].max()
    np.testing.assert_array_equal(a.weight.numpy()[kept], W[kept])  # no rescaling


def test_group_baseline_drops_lowest_energy_groups() -> None:
    layer, stats = _setup(structured=True, group=2)
    r = prune_layer(
        layer, stats, PruneSpec(keep=0.5, granularity="neuron", method="obd"), 0.5, generator(0, 0, 0)
    )
    assert stats.group_energy is not None and r.dropped_groups is not None
    assert sorted(r.dropped_groups.tolist()) == sorted(np.argsort(stats.group_energy)[:2].tolist())


def test_output_aware_score_changes_the_set() -> None:
    layer, stats = _setup()
    sens = np.ones((5, 8)) * stats.col_energy[None]
    sens[0] *= 1e6  # row 0 matters a lot for the output: never randomized first
    r = prune_layer(layer, stats, PruneSpec(keep=0.7), 0.7, generator(0, 0, 0), sensitivity=sens)
    assert not r.from_greedy_sort and r.m <= 32
    assert not (r.var.numpy()[0] > 0).any()


def test_greedy_order_breaks_ties_by_flat_index() -> None:
    assert greedy_order(np.array([1.0, 0.0, 1.0, 0.0])).tolist() == [1, 3, 0, 2]


def test_group_sensitivity_ranks_groups_but_tier_E_stays_layer_local() -> None:
    layer, stats = _setup(structured=True, group=2)
    assert stats.group_energy is not None
    group_sens = stats.group_energy[::-1].copy()  # reversed order: the output cares about other groups
    spec = PruneSpec(keep=0.5, granularity="neuron", fraction=0.75)  # m = 3 of 4 groups
    r = prune_layer(layer, stats, spec, 0.5, generator(0, 0, 0), sensitivity=group_sens)
    assert r.group_tau2 is not None and r.tau2 is not None and not r.from_greedy_sort
    chosen = np.flatnonzero(r.group_tau2 > 0)
    assert sorted(chosen.tolist()) == sorted(np.argsort(group_sens, kind="stable")[:3].tolist())
    assert r.tier_E_A == pytest.approx(r.tau2 * float(stats.group_energy[chosen].sum()), rel=1e-12)


@pytest.mark.parametrize("method", ["randomized_greedy", "magnitude"])
@pytest.mark.parametrize("keep", [0.5, 0.75])
def test_a_group_draw_without_the_weight_is_the_same_draw(method: str, keep: float) -> None:
    """``with_weight=False`` (issue 10: no (out, in) float64 copy of W) draws the same groups from
    the same generator, leaves it in the same state, and its ``column_scale`` is what W̃ is made of:
    W̃ = W·column_scale, the same float64 numbers as the draw with its weight."""
    layer, stats = _setup(structured=True, group=2, seed=4)
    spec = PruneSpec(keep=keep, granularity="neuron", method=method)  # type: ignore[arg-type]
    g1, g2 = generator(2, 3, 4), generator(2, 3, 4)
    full = prune_layer(layer, stats, spec, keep, g1)
    bare = prune_layer(layer, stats, spec, keep, g2, with_weight=False)
    assert bare.weight.numel() == 0 and bare.column_scale is not None
    assert np.array_equal(bare.dropped_groups, full.dropped_groups)  # type: ignore[arg-type]
    assert (bare.p, bare.m, bare.tier_E_A, bare.realized_keep) == (
        full.p,
        full.m,
        full.tier_E_A,
        full.realized_keep,
    )
    scaled = layer.matrix.astype(np.float64) * bare.column_scale
    assert scaled.tobytes() == full.weight.numpy().tobytes()
    assert torch.equal(g1.get_state(), g2.get_state())
    assert set(np.flatnonzero(bare.column_scale == 0) // 2) == set(full.dropped_groups.tolist())  # type: ignore[union-attr]
