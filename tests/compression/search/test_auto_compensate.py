"""``compensate: null`` (the default): on wherever compensation applies (search/auto_compensate.py)."""

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
from netshrink.compression.spec import CompressSpec
from tests import factories


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"quantize": {"bits": 4}}, True),
        ({"prune": {"keep": 0.5, "granularity": "neuron"}}, True),
        ({"target": {"metric": "relative_l2", "max": 0.1}}, True),
        ({"quantize": {"bits": 4, "method": "rtn"}}, False),  # the user named a classical method
        ({"prune": {"keep": 0.5, "method": "magnitude"}}, False),
        ({"quantize": {"bits": 4}, "compensate": False}, False),  # the explicit opt-out
        ({"quantize": {"bits": 4, "method": "rtn"}, "compensate": True}, True),  # explicit wins
        ({}, False),  # nothing to compress
    ],
)
def test_null_resolves_to_on_wherever_it_applies(
    mlp_net: Network, spec: dict[str, Any], expected: bool
) -> None:
    assert CompressSpec.from_dict(spec).compensate == spec.get("compensate")
    assert resolve_compensate(mlp_net, CompressSpec.from_dict(spec)).compensate is expected


def test_default_report_marks_compensated_layers_and_keeps_the_plain_bound(mlp_net: Network) -> None:
    rep = compress(mlp_net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0})).report
    s = rep["summary"]
    assert rep["reproducibility"]["spec"]["compensate"] is True  # the echoed spec says what ran
    compressed = [e for e in rep["layers"] if e["compressed"]]
    assert compressed and all(e["compensated"] for e in compressed)
    assert s["compensated_layers"] == [e["name"] for e in compressed]
    assert s["bounds"]["E"]["value"] is None and s["bounds"]["W"]["holds"] is True  # only tier W
    twin = s["compensation"]["uncompensated_same_draw"]
    assert twin["bounds"]["E"]["value"] is not None and "do not bound the compensated" in twin["meaning"]
    off = compress(
        mlp_net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "compensate": False})
    ).report
    assert off["reproducibility"]["spec"]["compensate"] is False
    assert off["summary"]["bounds"]["E"]["value"] is not None
    assert not off["summary"]["compensated_layers"] and "compensation" not in off["summary"]


@pytest.fixture(scope="module")
def wide_nets(model_dir: Path) -> tuple[Network, Network]:
    """16 -> w -> 8 MLPs just under (w = 2500) and just over (w = 2600) the refit work cap."""
    under = factories.write_bytes(factories.mlp_onnx((16, 2500, 8)), model_dir / "wide2500.onnx")
    over = factories.write_bytes(factories.mlp_onnx((16, 2600, 8)), model_dir / "wide2600.onnx")
    return load_model(under), load_model(over)


def test_refit_work_is_the_stated_sum(mlp_net: Network) -> None:
    # 16 -> 64 -> 64 -> 8: n = n_in + 1 per layer, n²·(n + n_out) summed (hand values)
    assert refit_work(mlp_net) == 17**2 * (17 + 64) + 65**2 * (65 + 64) + 65**2 * (65 + 8)


def test_null_resolves_to_off_above_the_refit_work_cap(wide_nets: tuple[Network, Network]) -> None:
    under, over = wide_nets
    assert REFIT_WORK_CAP == 2**34
    assert refit_work(under) == 17**2 * (17 + 2500) + 2501**2 * (2501 + 8) <= REFIT_WORK_CAP
    assert refit_work(over) == 17**2 * (17 + 2600) + 2601**2 * (2601 + 8) > REFIT_WORK_CAP
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}})
    assert resolve_compensate(under, spec).compensate is True and off_reason(under, spec) is None
    assert resolve_compensate(over, spec).compensate is False
    reason = off_reason(over, spec)
    assert reason is not None and "2^34.04 multiply-adds (cap 2^34), and at this size" in reason  # 1.765e10
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
