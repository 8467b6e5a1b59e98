"""The uncompensated twin (search/twin.py): reused from the held-back check's plain draws where no
layer's draw depends on its input, with the same section as drawing it again."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.search.measure import measure
from netshrink.compression.search.select import best_of
from netshrink.compression.search.twin import compensation_section, reused_twin
from netshrink.compression.spec import HELD_BACK, CompressSpec


def _inputs(net: Network, n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, *net.input_shape))).float()


@pytest.mark.parametrize("draws", [1, 3])
def test_reused_twin_gives_the_section_of_the_redrawn_twin(mlp_net: Network, draws: int) -> None:
    spec = dataclasses.replace(
        CompressSpec.from_dict({"quantize": {"bits": 3}, "draws": draws, "seed": 5}), compensate=HELD_BACK
    )
    ex = Executor(mlp_net)
    X_fit, X_ho = _inputs(mlp_net, 160, 0), _inputs(mlp_net, 64, 1)
    chosen = best_of(mlp_net, ex, spec, X_fit, keep_plain=True)
    compensated = [n for n, d in chosen.layers.items() if d.compensated]
    assert compensated and set(chosen.plain) == set(compensated)
    twin = reused_twin(mlp_net, spec, chosen)
    assert twin is not None
    m = measure(mlp_net, ex, chosen, X_ho, None)
    reused = compensation_section(mlp_net, ex, spec, X_fit, X_ho, None, chosen, m)
    chosen.plain = {}  # nothing kept: the twin is drawn again, as before the reuse
    assert reused_twin(mlp_net, spec, chosen) is None
    redrawn = compensation_section(mlp_net, ex, spec, X_fit, X_ho, None, chosen, m)
    assert reused == redrawn  # every error and bound, exactly


def test_no_reuse_when_a_draw_reads_its_input(mlp_net: Network) -> None:
    """Pruning scores entries by E[ẑ_j²], so the twin's masks differ downstream: it is drawn again."""
    spec = dataclasses.replace(
        CompressSpec.from_dict({"prune": {"keep": 0.5}, "quantize": {"bits": 4}, "seed": 2}),
        compensate=HELD_BACK,
    )
    ex = Executor(mlp_net)
    chosen = best_of(mlp_net, ex, spec, _inputs(mlp_net, 160, 0), keep_plain=True)
    assert chosen.plain == {} and reused_twin(mlp_net, spec, chosen) is None
