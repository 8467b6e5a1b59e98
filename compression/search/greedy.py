"""Whole-network randomized greedy compression: one layer at a time, input to output.

Ref: P1 §3.2, Algorithm 1; docs/method.md §1. When layer ℓ is compressed the earlier layers already
are, so its statistics come from the compressed upstream input ẑ_{ℓ−1} on the *fit* split.
The choice between whole-network draws (best of R, ``draws="auto"``) lives in ``search/select.py``.
With ``spec.compensate`` every compressed layer is refit after its mask is drawn
(algorithm/layer_compensated.py; docs/compensation.md); with ``HELD_BACK`` (``compensate: null``
resolved) the refit is kept per layer only where held-back fit rows prefer it (layer_held_back.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from netshrink.compression.algorithm.group_prune import prune_units
from netshrink.compression.algorithm.layer_compensated import compress_layer_compensated
from netshrink.compression.algorithm.layer_compress import LayerDraw, compress_layer
from netshrink.compression.algorithm.layer_held_back import (
    MIN_SAMPLES,
    compress_layer_held_back,
    held_back_rows,
)
from netshrink.compression.algorithm.plain_codes import compact
from netshrink.compression.algorithm.prune import PruneResult
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import LayerStats, layer_stats, with_group_energy
from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.errors import CancelledError
from netshrink.compression.evaluation.executor import BIAS, Executor
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.search.draw_share import DrawShare, ships_same
from netshrink.compression.search.group_draw import plan_groups, reads_drawn, space_keeps, uses_groups
from netshrink.compression.search.prefix_cache import PrefixCache
from netshrink.compression.spec import HELD_BACK, CompressSpec, PruneSpec, QuantizeSpec

StepFn = Callable[[int, int], None]  # (layer index, layers total)
AUTO_PATIENCE = 3  # draws="auto": stop after this many draws without a gain on the best fit error
AUTO_MAX_DRAWS = 16  # draws="auto": never more draws than this
AUTO_MIN_DRAWS = 4  # draws="auto": the work cap never goes below this (1 + AUTO_PATIENCE)
AUTO_WORK = 2**34  # draws="auto": R · parameters · fit samples stays within this (or R = AUTO_MIN_DRAWS)


def auto_cap(n_params: int, n_samples: int) -> int:
    """The most draws ``draws="auto"`` makes: min(16, max(4, ⌊2^34 / (parameters · fit samples)⌋)).

    A draw costs a forward pass over the fit split (parameters · samples multiply-adds) plus the
    rounding of every weight, so the cap bounds the draws' total work: a small model keeps up to 16
    draws, the 17M-parameter MLP with 1,150 fit samples (2.0e10 per draw) gets 4. Deterministic: it
    reads only shapes (docs/method.md §1 "Best of R draws").
    """
    per_draw = max(1, int(n_params) * int(n_samples))
    return max(AUTO_MIN_DRAWS, min(AUTO_MAX_DRAWS, AUTO_WORK // per_draw))


@dataclass
class NetworkDraw:
    """One whole-network draw: the compressed layers and the fit-split output error."""

    draw: int
    layers: dict[str, LayerDraw] = field(default_factory=dict)
    fit_relative_l2: float = float("nan")
    fit_errors: list[float] = field(default_factory=list)  # fit-split rel. error of every draw made
    fit_logits: torch.Tensor | None = None  # (S, K) Φ̂ on the fit split (``draw_network(logits=True)``)
    max_draws: int | None = None  # draws="auto": the cap of the rule for this model (``auto_cap``)
    fit_rows: torch.Tensor | None = None  # drawn on these fit-split rows only (a compensated search)
    # its PrefixCache keys: a layer draw's key -> the layer's name; an input's key -> None
    cache_keys: dict[tuple[object, ...], str | None] = field(default_factory=dict)
    # ``draw_network(keep_plain=True)``: the plain draw a shipped refit was judged against, per layer,
    # where it does not depend on the layer's input (``input_free``), as codes (``plain_codes.compact``):
    # the uncompensated twin's layer
    plain: dict[str, LayerDraw] = field(default_factory=dict)

    def overrides(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Ŵ per layer name, and the compensated bias under ``name + BIAS`` (executor convention)."""
        out = {
            name: torch.as_tensor(d.compressed.weight, dtype=torch.float32, device=device)
            for name, d in self.layers.items()
        }
        for name, d in self.layers.items():
            if d.compressed.bias is not None:
                out[name + BIAS] = torch.as_tensor(d.compressed.bias, dtype=torch.float32, device=device)
        return out

    def without_arrays(self) -> NetworkDraw:
        """A copy whose layer draws hold no per-entry array (``LayerDraw.without_arrays``): once the
        artifact is written, the pipeline keeps this instead, so that the onnxruntime sessions of the
        check are not built next to Ŵ, the codes and Var(t) (0.56 GiB on the 64→8192→8192→10 MLP)."""
        layers = {name: d.without_arrays() for name, d in self.layers.items()}
        return dataclasses.replace(self, layers=layers, fit_logits=None)

    def draws_summary(self) -> dict[str, object]:
        """R, the rule that fixed it, and the spread of the fit-split errors (report field ``draws``)."""
        e = self.fit_errors
        cap = self.max_draws
        if cap is None:
            rule = "not the auto rule: R as asked (draws=R), or the budget search's verification draws"
        elif cap == 1:  # auto_cap is never below AUTO_MIN_DRAWS: 1 means nothing in the spec is random
            rule = (
                "auto: one draw, since nothing in the spec is random (round-to-nearest, magnitude/OBD, "
                "or compensated quantization without randomized pruning): every draw would be the same"
            )
        else:
            rule = (
                f"auto: stop after {AUTO_PATIENCE} draws without a gain, at most {cap} "
                f"(= min({AUTO_MAX_DRAWS}, max({AUTO_MIN_DRAWS}, 2^34 / (parameters x fit samples))))"
            )
        return {
            "R": len(e),
            "chosen": self.draw,
            "rule": rule,
            "max_draws": cap,
            "fit_relative_l2": {
                "min": min(e) if e else None,
                "median": float(np.median(e)) if e else None,  # the mean of the middle two when even
                "max": max(e) if e else None,
            },
            "all_fit_relative_l2": list(e),
        }


