"""Whole-network randomized greedy compression: one layer at a time, input to output.

Ref: P1 §3.2, Algorithm 1; docs/method.md §1. When layer ℓ is compressed the earlier layers already
are, so its statistics come from the compressed upstream input ẑ_{ℓ−1} on the *fit* split.
Best-of-R (derived): R whole-network draws; the one with the lowest fit-split output error is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from netshrink.compression.algorithm.layer_compress import LayerDraw, compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.errors import CancelledError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import output_error
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.spec import CompressSpec, PruneSpec, QuantizeSpec

StepFn = Callable[[int, int], None]  # (layer index, layers total)


@dataclass
class NetworkDraw:
    """One whole-network draw: the compressed layers and the fit-split output error."""

    draw: int
    layers: dict[str, LayerDraw] = field(default_factory=dict)
    fit_relative_l2: float = float("nan")

    def overrides(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {
            name: torch.as_tensor(d.compressed.weight, dtype=torch.float32, device=device)
            for name, d in self.layers.items()
        }


def stages_for(layer: Layer, spec: CompressSpec) -> tuple[PruneSpec | None, QuantizeSpec | None]:
    """Which stages apply to ``layer``: excluded layers get none; structured pruning needs a producer."""
    if layer.name in spec.exclude:
        return None, None
    prune = spec.prune
    if prune is not None:
        if prune.keep_for(layer.name) >= 1.0:
            prune = None
        elif prune.granularity != "weight" and not layer.structured:
            prune = None  # layer 1's columns are the model's inputs: never deleted (docs/method.md §1)
    return prune, spec.quantize


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
) -> NetworkDraw:
    """Compress every layer once, greedily from input to output (P1 Algorithm 1)."""
    assert spec.seed is not None
    result = NetworkDraw(draw)
    overrides: dict[str, torch.Tensor] = {}
    for layer in net.layers:
        if should_cancel is not None and should_cancel():
            raise CancelledError("cancelled between layers")
        if on_layer is not None:
            on_layer(layer.index, len(net.layers))
        prune, quant = stages_for(layer, spec)
        if prune is None and quant is None:
            continue
        with torch.no_grad():
            Z = ex.run(X, overrides=overrides, capture=[layer.input])[layer.input]  # ẑ_{ℓ−1}
        structured = prune is not None and prune.granularity != "weight"
        stats = layer_stats(layer, Z, groups=structured)
        sens = None
        if prune is not None and prune.score == "output" and sensitivities is not None:
            # Groups sharing one draw are scored by their exact E‖J W_g ẑ_g‖² (docs/method.md §3).
            s = sensitivities[layer.name]
            sens = s.group_sq if structured else s.weight_sq
        d = compress_layer(
            layer,
            stats,
            prune=prune,
            quantize=quant,
            keep=1.0 if prune is None else prune.keep_for(layer.name),
            generator=generator(spec.seed, layer.index, draw),
            sensitivity=sens,
            device=ex.device,
        )
        result.layers[layer.name] = d
        overrides[layer.name] = torch.as_tensor(d.compressed.weight, dtype=torch.float32, device=ex.device)
    return result


def best_of(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X: torch.Tensor,
    *,
    sensitivities: Mapping[str, Sensitivity] | None = None,
    on_layer: StepFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> NetworkDraw:
    """Best of ``spec.draws`` whole-network draws by fit-split relative error (ties: first draw)."""
    with torch.no_grad():
        phi = ex.run(X)[net.logits]
    best: NetworkDraw | None = None
    for r in range(spec.draws):
        nd = draw_network(
            net,
            ex,
            spec,
            X,
            draw=r,
            sensitivities=sensitivities,
            on_layer=on_layer,
            should_cancel=should_cancel,
        )
        with torch.no_grad():
            phi_hat = ex.run(X, overrides=nd.overrides(ex.device))[net.logits]
        nd.fit_relative_l2 = output_error(phi, phi_hat).relative_l2
        if best is None or nd.fit_relative_l2 < best.fit_relative_l2:
            best = nd
    assert best is not None
    return best


def baseline_specs(spec: CompressSpec) -> list[CompressSpec]:
    """The deterministic baselines at the same density and bits (docs/method.md §1 "Baselines").

    Pruning: magnitude and OBD; quantization: round-to-nearest. Combined stages pair each pruning
    baseline with RTN. Baselines carry only tier W.
    """
    prunes: list[PruneSpec | None] = [None]
    if spec.prune is not None:
        prunes = [dataclasses.replace(spec.prune, method=m, score="layer") for m in ("magnitude", "obd")]
    quant = None if spec.quantize is None else dataclasses.replace(spec.quantize, method="rtn")
    return [dataclasses.replace(spec, prune=p, quantize=quant, draws=1, target=None) for p in prunes]
