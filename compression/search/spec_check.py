"""Refusing a spec that cannot apply to a network: cheap checks against the loaded model, run by the
service on submit (a 422 before any job exists) and by ``pipeline.compress`` before anything is drawn
(docs/api.md "What the document says, and what it cannot", rules 4, 8, 9 and 10)."""

from __future__ import annotations

import math

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.graph.network import Network
from netshrink.compression.io.onnx_io import static_shapes
from netshrink.compression.search.group_draw import prunes_a_unit, too_few_units
from netshrink.compression.spec import CompressSpec

__all__ = ["check_spec"]


def check_spec(net: Network, spec: CompressSpec) -> None:
    """Refuse a spec that cannot apply to this network (cheap; the service calls it on submit)."""
    names = {layer.name for layer in net.layers}
    unknown = [n for n in spec.exclude if n not in names]
    if unknown:
        raise InvalidSpecError(
            f"exclude names unknown layers: {', '.join(unknown)}; layers are {', '.join(sorted(names))}",
            field="exclude",
        )
    if spec.prune is not None and not isinstance(spec.prune.keep, float | int):
        bad = [n for n in spec.prune.keep if n not in names]
        if bad:
            raise InvalidSpecError(f"prune.keep names unknown layers: {', '.join(bad)}", field="prune.keep")
    if spec.quantize is not None and not isinstance(spec.quantize.bits, int):
        bad = [n for n in spec.quantize.bits if n not in names]
        if bad:
            raise InvalidSpecError(
                f"quantize.bits names unknown layers: {', '.join(bad)}", field="quantize.bits"
            )
    _check_structured_keep(net, spec)
    _check_top1_target(net, spec)
    if net.support != "full":
        # why it is generic: the operators the analysis named (until 2026-12-05 the refusal named none)
        why = f": {'; '.join(net.not_covered[:3])}" if net.not_covered else ""
        if spec.prune is not None and spec.prune.granularity != "weight":
            raise InvalidSpecError(
                "neuron/channel pruning needs full support; this graph is generic "
                f"(only unstructured pruning and quantization apply){why}",
                field="prune.granularity",
            )
        if spec.prune is not None and spec.prune.score == "output":
            raise InvalidSpecError(
                f"the output-aware score needs full support (autograd through the graph){why}",
                field="prune.score",
            )
    if not prunes_a_unit(net, spec):
        assert spec.prune is not None
        unit = "neuron" if spec.prune.granularity == "neuron" else "channel"
        raise InvalidSpecError(
            f"{unit} pruning applies to no layer of this model: a {unit} is removed from the layer that "
            "produces it and every layer that reads it, so the model's inputs, its outputs and units "
            "a model output also shows are never removed, and here no other unit is left (or every "
            "layer reading one is excluded, or missing from the per-layer keep); use granularity "
            "'weight', or leave prune out",
            field="prune.granularity",
        )


def _check_structured_keep(net: Network, spec: CompressSpec) -> None:
    """A neuron/channel Bernoulli draw keeps each layer's top unit and needs more than one unit kept
    on average (``fraction.keeps_a_unit``): refuse a keep below that, naming the layer."""
    few = too_few_units(net, spec)
    if few is not None:
        name, keep, units = few
        smallest = f"keep > {1.0 / units:.3g} for this layer; or exclude it" if units > 1 else "exclude it"
        raise InvalidSpecError(
            f"prune.keep={keep:g} keeps {keep * units:.3g} of the {units} unit(s) layer {name!r} reads on "
            f"average; a neuron/channel draw keeps more than one ({smallest})",
            field="prune.keep",
        )


def _check_top1_target(net: Network, spec: CompressSpec) -> None:
    """A top-1 agreement target needs two outputs per sample at least: the argmax of one never
    changes, so such a target would be met by any model, however broken."""
    if not spec.top1_target:
        return
    shape = static_shapes(net.model).get(net.logits)
    if shape is None or any(d is None for d in shape[1:]):
        return  # not known statically: measured as given
    outputs = math.prod(d for d in shape[1:] if d is not None)
    if outputs < 2:
        raise InvalidSpecError(
            f"a top-1 agreement target needs at least 2 outputs per sample; this model's output "
            f"{net.logits!r} has {outputs}, whose argmax never changes: use a relative_l2 target "
            "(--target-error) instead",
            field="target.metric",
        )
