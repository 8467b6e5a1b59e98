"""``compensate: null`` (the default): on wherever compensation applies (search/auto_compensate.py)."""

from __future__ import annotations

from typing import Any

import pytest

from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.auto_compensate import resolve_compensate
from netshrink.compression.spec import CompressSpec


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