def stages_for(layer: Layer, spec: CompressSpec) -> tuple[PruneSpec | None, QuantizeSpec | None]:
    """Which stages apply to ``layer``: excluded layers get none; structured pruning needs a producer.

    Per-layer bits are resolved here: the returned QuantizeSpec carries this layer's single width.
    """
    if layer.name in spec.exclude:
        return None, None
    prune = spec.prune
    if prune is not None:
        if prune.keep_for(layer.name) >= 1.0:
            prune = None
        elif prune.granularity != "weight" and not layer.structured:
            prune = None  # layer 1's columns are the model's inputs: never deleted (docs/method.md §1)
        elif prune.granularity != "weight" and layer.producer in spec.exclude:
            prune = None  # its input units are an excluded layer's rows, which stay as they are
    quant = spec.quantize
    if quant is not None and isinstance(quant.bits, Mapping):
        b = quant.bits_for(layer.name)
        quant = None if b is None else dataclasses.replace(quant, bits=b)  # per-layer bits (mixed search)
    return prune, quant


def input_free(prune: PruneSpec | None, quant: QuantizeSpec | None) -> bool:
    """Whether a layer's plain draw depends on its input only through tier E's fit-split value A_ℓ:
    quantization alone with f = 1. ``quantize_matrix`` then ranks nothing by E[ẑ_j²]: Ŵ, the codes
    and Var(t) come from W and the generator alone, so the draw on another input (the uncompensated
    twin's) has the same arrays, and its A_ℓ is re-evaluated on the held-out split anyway (measure)."""
    return prune is None and quant is not None and float(quant.fraction) == 1.0


