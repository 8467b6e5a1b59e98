"""Whole-network draws: the ``draws="auto"`` rule and compensated draws end to end (docs/method.md §1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.evaluation.evaluation import evaluation_data
from netshrink.compression.evaluation.executor import BIAS, Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search import select
from netshrink.compression.search.select import AUTO_MAX_DRAWS, AUTO_PATIENCE, auto_cap, best_of
from netshrink.compression.spec import CompressSpec

Validate = Callable[[dict[str, Any]], None]


def _fit(net: Network, spec: CompressSpec) -> tuple[Executor, torch.Tensor]:
    data = evaluation_data(net, spec.evaluation, None, 0)
    return Executor(net), torch.as_tensor(data.fit)


def test_auto_draws_follow_the_stated_rule_and_are_deterministic(mlp_net: Network) -> None:
    spec = CompressSpec.from_dict({"quantize": {"bits": 3}, "seed": 1, "evaluation": {"samples": 100}})
    assert spec.draws == "auto"
    ex, X = _fit(mlp_net, spec)
    nd = best_of(mlp_net, ex, spec, X)
    e = nd.fit_errors
    assert 1 + AUTO_PATIENCE <= len(e) <= AUTO_MAX_DRAWS
    best = int(np.argmin(e))
    assert nd.draw == best and nd.fit_relative_l2 == min(e)
    if len(e) < AUTO_MAX_DRAWS:  # stopped by patience: the last AUTO_PATIENCE draws brought no gain
        assert len(e) - 1 - best == AUTO_PATIENCE
    # and not later than that: no earlier draw had gone AUTO_PATIENCE draws without a gain
    for i in range(len(e) - 1):
        assert i - int(np.argmin(e[: i + 1])) < AUTO_PATIENCE, (i, e)
    again = best_of(mlp_net, ex, spec, X)
    assert again.fit_errors == e
    for name, d in nd.layers.items():
        np.testing.assert_array_equal(again.layers[name].compressed.weight, d.compressed.weight)
    summary = nd.draws_summary()
    assert summary["R"] == len(e) and summary["fit_relative_l2"]["min"] == min(e)  # type: ignore[index]


def test_auto_cap_bounds_the_draws_work_and_keeps_four() -> None:
    """min(16, max(4, ⌊2^34 / (parameters · fit samples)⌋)): a small model keeps 16 draws, a large one 4."""
    assert auto_cap(17_000, 1_000) == 16  # the digits MLP
    assert auto_cap(2**20, 2**10) == 16  # exactly 16 draws' work
    assert auto_cap(2**20, 2**11) == 8
    assert auto_cap(2**20 + 1, 2**11) == 7  # floor
    assert auto_cap(17_088_522, 1_150) == 4  # the 17M MLP of bench/scale.py: 2.0e10 per draw
    assert auto_cap(67_000_000, 4_096) == 4  # never below 4
    assert auto_cap(0, 0) == 16


def test_auto_draws_stop_at_the_work_cap(mlp_net: Network, monkeypatch: pytest.MonkeyPatch) -> None:
    """With patience out of the way, the cap alone fixes R; the report's draws section states it."""
    spec = CompressSpec.from_dict({"quantize": {"bits": 3}, "seed": 1, "evaluation": {"samples": 100}})
    ex, X = _fit(mlp_net, spec)
    monkeypatch.setattr(select, "AUTO_PATIENCE", 10**6)
    monkeypatch.setattr(select, "auto_cap", lambda n, s: 5 if (n, s) == (mlp_net.n_params, X.shape[0]) else 0)
    nd = best_of(mlp_net, ex, spec, X)
    assert len(nd.fit_errors) == 5
    summary = nd.draws_summary()
    assert summary["max_draws"] == 5 and "at most 5" in str(summary["rule"])
    fixed = best_of(mlp_net, ex, dataclasses.replace(spec, draws=2), X)
    assert len(fixed.fit_errors) == 2 and fixed.draws_summary()["max_draws"] is None


def test_auto_draws_make_one_draw_when_nothing_is_random(mlp_net: Network) -> None:
    for q in ({"bits": 4, "method": "rtn"},):
        spec = CompressSpec.from_dict({"quantize": q, "seed": 0, "evaluation": {"samples": 100}})
        ex, X = _fit(mlp_net, spec)
        assert len(best_of(mlp_net, ex, spec, X).fit_errors) == 1
    comp = CompressSpec.from_dict({"quantize": {"bits": 4}, "compensate": True, "seed": 0})
    ex, X = _fit(mlp_net, comp)
    nd = best_of(mlp_net, ex, comp, X)
    assert len(nd.fit_errors) == 1  # GPTQ rounding is deterministic
    rule = str(nd.draws_summary()["rule"])  # says why, not a cap formula that would give 16 here
    assert nd.draws_summary()["max_draws"] == 1 and "nothing in the spec is random" in rule


