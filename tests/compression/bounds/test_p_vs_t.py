"""Tier P (P1's constant) is reported only where it is a bound: P ≥ T (hence ≥ E) wherever P is not
null, for weights, neurons, conv channels and the Flatten→Gemm channel blocks alike; draws of groups
of several columns get P = null with the reason (docs/method.md §3, tier P)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from netshrink.compression.algorithm.layer_compress import compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds.bounds import tier_P, tier_T
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec, PruneSpec

SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp-weight": ("mlp", {"prune": {"keep": 0.5, "fraction": 0.8}}),
    "mlp-neuron": ("mlp", {"prune": {"keep": 0.6, "granularity": "neuron", "fraction": 0.9}}),
    "mlp-prune+quant": (
        "mlp",
        {"prune": {"keep": 0.6, "fraction": 0.9}, "quantize": {"bits": 4, "fraction": 0.9}},
    ),
    "cnn-weight": ("cnn", {"prune": {"keep": 0.5, "fraction": 0.8}}),
    "cnn-channel": ("cnn", {"prune": {"keep": 0.6, "granularity": "channel", "fraction": 0.9}}),
    "cnn-quant": ("cnn", {"quantize": {"bits": 3, "fraction": 0.8}}),
}


@pytest.mark.parametrize("case", list(SPECS))
def test_p_is_at_least_t_wherever_reported(case: str, mlp_net: Network, cnn_net: Network) -> None:
    which, spec = SPECS[case]
    net = mlp_net if which == "mlp" else cnn_net
    rep = compress(
        # tiers E/T/P are proved for the uncompensated draws: compensation (the default) off
        net,
        CompressSpec.from_dict(
            {**spec, "seed": 0, "draws": 1, "compensate": False, "evaluation": {"samples": 64}}
        ),
    ).report
    reported = 0
    for layer in rep["layers"]:
        b = layer.get("bounds")
        if not b or b["P"]["A"] is None:
            continue
        reported += 1
        assert b["P"]["A"] >= b["T"]["A"] * (1 - 1e-9) >= b["E"]["A"] * (1 - 1e-9), (layer["name"], b)
        assert b["P"]["cumulative"] >= b["T"]["cumulative"] * (1 - 1e-9), (layer["name"], b)
    end = rep["summary"]["bounds"]
    if end["P"]["value"] is not None:
        assert end["P"]["value"] >= end["T"]["value"] * (1 - 1e-9)
    if case != "cnn-channel":
        assert reported > 0  # the comparison really happened


def test_channel_groups_report_p_null_with_the_reason(cnn_net: Network) -> None:
    spec = {
        "prune": {"keep": 0.6, "granularity": "channel", "fraction": 0.5},
        "seed": 0,
        "draws": 1,
        "compensate": False,  # tier P is about the uncompensated draw
    }
    rep = compress(cnn_net, CompressSpec.from_dict({**spec, "evaluation": {"samples": 64}})).report
    grouped = [layer for layer in rep["layers"] if layer["compressed"] and layer["bounds"]]
    assert grouped
    for layer in grouped:
        if layer["bounds"]["P"]["A"] is None:
            assert any("P:" in n and "group" in n for n in layer["not_covered"]), layer["not_covered"]
    assert any(layer["bounds"]["P"]["A"] is None for layer in grouped)


def test_near_constant_positive_block_would_put_p_below_e() -> None:
    """The issue's case: a Flatten→Gemm channel block of 16 columns, near-constant positive weights.
    P1's constant would sit below the exact expectation there, so it must not be reported."""
    rng = np.random.default_rng(0)
    W = (1.0 + 0.01 * rng.standard_normal((4, 64))).astype(np.float32)  # (out, in): 4 channels × 16
    layer = Layer("fc", 2, "dense", W, None, "w", None, structured=True, input_group=16)
    import torch

    X = torch.from_numpy(np.abs(rng.standard_normal((32, 64))) + 0.5)  # (S, 64), positive, correlated sign
    stats = layer_stats(layer, X, groups=True)
    draw = compress_layer(
        layer,
        stats,
        prune=PruneSpec(keep=0.75, granularity="neuron", fraction=0.625),
        quantize=None,
        keep=0.75,
        generator=generator(0, 2, 0),
    )
    assert draw.tier_E_A is not None
    A, reason = tier_P(layer, draw, stats)
    assert A is None and reason is not None and "group" in reason
    T = tier_T(layer, draw, stats)
    assert T is not None and T >= draw.tier_E_A


@pytest.mark.parametrize("width", [1, 2, 16])
def test_p_is_null_for_every_block_wider_than_one_column(width: int) -> None:
    """Neuron draws behind a Flatten (2 channels of ``width`` positions): one draw removes ``width``
    columns. P1's constant holds for single columns only (width 1: reported, and ≥ T); from two columns
    on it is null."""
    rng = np.random.default_rng(width)
    W = rng.standard_normal((3, 2 * width)).astype(np.float32)  # (out, in): 2 channels × width
    layer = Layer("fc", 2, "dense", W, None, "w", None, structured=True, input_group=width)
    import torch

    X = torch.from_numpy(rng.standard_normal((16, 2 * width)))  # (S, n_in)
    stats = layer_stats(layer, X, groups=True)
    prune = PruneSpec(keep=0.75, granularity="neuron", fraction=0.5)  # one of the 2 blocks drawn, p = 1/2
    draw = compress_layer(layer, stats, prune=prune, quantize=None, keep=0.75, generator=generator(0, 2, 0))
    assert draw.tier_E_A is not None and draw.f == pytest.approx(0.5)
    A, reason = tier_P(layer, draw, stats)
    if width == 1:
        T = tier_T(layer, draw, stats)
        assert reason is None and A is not None and T is not None and A >= T
    else:
        assert A is None and reason is not None and f"groups of {width} columns" in reason