def draw_network(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X: torch.Tensor,
    *,
    draw: int,
    sensitivities: Mapping[str, Sensitivity] | None = None,
    on_layer: StepFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    cache: PrefixCache | None = None,
    dense_inputs: Mapping[str, torch.Tensor] | None = None,
    logits: bool = False,
    keep_plain: bool = False,
    share: DrawShare | None = None,
) -> NetworkDraw:
    """Compress every layer once, greedily from input to output (P1 Algorithm 1).

    ``cache`` (the budget search's): layer ℓ's draw depends only on the settings of layers 1..ℓ, the
    draw index and the fixed rest of the spec, so a draw is reused for any candidate sharing that
    prefix (seeded generators make it the identical draw). ``dense_inputs``: the dense z_{ℓ−1} on
    ``X`` when the caller already has them (the refit's target under ``compensate``).
    One forward pass per draw: the activations computed for layer ℓ's input stay in ``acts`` and only
    those below the newly compressed layer are recomputed (``Executor.invalidate``). ``logits=True``
    also leaves Φ̂ on X in ``fit_logits`` (the same pass, continued to the output). ``keep_plain``:
    under ``compensate: null``, keep in ``plain`` the plain draw of each layer whose refit shipped,
    where ``input_free`` (the uncompensated twin reuses it instead of drawing again). ``share``: what
    the draws of one best-of-R have in common (``draw_share.py``; without ``cache`` only).
    """
    assert spec.seed is not None
    result = NetworkDraw(draw)
    acts: dict[str, torch.Tensor] = {}  # activations of X under the current overrides
    overrides: dict[str, torch.Tensor] = {}
    dense: Mapping[str, torch.Tensor] = dense_inputs or {}
    gd = None
    if uses_groups(net, spec):  # channels coupled through Add/Concat/depthwise: one draw per group
        spec = space_keeps(net, spec)  # every reader of a space prunes it alike
    assert spec.seed is not None
    if uses_groups(net, spec):
        gd = plan_groups(net, ex, spec, X, draw=draw, sensitivities=sensitivities)
        cache = None  # a group draw is planned for the whole network: no per-prefix reuse
    if cache is not None or gd is not None:
        share = None
    same_in = share is not None  # this layer's input is the same in every draw (draw_share.py)
    if spec.compensate and not dense:
        with torch.no_grad():
            dense = ex.run(X, capture=[layer.input for layer in net.layers])  # z_{ℓ−1}, the refit's target
    key: tuple[object, ...] = (draw,)
    for layer in net.layers:
        if should_cancel is not None and should_cancel():
            raise CancelledError("cancelled between layers")
        if on_layer is not None:
            on_layer(layer.index, len(net.layers))
        prune, quant = stages_for(layer, spec)
        if prune is None and gd is not None and reads_drawn(net, gd, layer.name, spec):
            prune = spec.prune  # a reader whose keep is 1 reads a space another reader's keep draws
        upstream = (*key, layer.name)  # layer ℓ's input depends on layers 1..ℓ−1 only
        key += ((layer.name, None if prune is None else prune.keep_for(layer.name), quant and quant.bits),)
        if prune is None and quant is None:
            continue
        structured = prune is not None and prune.granularity != "weight"
        # a search that may prune this layer by units keeps one input entry for both (prefix_cache.py);
        # its group energies are computed when a candidate first prunes the layer (``with_group_energy``)
        groups = structured or (cache is not None and cache.groups and layer.structured)
        cached = None if cache is None else cache.get(key)
        if cache is not None:
            result.cache_keys.update({key: layer.name, (*upstream, groups): None})
        if cached is not None:
            _apply(result, overrides, layer.name, cached, ex.device)
            ex.invalidate(acts, layer.name)
            continue
        grouped = layer.conv is not None and layer.conv.group != 1
        # the budget search's unpruned held-back layer reads its input's statistics only where its
        # plain draw ships (the refit wins almost always): made then, and kept in the cache entry
        lazy = cache is not None and spec.compensate == HELD_BACK and not grouped and prune is None
        in_key = (*upstream, groups)
        hit = None if cache is None else cache.get_input(in_key)
        shared = share.get_input(layer.name) if share is not None and same_in else None
        if shared is not None:  # another draw's ẑ_{ℓ−1}: the same upstream arrays
            hit = shared.Z, shared.stats
        stats: LayerStats | None
        if hit is not None:  # ẑ_{ℓ−1} under this upstream prefix, from an earlier candidate
            Z, stats = hit
            acts[layer.input] = Z
            if stats is None and not lazy:  # an entry a lazy candidate made: its statistics now
                stats = layer_stats(layer, Z, groups=structured)
                if cache is not None:
                    cache.put_input(in_key, Z, stats)
            if stats is not None and structured and stats.group_energy is None:  # the first to prune it
                stats = with_group_energy(layer, Z, stats)
                if cache is not None:
                    cache.put_input(in_key, Z, stats)
        else:
            with torch.no_grad():
                Z = ex.run(X, overrides=overrides, capture=[layer.input], cache=acts, logits=False)[
                    layer.input
                ]
            stats = None if lazy else layer_stats(layer, Z, groups=structured)
            if cache is not None:
                cache.put_input(in_key, Z, stats)
            if share is not None and same_in and stats is not None:
                share.put_input(layer.name, Z, stats)
        sens = None
        if prune is not None and prune.score == "output" and sensitivities is not None:
            # Groups sharing one draw are scored by their exact E‖J W_g ẑ_g‖² (docs/method.md §3).
            s = sensitivities[layer.name]
            sens = s.group_sq if structured else s.weight_sq
        keep = 1.0 if prune is None else prune.keep_for(layer.name)
        gen = generator(spec.seed, layer.index, draw)
        if spec.compensate == HELD_BACK and not grouped:  # null: the refit only where it pays off
            prep = ys = None
            held = int(Z.shape[0]) >= MIN_SAMPLES  # else nothing is held back: the plain draw ships
            if held and cache is not None:  # H and B on the refit rows (S_r, *in) only
                r, _ = held_back_rows(int(Z.shape[0]), Z.device)
                ys = cache.dense_outputs(layer, dense[layer.input])  # y on the refit, held-back rows
                prep = cache.prepared(upstream, layer, Z[r], dense[layer.input][r], ys[0])
            elif held and share is not None:  # y on the refit and held-back rows: once per layer
                ys = share.dense_outputs(layer, dense[layer.input])
            plain: list[LayerDraw] = []
            d = compress_layer_held_back(
                layer,
                stats if stats is not None else _stats_on_demand(cache, in_key, layer, Z),
                Z,
                dense[layer.input],
                prune=prune,
                quantize=quant,
                keep=keep,
                generators=(gen, generator(spec.seed, layer.index, draw)),
                sensitivity=sens,
                prepared=prep,
                plain_out=plain if keep_plain else None,  # only the twin keeps it
                dense_out=ys,
            )
            if keep_plain and d.compensated and input_free(prune, quant):
                result.plain[layer.name] = compact(plain[0])  # its codes: 1 byte a weight
            del plain
        elif spec.compensate and not grouped:  # a grouped conv's im2col is per group: not refit (v1)
            assert stats is not None  # only a held-back layer's are made on demand
            d = compress_layer_compensated(
                layer,
                stats,
                Z,
                dense[layer.input],
                prune=prune,
                quantize=quant,
                keep=keep,
                generator=gen,
                sensitivity=sens,
                prepared=None if cache is None else cache.prepared(upstream, layer, Z, dense[layer.input]),
            )
        else:
            assert stats is not None
            pruned = None
            if gd is not None and prune is not None and net.channel_groups is not None:
                units = net.channel_groups.units[layer.name]
                pruned = prune_units(layer, stats, units, gd, ex.device, Z)
            d = compress_layer(
                layer,
                stats,
                prune=prune,
                quantize=quant,
                keep=keep,
                generator=gen,
                sensitivity=sens,
                device=ex.device,
                pruned=pruned,
            )
            if pruned is not None and net.channel_groups is not None:
                d.group_draw = True
                d.coupled = _coupled(net, layer.name, pruned)
        if cache is not None:
            cache.put(key, d)
        same_in = same_in and ships_same(d, prune)
        _apply(result, overrides, layer.name, d, ex.device)
        ex.invalidate(acts, layer.name)
        del Z, stats
    if logits:
        with torch.no_grad():
            result.fit_logits = ex.run(X, overrides=overrides, cache=acts)[net.logits]  # (S, K)
    return result


