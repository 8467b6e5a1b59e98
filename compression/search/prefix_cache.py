"""The budget search's cache of layer draws, layer inputs and refit moments, keyed by the prefix of
layer settings that determines them (a module of its own: ``search/greedy.py`` draws, this keeps).

Ref: docs/budget-search.md "Cost"; the keys follow P1 Algorithm 1's order (layer ℓ depends only on
layers 1..ℓ and the draw index).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from netshrink.compression.algorithm.compensate import Prepared, dense_output, prepare
from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.layer_held_back import held_back_rows
from netshrink.compression.algorithm.scores import LayerStats
from netshrink.compression.graph.network import Layer

if TYPE_CHECKING:
    from netshrink.compression.evaluation.executor import Executor
    from netshrink.compression.search.greedy import NetworkDraw

__all__ = ["REFIT_FLOOR", "PrefixCache", "layer_draw_nbytes"]


REFIT_FLOOR = 32 << 20  # bytes the refit cache may hold even for a small network


class PrefixCache:
    """Layer draws keyed by (draw, (name, keep, bits) of layers 1..ℓ), least recently used first out.

    Bounded by ``max_bytes``: the bytes of the arrays its draws hold (Ŵ, codes, outliers and the
    variance, ``layer_draw_nbytes``), so a search over a large model does not hold every draw. The
    newest draw always stays, even when it alone is over the bound (it is also the draw in use).
    ``pin`` names the draws of the one network draw the search may still ship: the caller holds
    them anyway, so they are neither counted nor evicted, and every candidate that shares a prefix
    with that draw (each later round of the budget search walks on from it) reuses its layers.
    ``inputs`` holds a layer's input ẑ_{ℓ−1} on the fit split and its statistics, keyed by the
    upstream prefix (draw, settings of layers 1..ℓ−1, the layer): the same under every setting of
    layer ℓ, so a candidate that changes only a later layer skips the forward pass and the
    statistics of the layers above it. Bounded by the same bytes (least recently used first out;
    the newest and the pinned draw's inputs stay). With ``groups`` (a search that may prune by units)
    a structured layer's pruned and unpruned settings share one entry: the statistics are the same
    numbers, and the group energies are added to the entry when a candidate first prunes the layer
    (``scores.with_group_energy``, the same sums; issue 11: most inputs are never pruned).
    ``refits`` holds the refit's mask-independent part (``compensate.prepare``: the moments H and
    B) keyed by (the upstream prefix, the layer): layer ℓ's input depends only on layers 1..ℓ−1, so
    every setting of layer ℓ tried after the same upstream draw reuses it. Bounded by the same bytes
    (at least ``REFIT_FLOOR``, since a layer's n_in² can dwarf a small network's weights); older
    entries are dropped *before* a new one is computed when it would not fit, so the cache adds at
    most the newest entry to the refit's own peak. An entry larger than the bound on its own is not
    kept: the refit then frees H and B before its solves (``compensate_layer``), where a cached
    entry would stay next to them (on the 17M MLP's 4096-wide layer H and B are 134 MB, twice the
    bound, and the budget search reused such an entry once in 8 candidates); the entries already
    held are dropped then too, so that none is held through that refit (there: the last layer's
    64 MiB H, never reused in the ``--target-top1 0.99`` search, issue 10).
    ``outputs`` holds each layer's dense output y = W z + b on the refit rows and on the held-back
    rows of its dense input (``dense_outputs``): the search's dense input is fixed, so y is the same
    for every candidate; one (S, out) float32 pair per layer, the size of the dense activations
    the search holds anyway (issue 10: a third of each refit's moments on the 17M MLP's wide layer).
    """

    def __init__(self, max_bytes: int, *, groups: bool = False) -> None:
        self.max_bytes = max_bytes
        # the search may draw structured masks: one entry serves every setting of a structured layer
        # (pruned or not); its group energies are added when a candidate first prunes it
        self.groups = groups
        self.items: dict[tuple[object, ...], LayerDraw] = {}
        # ẑ and its statistics; None until a candidate reads them (an unpruned held-back layer's)
        self.inputs: dict[tuple[object, ...], tuple[torch.Tensor, LayerStats | None]] = {}
        self.refits: dict[tuple[object, ...], Prepared] = {}
        self.outputs: dict[tuple[str, int], tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.pinned: frozenset[tuple[object, ...]] = frozenset()  # keys of the draw the caller holds
        self.hits = 0
        self.input_hits = 0
        self.refit_hits = 0
        # layer inputs on the search's held-back rows by input key (``held_back_logits``)
        self.ver: dict[tuple[object, ...], torch.Tensor] = {}
        self.ver_hits = 0

    def dense_outputs(
        self, layer: Layer, Z_dense: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``compensate.dense_output`` of layer's dense input ``Z_dense`` (S, *in) on its refit rows
        and on its held-back rows (``held_back_rows``), made once per layer and kept."""
        key = (layer.name, int(Z_dense.shape[0]))
        hit = self.outputs.get(key)
        if hit is None:
            r, v = held_back_rows(key[1], Z_dense.device)
            hit = (dense_output(layer, Z_dense[r]), dense_output(layer, Z_dense[v]))
            self.outputs[key] = hit
        return hit

    def prepared(
        self,
        key: tuple[object, ...],
        layer: Layer,
        Z: torch.Tensor,
        Z_dense: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> Prepared | None:
        """``compensate.prepare(layer, Z, Z_dense, y=y)``, cached under ``key`` (the upstream prefix);
        None when it alone is larger than the bound (the caller then refits without it)."""
        p = self.refits.get(key)
        if p is not None:
            self.refit_hits += 1
            return p
        limit = max(self.max_bytes, REFIT_FLOOR)
        n = layer.n_in + int(layer.bias is not None)
        new = 4 * (n * n + layer.n_out * n)  # H (n, n), B (out, n); float32
        if new > limit:  # not kept: the caller's refit prepares it and frees it before its solves;
            self.refits.clear()  # nor are older entries held through that refit's peak (issue 10)
            return None
        while self.refits and sum(x.nbytes for x in self.refits.values()) + new > limit:
            del self.refits[next(iter(self.refits))]
        p = prepare(layer, Z, Z_dense, y=y)
        self.refits[key] = p
        return p

    def held_back_logits(self, ex: Executor, nd: NetworkDraw, X: torch.Tensor) -> torch.Tensor:
        """Φ̂ (S_v, K) on ``X``, the search's held-back rows (the same rows at every call), under
        ``nd``'s overrides. Layer ℓ's input on X depends only on layers 1..ℓ−1, like its input on the
        refit rows: the deepest one held under ``nd``'s prefix seeds the run, so the layers above it
        are not run again (the same tensors, so the same Φ̂), and the inputs it computes are kept,
        at most ``max_bytes // 8`` of them (least recently used first out; issue 11)."""
        keys = {k[-2]: k for k, name in nd.cache_keys.items() if name is None}  # layer -> input key
        acts: dict[str, torch.Tensor] = {}
        for layer in reversed(ex.net.layers):
            k = keys.get(layer.name)
            if k is not None and k in self.ver:
                acts[layer.input] = self.ver.pop(k)
                self.ver[k] = acts[layer.input]  # most recently used last
                self.ver_hits += 1
                break
        with torch.no_grad():
            phi = ex.run(X, overrides=nd.overrides(ex.device), cache=acts)[ex.net.logits]  # (S_v, K)
        for layer in ex.net.layers:
            k = keys.get(layer.name)
            if k is not None and k not in self.ver and layer.input in acts:
                self.ver[k] = acts[layer.input]
        while len(self.ver) > 1 and sum(int(t.nbytes) for t in self.ver.values()) > self.max_bytes // 8:
            del self.ver[next(iter(self.ver))]
        return phi

    def get(self, key: tuple[object, ...]) -> LayerDraw | None:
        d = self.items.pop(key, None)
        if d is not None:
            self.hits += 1
            self.items[key] = d  # most recently used last
        return d

    def put(self, key: tuple[object, ...], d: LayerDraw) -> None:
        self.items[key] = d
        self._evict(self.items, self.nbytes, key)

    def get_input(self, key: tuple[object, ...]) -> tuple[torch.Tensor, LayerStats | None] | None:
        """Layer ℓ's input ẑ_{ℓ−1} (S, …) and its statistics under the upstream prefix ``key``."""
        hit = self.inputs.pop(key, None)
        if hit is not None:
            self.input_hits += 1
            self.inputs[key] = hit
        return hit

    def put_input(self, key: tuple[object, ...], Z: torch.Tensor, stats: LayerStats | None) -> None:
        self.inputs[key] = (Z, stats)
        self._evict(self.inputs, self.input_nbytes, key)

    def pin(self, nd: NetworkDraw) -> None:
        """Pin the layer draws of ``nd`` (the draw the caller keeps; put back if they were evicted
        while it was drawn) and those of its inputs still held; the previously pinned ones become
        ordinary entries and may be evicted."""
        self.pinned = frozenset(nd.cache_keys)
        for key, name in nd.cache_keys.items():
            if name is not None and key not in self.items:
                self.items[key] = nd.layers[name]
        self._evict(self.items, self.nbytes, None)
        self._evict(self.inputs, self.input_nbytes, None)

    def _evict(self, store: dict[tuple[object, ...], Any], size: Callable[[], int], newest: object) -> None:
        while size() > self.max_bytes:
            victim = next((k for k in store if k != newest and k not in self.pinned), None)
            if victim is None:
                return
            del store[victim]

    def nbytes(self) -> int:
        """Bytes of the draws held, the pinned ones (the caller holds them) not counted."""
        return sum(layer_draw_nbytes(d) for k, d in self.items.items() if k not in self.pinned)

    def input_nbytes(self) -> int:
        return sum(int(z.nbytes) for z, _ in self.inputs.values())


def layer_draw_nbytes(d: LayerDraw) -> int:
    """Bytes of the per-entry arrays a layer draw holds (what a cache or a kept draw costs)."""
    c = d.compressed
    arrays = (c.weight, c.codes, c.outliers, d.var)
    return sum(int(a.nbytes) for a in arrays if a is not None)
