"""Per-layer budget search: the greedy allocation path and per-layer settings end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.mixed import BITS_MENU, KEEP_MENU, Allocation, _nbytes, greedy_path
from netshrink.compression.spec import CompressSpec
from tests import factories


def _menus(net: Network) -> tuple[dict[str, dict[int | None, float]], dict[str, dict[float, float]]]:
    rng = np.random.default_rng(0)
    q = {
        layer.name: {b: (0.0 if b is None else float(rng.uniform(0, 1)) / b) for b in BITS_MENU}
        for layer in net.layers
    }
    p = {
        layer.name: {
            k: (1.0 - k) * float(rng.uniform(0, 2)) for k in (KEEP_MENU if layer.structured else (1.0,))
        }
        for layer in net.layers
    }
    return q, p


def test_greedy_path_shrinks_one_notch_at_a_time_and_honours_bans(mlp_net: Network) -> None:
    q, p = _menus(mlp_net)
    path = greedy_path(mlp_net, q, p)
    assert path[0].predicted == 0.0 and all(b is None for b in path[0].bits.values())
    for a, b in zip(path, path[1:], strict=False):
        assert b.nbytes < a.nbytes
        changed = [n for n in a.keep if (a.keep[n], a.bits[n]) != (b.keep[n], b.bits[n])]
        assert len(changed) == 1
    last = path[-1]
    assert all(v == BITS_MENU[-1] for v in last.bits.values())  # every layer walked to its last notch
    assert last.nbytes == pytest.approx(_nbytes(mlp_net, last.keep, last.bits))
    first = mlp_net.layers[0].name
    assert all(a.keep[first] == 1.0 for a in path)  # layer 1's inputs are the model's features
    mid = path[len(path) // 2]
    banned = frozenset({(mlp_net.layers[1].name, "keep")})
    rest = greedy_path(
        mlp_net, q, p, Allocation(dict(mid.keep), dict(mid.bits), mid.predicted, mid.nbytes), banned
    )
    assert all(a.keep[mlp_net.layers[1].name] == mid.keep[mlp_net.layers[1].name] for a in rest)


def test_per_layer_bits_reach_the_artifact_and_int2_is_packed(mlp_net: Network) -> None:
    names = [layer.name for layer in mlp_net.layers]
    spec = CompressSpec.from_dict({"quantize": {"bits": {names[0]: 2, names[2]: 8}}, "seed": 0, "draws": 1})
    res = compress(mlp_net, spec)
    bits = {entry["name"]: entry["bits"] for entry in res.report["layers"]}
    assert bits[names[0]] == {"nominal": 2, "container": 2} and bits[names[1]] is None
    assert bits[names[2]] == {"nominal": 8, "container": 8}
    s = res.report["summary"]
    assert s["bytes"]["after"]["by_dtype"]["int2"] == -(-mlp_net.layers[0].weight.size // 4)  # four per byte
    assert s["error"]["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(
        s["error"]["relative_l2"], rel=1e-3, abs=1e-6
    )


def test_per_layer_bits_naming_an_unknown_layer_is_a_spec_error(mlp_net: Network) -> None:
    with pytest.raises(InvalidSpecError) as e:
        compress(mlp_net, CompressSpec.from_dict({"quantize": {"bits": {"nope": 4}}, "seed": 0}))
    assert e.value.field == "quantize.bits"
    with pytest.raises(InvalidSpecError):
        CompressSpec.from_dict({"quantize": {"bits": {"fc": 9}}})


def test_search_cache_floor_and_shared_group_stats_change_no_number(
    cnn_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget search's cache holds at least ``CACHE_FLOOR`` bytes per store (a small conv net's
    layer inputs dwarf its weights) and keeps one input entry per structured layer, with its group
    energies, for pruned and unpruned settings alike. Both only save work: the same candidates, the
    same measurements and the same file as a cache bounded by the weights' bytes with separate
    entries, and more reuse."""
    from netshrink.compression.search import mixed
    from netshrink.compression.search.prefix_cache import PrefixCache

    spec = CompressSpec.from_dict({"target": {"metric": "top1_agreement", "min": 0.97}, "seed": 0})
    new = compress(cnn_net, spec)
    monkeypatch.setattr(mixed, "CACHE_FLOOR", 0)
    monkeypatch.setattr(mixed, "PrefixCache", lambda max_bytes, groups=False: PrefixCache(max_bytes))
    old = compress(cnn_net, spec)
    assert new.artifacts["model.onnx"] == old.artifacts["model.onnx"]
    a, b = new.report["budget"], old.report["budget"]
    assert a["trace"] == b["trace"] and a["chosen"] == b["chosen"]
    assert a["measured_candidates"] >= 3
    reuse = ("cached_layer_draws_reused", "cached_layer_inputs_reused")
    assert sum(a[k] for k in reuse) > sum(b[k] for k in reuse)


def test_a_dag_search_moves_only_the_keeps_that_are_drawn(model_dir: Path) -> None:
    """On a residual CNN a channel space is drawn with its first reader's keep (``space_keeps``): the
    search offers keep moves to those readers only (2026-12-05, found by probing: moves on the other
    readers measured the same network as their base, used up the 16 measured candidates and credited
    byte savings that were never drawn)."""
    from netshrink.compression.graph.calibration import Calibration
    from netshrink.compression.search.group_draw import space_deciders
    from tests import dag_models as D

    net = load_model(factories.write_bytes(D.onnx_bytes("resnet"), model_dir / "resnet.onnx"))
    spec = CompressSpec.from_dict(
        {"target": {"metric": "top1_agreement", "min": 0.9}, "prune": {"keep": 0.5, "granularity": "channel"},
         "compensate": False, "draws": 2, "seed": 3}
    )  # fmt: skip
    deciders = space_deciders(net, spec)
    assert deciders is not None and "/layer2/conv1/Conv" not in deciders and "/layer1/conv1/Conv" in deciders
    X, y = D.task_data(160, seed=5)
    report = compress(net, spec, calibration=Calibration(X, y, sha256="test")).report
    moved = {
        str(t["move"]).split(": keep")[0] for t in report["budget"]["trace"] if ": keep" in str(t["move"])
    }
    assert moved and moved <= deciders, moved - deciders