def _stats_on_demand(
    cache: PrefixCache | None, key: tuple[object, ...], layer: Layer, Z: torch.Tensor
) -> Callable[[], LayerStats]:
    """``layer_stats(layer, Z)`` (no group energies: an unpruned layer) made at the first call and
    put into the cache entry ``key``, which holds ``Z`` without them until then."""
    made: list[LayerStats] = []

    def make() -> LayerStats:
        if not made:
            made.append(layer_stats(layer, Z, groups=False))
            if cache is not None:
                cache.put_input(key, Z, made[0])
        return made[0]

    return make


def _apply(
    result: NetworkDraw, overrides: dict[str, torch.Tensor], name: str, d: LayerDraw, device: torch.device
) -> None:
    """Record layer ``name``'s draw and make the next layers see its Ŵ (and compensated bias)."""
    result.layers[name] = d
    overrides[name] = torch.as_tensor(d.compressed.weight, dtype=torch.float32, device=device)
    if d.compressed.bias is not None:
        overrides[name + BIAS] = torch.as_tensor(d.compressed.bias, dtype=torch.float32, device=device)


def _coupled(net: Network, name: str, pruned: PruneResult) -> bool:
    """Whether a randomized group read at ``name`` is also read upstream: the draw then reaches this
    layer's input too, and its bound takes the coupled rule (docs/bounds-dag.md)."""
    cg = net.channel_groups
    assert cg is not None and pruned.group_tau2 is not None
    units = cg.units[name]
    rand = {int(units[u]) for u in np.flatnonzero(pruned.group_tau2 > 0)}
    return bool(rand & cg.shared_upstream.get(name, set()))


def baseline_specs(spec: CompressSpec) -> list[CompressSpec]:
    """The deterministic baselines at the same density and bits (docs/method.md §1 "Baselines").

    Pruning: magnitude and OBD; quantization: round-to-nearest. Combined stages pair each pruning
    baseline with RTN. Baselines are never compensated (they are the classical methods) and carry
    only tier W.
    """
    prunes: list[PruneSpec | None] = [None]
    if spec.prune is not None:
        prunes = [dataclasses.replace(spec.prune, method=m, score="layer") for m in ("magnitude", "obd")]
    quant = None if spec.quantize is None else dataclasses.replace(spec.quantize, method="rtn")
    return [
        dataclasses.replace(spec, prune=p, quantize=quant, draws=1, target=None, compensate=False)
        for p in prunes
    ]
