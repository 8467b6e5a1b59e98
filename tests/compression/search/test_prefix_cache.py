"""The budget search's PrefixCache (compression/search/prefix_cache.py): the refit moments' bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.compensate import prepare
from netshrink.compression.graph.network import Layer
from netshrink.compression.search import prefix_cache
from netshrink.compression.search.prefix_cache import PrefixCache


def _layer(n_in: int, n_out: int) -> tuple[Layer, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((n_out, n_in)).astype(np.float32)
    layer = Layer("fc", 1, "dense", W, np.zeros(n_out, np.float32), "w", "b", structured=True)
    Zd = torch.from_numpy(np.abs(rng.standard_normal((50, n_in))).astype(np.float32))  # (S, n_in)
    return layer, Zd + 0.1, Zd


def test_refit_moments_within_the_bound_are_kept_and_reused() -> None:
    layer, Z, Zd = _layer(12, 5)
    cache = PrefixCache(1 << 20)
    first = cache.prepared(("k",), layer, Z, Zd)
    assert first is not None and cache.prepared(("k",), layer, Z, Zd) is first and cache.refit_hits == 1
    want = prepare(layer, Z, Zd)
    assert torch.equal(first.H, want.H) and torch.equal(first.B, want.B)


def test_refit_moments_larger_than_the_bound_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 (memory): H and B larger than the cache's bound on their own are not kept (the refit
    then frees them before its solves; a cached entry stayed next to them: 134 MB on the 17M MLP's
    4096-wide layer, twice the bound). Before, the newest entry always stayed, over the bound too."""
    monkeypatch.setattr(prefix_cache, "REFIT_FLOOR", 0)
    layer, Z, Zd = _layer(12, 5)
    n = 13  # n_in + the bias column
    cache = PrefixCache(4 * (n * n + 5 * n) - 1)  # one byte short of this layer's H and B
    assert cache.prepared(("k",), layer, Z, Zd) is None
    assert not cache.refits
    roomy = PrefixCache(4 * (n * n + 5 * n))
    assert roomy.prepared(("k",), layer, Z, Zd) is not None and len(roomy.refits) == 1


def test_an_uncached_refit_drops_the_older_refit_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 (memory): when a layer's H and B are too large to keep, the entries already held are
    dropped too, so none is held through that refit's peak. On the 17M MLP the last layer's 64 MiB H
    (within the bound, never reused) stayed through every later refit of the 4096-wide layer."""
    monkeypatch.setattr(prefix_cache, "REFIT_FLOOR", 0)
    small, Zs, Zsd = _layer(4, 3)
    big, Z, Zd = _layer(12, 5)
    n = 13
    cache = PrefixCache(4 * (n * n + 5 * n) - 1)  # the small layer's moments fit, the big one's do not
    assert cache.prepared(("s",), small, Zs, Zsd) is not None and len(cache.refits) == 1
    assert cache.prepared(("b",), big, Z, Zd) is None
    assert not cache.refits


def test_dense_outputs_are_made_once_per_layer() -> None:
    """The dense output y on the refit and held-back rows depends on the search's fixed dense input
    only: made once per layer and handed to every later refit of it (the same tensors)."""
    from netshrink.compression.algorithm.compensate import dense_output
    from netshrink.compression.algorithm.layer_held_back import held_back_rows

    layer, _, Zd = _layer(12, 5)
    cache = PrefixCache(1 << 20)
    first = cache.dense_outputs(layer, Zd)
    assert cache.dense_outputs(layer, Zd) is first
    r, v = held_back_rows(int(Zd.shape[0]))
    for got, rows in zip(first, (r, v), strict=True):
        want = dense_output(layer, Zd[rows])
        assert got is not None and want is not None and torch.equal(got, want)
