"""Tier E re-evaluated on held-out inputs (``measure.tier_e``) against a Monte-Carlo mean there.

The draws are made on fit inputs Z; their error is then measured on *other* inputs Z2, by the real
conv (``F.conv2d`` on the padded input) or matmul. tier_e(draw, stats(Z2)) must be that mean within
3 standard errors. For a conv it is the sum over every output position, which is what the
per-position column energies times the number of positions give (docs/method.md §3 tier E).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.search.measure import tier_e
from tests.compression.algorithm.test_layer_compress import CASES, _draws, layer_error

torch.set_num_threads(1)


@pytest.mark.parametrize("case", ["dense-prune", "dense-quant", "conv-prune", "conv-quant", "conv-channel"])
def test_held_out_tier_e_equals_monte_carlo_mean_there(case: str) -> None:
    make, kw = CASES[case]
    layer, Z = make()
    _, Z2 = make(seed=1)  # same layer shape, other inputs
    draws = _draws(layer, Z, 300, **kw)
    structured = "channel" in case
    stats2 = layer_stats(layer, Z2, groups=structured)
    if "conv" in case:
        assert stats2.positions > 1  # the factor this test is about
    err = np.array([layer_error(layer, Z2, d.compressed.weight) for d in draws])
    tier = np.array([tier_e(dataclasses.replace(d), stats2) for d in draws], dtype=np.float64)
    diff = err - tier
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert abs(diff.mean()) <= 3 * se + 1e-12, (diff.mean(), se, tier.mean())
    assert err.mean() > 0.05 * tier.mean()  # not vacuous