def test_explicit_draws_are_respected(mlp_net: Network) -> None:
    spec = CompressSpec.from_dict(
        {"quantize": {"bits": 4}, "draws": 2, "seed": 0, "evaluation": {"samples": 100}}
    )
    ex, X = _fit(mlp_net, spec)
    assert len(best_of(mlp_net, ex, spec, X).fit_errors) == 2


@pytest.mark.parametrize(
    "stages",
    [{"quantize": {"bits": 4}}, {"prune": {"keep": 0.5, "granularity": "channel"}, "quantize": {"bits": 8}}],
    ids=["gptq4", "channel+int8"],
)
def test_compensated_pipeline_bias_reaches_the_artifact_and_tier_w_holds(
    cnn_net: Network, validate_report: Validate, stages: dict[str, Any]
) -> None:
    spec = CompressSpec.from_dict({**stages, "compensate": True, "seed": 0, "evaluation": {"samples": 120}})
    res = compress(cnn_net, spec)
    validate_report(res.report)
    s = res.report["summary"]
    # The file (with its refit biases) computes what the core measured.
    assert s["error"]["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(
        s["error"]["relative_l2"], rel=1e-3, abs=1e-6
    )
    compressed = [entry for entry in res.report["layers"] if entry["compressed"]]
    assert compressed and all(entry["compensated"] for entry in compressed)
    assert s["compensated_layers"] == [entry["name"] for entry in compressed]
    assert s["bounds"]["W"]["holds"] is True
    # The uncompensated twin (same seed and draw) keeps its tier-E bound, labelled as such.
    comp = s["compensation"]
    assert comp["layers"] == s["compensated_layers"]
    assert comp["compensated"]["relative_l2"] == s["error"]["relative_l2"]
    twin = comp["uncompensated_same_draw"]
    assert twin["bounds"]["E"]["value"] is not None and "do not bound the compensated" in twin["meaning"]
    assert twin["bounds"]["W"]["holds"] is True
    for entry in compressed:
        assert entry["bounds"]["E"]["A"] is None  # not zero-mean after the refit: tier E does not apply
        assert entry["measured_error"] <= entry["bounds"]["W"]["step"] * (
            1 + 1e-9
        )  # Δb counted (bounds.tier_W)


def test_compensation_beats_the_plain_draw_on_held_out_data(cnn_net: Network) -> None:
    base = {"quantize": {"bits": 3}, "seed": 0, "evaluation": {"samples": 200}}
    plain = compress(cnn_net, CompressSpec.from_dict({**base, "draws": 1, "compensate": False})).report[
        "summary"
    ]
    comp = compress(cnn_net, CompressSpec.from_dict({**base, "compensate": True})).report["summary"]
    assert comp["error"]["relative_l2"] < plain["error"]["relative_l2"]


def test_executor_bias_override_matches_on_both_backends(mlp_net: Network) -> None:
    layer = mlp_net.layers[1]
    assert layer.bias is not None
    X = torch.randn(5, *mlp_net.input_shape)
    b = torch.as_tensor(layer.bias + 1.0)
    ex = Executor(mlp_net)
    a = ex.run(X, overrides={layer.name + BIAS: b}, capture=[layer.preact])[layer.preact]
    dense = ex.run(X, capture=[layer.preact])[layer.preact]
    torch.testing.assert_close(a - dense, torch.ones_like(a))
    ort = Executor(mlp_net)
    ort.backend = "onnxruntime"
    o = ort.run(X, overrides={layer.name + BIAS: b}, capture=[layer.preact])[layer.preact]
    torch.testing.assert_close(o, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        ex.run(X, overrides={layer.name + BIAS: torch.zeros(layer.n_out + 1)})


def test_prefix_cache_is_bounded_by_the_bytes_of_its_draws(mlp_net: Network) -> None:
    """The budget search's cache evicts oldest-first once its draws' arrays pass ``max_bytes``
    (issue 10: it held up to 4x the weights' entries at ~13 bytes each); the newest always stays."""
    from netshrink.compression.search.greedy import draw_network
    from netshrink.compression.search.prefix_cache import PrefixCache, layer_draw_nbytes

    spec = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "evaluation": {"samples": 64}})
    ex, X = _fit(mlp_net, spec)
    draws = [d for r in range(3) for d in draw_network(mlp_net, ex, spec, X, draw=r).layers.values()]
    sizes = [layer_draw_nbytes(d) for d in draws]
    c = draws[0].compressed
    assert sizes[0] == c.weight.nbytes + c.codes.nbytes + draws[0].var.nbytes  # type: ignore[union-attr]
    bound = sum(sizes[:2])
    cache = PrefixCache(bound)
    for i, d in enumerate(draws):
        cache.put((i,), d)
        assert cache.nbytes() <= bound or len(cache.items) == 1
    assert list(cache.items)[-1] == (len(draws) - 1,)  # the newest is kept
    assert len(cache.items) < len(draws)  # older draws were evicted
    small = PrefixCache(1)
    for i, d in enumerate(draws):
        small.put((i,), d)
    assert list(small.items) == [(len(draws) - 1,)]


