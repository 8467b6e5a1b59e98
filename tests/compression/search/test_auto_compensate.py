"""``compensate: null`` (the default): on wherever compensation applies, each refit kept only where the
held-back quarter prefers it (search/auto_compensate.py, algorithm/layer_held_back.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.auto_compensate import (
    REFIT_WORK_CAP,
    off_reason,
    refit_work,
    resolve_compensate,
)
from netshrink.compression.spec import HELD_BACK, CompressSpec
from tests import factories


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"quantize": {"bits": 4}}, HELD_BACK),
        ({"prune": {"keep": 0.5, "granularity": "neuron"}}, HELD_BACK),
        ({"target": {"metric": "relative_l2", "max": 0.1}}, HELD_BACK),
        ({"quantize": {"bits": 4, "method": "rtn"}}, False),  # the user named a classical method
        ({"prune": {"keep": 0.5, "method": "magnitude"}}, False),
        ({"quantize": {"bits": 4}, "compensate": False}, False),  # the explicit opt-out
        ({"quantize": {"bits": 4, "method": "rtn"}, "compensate": True}, True),  # explicit wins
        ({}, False),  # nothing to compress
    ],
)
def test_null_resolves_to_on_wherever_it_applies(
    mlp_net: Network, spec: dict[str, Any], expected: bool | str
) -> None:
    assert CompressSpec.from_dict(spec).compensate == spec.get("compensate")
    assert resolve_compensate(mlp_net, CompressSpec.from_dict(spec)).compensate is expected


def test_default_report_marks_each_layers_refit_check_and_keeps_the_plain_bound(mlp_net: Network) -> None:
    rep = compress(mlp_net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0})).report
    s = rep["summary"]
    assert rep["reproducibility"]["spec"]["compensate"] is None  # null: re-submitted, the same rule
    compressed = [e for e in rep["layers"] if e["compressed"]]
    checks = [e["refit_check"] for e in compressed]
    assert compressed and all(c is not None and c["held_back_samples"] > 0 for c in checks)
    for e, c in zip(compressed, checks, strict=True):  # kept exactly where the held-back error is lower
        assert c["kept"] == (c["held_back_objective_refit"] < c["held_back_objective_plain"])
        assert e["compensated"] == c["kept"]
    kept = [e["name"] for e, c in zip(compressed, checks, strict=True) if c["kept"]]
    dropped = [e["name"] for e, c in zip(compressed, checks, strict=True) if not c["kept"]]
    assert kept and s["compensated_layers"] == kept  # 16 -> 64 -> 64 -> 8: the first two keep theirs
    assert s["bounds"]["E"]["value"] is None and s["bounds"]["W"]["holds"] is True  # only tier W
    twin = s["compensation"]["uncompensated_same_draw"]
    assert twin["bounds"]["E"]["value"] is not None and "do not bound the compensated" in twin["meaning"]
    warned = [w for w in s["warnings"] if "the refit was dropped" in w]
    assert (len(warned) == 1) == bool(dropped) and all(n in warned[0] for n in dropped)
    on = compress(mlp_net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "compensate": True}))
    assert on.report["reproducibility"]["spec"]["compensate"] is True
    assert all(e["compensated"] and e["refit_check"] is None for e in on.report["layers"] if e["compressed"])
    off = compress(
        mlp_net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "compensate": False})
    ).report
    assert off["reproducibility"]["spec"]["compensate"] is False
    assert off["summary"]["bounds"]["E"]["value"] is not None
    assert not off["summary"]["compensated_layers"] and "compensation" not in off["summary"]


def test_default_drops_overfitting_refits_end_to_end(model_dir: Path) -> None:
    # 300 Gaussian inputs, about 200 fit samples (150 refit rows): layer 1 has more unknowns per row
    # than refit rows. compensate: true overfits it; the default drops that refit.
    net = load_model(factories.write_bytes(factories.mlp_onnx((300, 64, 8)), model_dir / "wide_in.onnx"))
    runs = {
        c: compress(net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "compensate": c})).report
        for c in (None, True, False)
    }
    first = runs[None]["layers"][0]
    assert first["refit_check"]["kept"] is False and not first["compensated"]
    assert first["refit_check"]["refit_samples"] > 0 and first["refit_check"]["held_back_samples"] > 0
    err = {c: r["summary"]["error"]["relative_l2"] for c, r in runs.items()}  # held-out split
    assert err[True] > 2 * err[False]  # the overfitting the rule is for
    assert err[None] < 0.5 * err[True]
    assert any("the refit was dropped" in w for w in runs[None]["summary"]["warnings"])


@pytest.fixture(scope="module")
def wide_nets(model_dir: Path) -> tuple[Network, Network]:
    """16 -> w -> 8 MLPs just under (w = 6480) and just over (w = 6520) the refit work cap."""
    under = factories.write_bytes(factories.mlp_onnx((16, 6480, 8)), model_dir / "wide6480.onnx")
    over = factories.write_bytes(factories.mlp_onnx((16, 6520, 8)), model_dir / "wide6520.onnx")
    return load_model(under), load_model(over)


def test_refit_work_is_the_stated_sum(mlp_net: Network) -> None:
    # 16 -> 64 -> 64 -> 8: n = n_in + 1 per layer, n²·(n + n_out) summed (hand values)
    assert refit_work(mlp_net) == 17**2 * (17 + 64) + 65**2 * (65 + 64) + 65**2 * (65 + 8)


def test_null_resolves_to_off_above_the_refit_work_cap(wide_nets: tuple[Network, Network]) -> None:
    under, over = wide_nets
    assert REFIT_WORK_CAP == 2**38
    assert refit_work(under) == 17**2 * (17 + 6480) + 6481**2 * (6481 + 8) <= REFIT_WORK_CAP
    assert refit_work(over) == 17**2 * (17 + 6520) + 6521**2 * (6521 + 8) > REFIT_WORK_CAP
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}})
    assert resolve_compensate(under, spec).compensate == HELD_BACK and off_reason(under, spec) is None
    assert resolve_compensate(over, spec).compensate is False
    reason = off_reason(over, spec)
    assert reason is not None and "2^38.01 multiply-adds (cap 2^38, time and memory" in reason  # 2.8e11
    explicit = CompressSpec.from_dict({"quantize": {"bits": 4}, "compensate": True})
    assert resolve_compensate(over, explicit).compensate is True and off_reason(over, explicit) is None
    rtn = CompressSpec.from_dict({"quantize": {"bits": 4, "method": "rtn"}})
    assert off_reason(over, rtn) is None  # off for another reason, not the cost


def test_report_says_why_the_default_refit_was_skipped(wide_nets: tuple[Network, Network]) -> None:
    over = wide_nets[1]
    rep = compress(over, CompressSpec.from_dict({"quantize": {"bits": 8}, "seed": 0})).report
    s = rep["summary"]
    assert rep["reproducibility"]["spec"]["compensate"] is False
    assert not s["compensated_layers"] and s["bounds"]["E"]["value"] is not None  # the plain draw's tiers
    assert any("compensation is off by default" in w for w in s["warnings"])


def test_a_first_draw_that_drops_every_refit_makes_the_later_draws_plain(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """select.py's plain_after: 64 -> 128 -> 128 -> 10 at 8 bits drops all three refits on draw 0,
    so the held-back check runs for draw 0's three layers only, and the shipped file is the one
    ``compensate: false`` ships (the same plain draws, seeded alike), with draw 0's refit_check."""
    import netshrink.compression.search.greedy as greedy

    calls: list[int] = []
    real = greedy.compress_layer_held_back

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(greedy, "compress_layer_held_back", counting)
    net = load_model(factories.write_bytes(factories.mlp_onnx((64, 128, 128, 10)), model_dir / "m128.onnx"))
    null = compress(net, CompressSpec.from_dict({"quantize": {"bits": 8}, "seed": 0}))
    off = compress(net, CompressSpec.from_dict({"quantize": {"bits": 8}, "seed": 0, "compensate": False}))
    s = null.report["summary"]
    assert s["draws"]["R"] > 1 and len(calls) == 3  # three layers judged once, on draw 0
    assert null.artifacts["model.onnx"] == off.artifacts["model.onnx"]
    assert s["draws"]["R"] == off.report["summary"]["draws"]["R"]
    checks = [e["refit_check"] for e in null.report["layers"] if e["compressed"]]
    assert len(checks) == 3 and not any(c["kept"] for c in checks)
    assert all(c.get("judged_on_draw", 0) == 0 for c in checks)
    assert (s["draws"]["chosen"] > 0) == all(c.get("judged_on_draw") == 0 for c in checks)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"target": {"metric": "relative_l2", "max": 0.05}, "quantize": {"bits": 4}}, HELD_BACK),
        ({"target": {"metric": "relative_l2", "max": 0.05}}, False),  # the search may prune channels
        ({"prune": {"keep": 0.5, "granularity": "channel"}}, False),
        ({"quantize": {"bits": 4}}, HELD_BACK),
    ],
)
def test_on_a_dag_only_channel_pruning_turns_the_default_off(
    model_dir: Path, spec: dict[str, Any], expected: bool | str
) -> None:
    """A bits-only budget search on a residual CNN searches no channel keep, so compensation stays on
    (2026-12-05, found by probing: it was turned off, and `--target-error 0.05 --bits 4 --seed 0`
    missed the target, exit 3 at 2,968 weight bytes; now met at 2,508, held-out error 0.0402)."""
    from tests import dag_models as D

    net = load_model(factories.write_bytes(D.onnx_bytes("resnet"), model_dir / "resnet.onnx"))
    assert net.dag and net.channel_groups is not None
    assert resolve_compensate(net, CompressSpec.from_dict(spec)).compensate is expected
