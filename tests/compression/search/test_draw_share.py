"""Best of R's shared work (search/draw_share.py): the same draws, bit for bit, with fewer passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.search import select
from netshrink.compression.search.draw_share import DrawShare
from netshrink.compression.search.greedy import NetworkDraw
from netshrink.compression.search.select import best_of
from netshrink.compression.spec import HELD_BACK, CompressSpec

SPECS = [
    {"prune": {"keep": 0.5, "granularity": "neuron"}, "quantize": {"bits": 4}, "compensate": HELD_BACK},
    {"prune": {"keep": 0.5, "granularity": "neuron"}, "quantize": {"bits": 4}, "compensate": True},
    {"prune": {"keep": 0.6}, "quantize": {"bits": 3}, "compensate": HELD_BACK},
    {"quantize": {"bits": 4}, "compensate": True, "draws": 3},  # every layer's input is shared
]


def _arrays(nd: NetworkDraw) -> list[object]:
    out: list[object] = [nd.draw, nd.fit_errors]
    for name, d in sorted(nd.layers.items()):
        c = d.compressed
        out += [name, c.weight.tobytes(), None if c.codes is None else c.codes.tobytes()]
        out += [None if c.bias is None else c.bias.tobytes(), d.var.tobytes(), d.tier_E_A, d.refit_check]
    return out


@pytest.mark.parametrize("spec", SPECS)
def test_shared_work_gives_the_same_draws(
    spec: dict[str, object], mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With and without the share: the same chosen draw, fit errors, Ŵ, codes, bias, Var, tier E and
    held-back checks; and the later draws did read the shared inputs where the upstream refits ship."""
    held_back = spec.get("compensate") == HELD_BACK  # compensate: null as the pipeline resolves it
    base = {k: v for k, v in spec.items() if k != "compensate" or not held_back}
    s = CompressSpec.from_dict({**base, "seed": 5, "draws": spec.get("draws", 4)})
    s = dataclasses.replace(s, compensate=HELD_BACK) if held_back else s
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(1).standard_normal((96, *mlp_net.input_shape))).float()
    made: list[DrawShare] = []

    def counting() -> DrawShare:
        made.append(DrawShare())
        return made[-1]

    monkeypatch.setattr(select, "DrawShare", counting)
    shared = best_of(mlp_net, ex, s, X)
    monkeypatch.setattr(select, "DrawShare", lambda: None)
    alone = best_of(mlp_net, ex, s, X)
    assert _arrays(shared) == _arrays(alone)
    assert len(made) == 1 and bool(made[0].outputs) is held_back  # the held-back check's dense outputs
    first = mlp_net.layers[0].name
    if s.prune is None or s.prune.granularity == "neuron":  # the first layer is never masked
        assert first in made[0].inputs and made[0].hits >= len(alone.fit_errors) - 1
    if s.compensate is True and s.prune is None:  # every refit ships: every layer's input is shared
        assert set(made[0].inputs) == {layer.name for layer in mlp_net.layers}


def test_no_share_for_a_single_draw(mlp_net: Network, monkeypatch: pytest.MonkeyPatch) -> None:
    """One draw (compensated quantization alone, draws auto) holds nothing for later draws."""
    made: list[DrawShare] = []
    monkeypatch.setattr(select, "DrawShare", lambda: made.append(DrawShare()) or made[-1])
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(1).standard_normal((96, *mlp_net.input_shape))).float()
    nd = best_of(
        mlp_net, ex, CompressSpec.from_dict({"quantize": {"bits": 4}, "compensate": True, "seed": 0}), X
    )
    assert len(nd.fit_errors) == 1 and not made