def test_prefix_cache_reuse_gives_the_draw_made_without_it(mlp_net: Network) -> None:
    """Candidates that share a prefix reuse its layer draws and its layers' inputs (ẑ and the
    statistics), and get the very draw a fresh ``draw_network`` makes; the pinned draw (the one the
    search may still ship) is neither counted against the bound nor evicted."""
    from netshrink.compression.search.greedy import draw_network
    from netshrink.compression.search.prefix_cache import PrefixCache

    names = [layer.name for layer in mlp_net.layers]
    specs = [
        CompressSpec.from_dict(
            {
                "quantize": {"bits": {names[0]: 4, names[1]: 4, names[2]: b}},
                "prune": {"keep": {names[1]: 0.5, names[2]: k}, "granularity": "neuron"},
                "seed": 3,
                "evaluation": {"samples": 64},
            }
        )
        for b, k in ((8, 0.8), (4, 0.8), (2, 0.5))
    ]
    ex, X = _fit(mlp_net, specs[0])
    cache = PrefixCache(1)  # holds nothing but the newest entry and the pinned draw
    first = draw_network(mlp_net, ex, specs[0], X, draw=1, cache=cache, logits=True)
    cache.pin(first)
    assert cache.nbytes() == 0  # pinned draws are held by the caller: not counted
    for spec in specs[1:]:
        hits, input_hits = cache.hits, cache.input_hits
        nd = draw_network(mlp_net, ex, spec, X, draw=1, cache=cache, logits=True)
        fresh = draw_network(mlp_net, ex, spec, X, draw=1, logits=True)
        assert cache.hits == hits + 2  # layers 1 and 2 from the pinned draw (same settings, same draw)
        assert cache.input_hits == input_hits + 1  # the last layer's input under that prefix
        for name in names:
            assert np.array_equal(nd.layers[name].compressed.weight, fresh.layers[name].compressed.weight)
            assert np.array_equal(nd.layers[name].var, fresh.layers[name].var)
            assert nd.layers[name].tier_E_A == fresh.layers[name].tier_E_A
        assert nd.fit_logits is not None and fresh.fit_logits is not None
        assert torch.equal(nd.fit_logits, fresh.fit_logits)
        assert all(nd.layers[n] is first.layers[n] for n in names[:2])
    other = draw_network(mlp_net, ex, specs[0], X, draw=2, cache=cache)  # another draw index: no reuse
    assert all(other.layers[n] is not first.layers[n] for n in names)
    assert all(key in cache.items for key, name in first.cache_keys.items() if name is not None)


def test_search_cache_adds_group_energies_only_when_a_candidate_prunes(mlp_net: Network) -> None:
    """Issue 11 (the search's cost): a search that may prune by units shares one input entry per
    structured layer, pruned or not; its group energies are computed when a candidate first prunes
    that layer, not for every input (most are never pruned). The draw is the one made without cache."""
    from netshrink.compression.search.greedy import draw_network
    from netshrink.compression.search.prefix_cache import PrefixCache

    names = [layer.name for layer in mlp_net.layers]
    bits = {n: 4 for n in names}
    base = {"seed": 3, "evaluation": {"samples": 64}}
    unpruned = CompressSpec.from_dict({**base, "quantize": {"bits": bits}})
    pruned = CompressSpec.from_dict(
        {**base, "quantize": {"bits": bits}, "prune": {"keep": {names[1]: 0.5}, "granularity": "neuron"}}
    )
    ex, X = _fit(mlp_net, unpruned)
    cache = PrefixCache(1 << 30, groups=True)
    first = draw_network(mlp_net, ex, unpruned, X, draw=0, cache=cache)
    key = next(k for k, name in first.cache_keys.items() if name is None and names[1] in k)
    assert cache.inputs[key][1].group_energy is None  # layer 2 unpruned: no group energies yet
    hits = cache.input_hits
    nd = draw_network(mlp_net, ex, pruned, X, draw=0, cache=cache)
    assert cache.input_hits == hits + 1  # layer 2's input under layer 1's 4 bits, reused
    assert cache.inputs[key][1].group_energy is not None  # added by the first candidate that prunes
    fresh = draw_network(mlp_net, ex, pruned, X, draw=0)
    for name in names:
        assert np.array_equal(nd.layers[name].compressed.weight, fresh.layers[name].compressed.weight)
        assert nd.layers[name].tier_E_A == fresh.layers[name].tier_E_A


def test_search_cache_makes_an_unpruned_held_back_layers_statistics_only_when_read(mlp_net: Network) -> None:
    """Issue 11 (the search's cost): under ``compensate: null`` an unpruned layer's refit reads no
    statistics of its input, and its plain draw is judged by Ŵ alone: the search's cache entry
    holds ẑ without them until a candidate reads them (one that prunes the layer, here). Every
    draw is the one made without cache."""
    from netshrink.compression.search.greedy import draw_network
    from netshrink.compression.search.prefix_cache import PrefixCache
    from netshrink.compression.spec import HELD_BACK

    names = [layer.name for layer in mlp_net.layers]
    bits = {n: 4 for n in names}
    base = {"seed": 3, "evaluation": {"samples": 64}}
    unpruned = dataclasses.replace(
        CompressSpec.from_dict({**base, "quantize": {"bits": bits}}), compensate=HELD_BACK
    )
    pruned = dataclasses.replace(
        CompressSpec.from_dict(
            {**base, "quantize": {"bits": bits}, "prune": {"keep": {names[1]: 0.5}, "granularity": "neuron"}}
        ),
        compensate=HELD_BACK,
    )
    ex, X = _fit(mlp_net, unpruned)
    cache = PrefixCache(1 << 30, groups=True)
    first = draw_network(mlp_net, ex, unpruned, X, draw=0, cache=cache)
    keys = [k for k, name in first.cache_keys.items() if name is None]
    by_layer = {n: next(k for k in keys if n in k) for n in names}
    won = [n for n in names if first.layers[n].compensated]  # the refit won: nothing read the stats
    assert won and len(keys) == len(names)
    for n in names:
        assert (cache.inputs[by_layer[n]][1] is None) == (n in won)  # a shipped plain draw read them
    fresh = draw_network(mlp_net, ex, unpruned, X, draw=0)
    for name in names:
        assert np.array_equal(first.layers[name].compressed.weight, fresh.layers[name].compressed.weight)
    nd = draw_network(mlp_net, ex, pruned, X, draw=0, cache=cache)
    stats = cache.inputs[by_layer[names[1]]][1]
    assert stats is not None and stats.group_energy is not None  # read (and made) by the pruning stage
    fresh = draw_network(mlp_net, ex, pruned, X, draw=0)
    for name in names:
        assert np.array_equal(nd.layers[name].compressed.weight, fresh.layers[name].compressed.weight)


def test_held_back_logits_reuse_the_inputs_of_a_shared_prefix(mlp_net: Network) -> None:
    """Issue 11 (the search's cost): a candidate's Φ̂ on the held-back rows starts from the deepest
    layer input held for its prefix (the layers above it are not run again), and is the Φ̂ of a
    full forward pass, bit for bit."""
    from netshrink.compression.search.greedy import draw_network
    from netshrink.compression.search.prefix_cache import PrefixCache

    names = [layer.name for layer in mlp_net.layers]
    specs = [
        CompressSpec.from_dict({"quantize": {"bits": {**{n: 4 for n in names}, names[2]: b}}, "seed": 3})
        for b in (4, 2)
    ]
    ex, X = _fit(mlp_net, specs[0])
    X_ver = X[:17] * 0.5  # other rows, the same at every call
    cache = PrefixCache(1 << 30)
    for i, spec in enumerate(specs):
        nd = draw_network(mlp_net, ex, spec, X, draw=0, cache=cache)
        got = cache.held_back_logits(ex, nd, X_ver)
        with torch.no_grad():
            want = ex.run(X_ver, overrides=nd.overrides(ex.device))[mlp_net.logits]
        assert torch.equal(got, want)
        assert cache.ver_hits == i  # the second shares layers 1-2: layer 3's input is reused


def test_the_draws_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    """It was the upper middle value (0.4 here), found by probing 2026-12-05."""
    from netshrink.compression.search.greedy import NetworkDraw

    summary = NetworkDraw(draw=0, fit_errors=[0.4, 0.1, 0.3, 0.2]).draws_summary()
    assert summary["fit_relative_l2"]["median"] == 0.25  # type: ignore[index]
    assert NetworkDraw(draw=0, fit_errors=[0.3, 0.1, 0.2]).draws_summary()["fit_relative_l2"]["median"] == 0.2  # type: ignore[index]
