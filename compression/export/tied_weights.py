"""Tied weights: one initializer read by several layers (a module called twice, tied projections).

The greedy driver draws every layer on its own input (docs/method.md §1), so two layers of one
tensor would get two different draws, while the artifact can store only one tensor (the exporter
used to write both, and its graph failed the ONNX checker). The core's layers stay as
the graph analysis finds them (a shared weight already makes the graph generic: bounds not
covered); what changes is who draws the tensor:

- the first reader (graph order) that the spec compresses draws it, on its own input, and every
  other reader is excluded from drawing. The executor applies a layer's draw to the initializer by name
  (``Executor.run``'s overrides), so the measured error is that of every reader using that one
  draw; the exporter writes the tensor once and every reader reads the same dequantized tensor,
  so the artifact is what was measured;
- a reader the user excluded keeps the whole tensor as it is (every reader stays uncompressed):
  excluding one layer of a tied weight cannot compress the tensor through another.

Either way the report's warnings name the tensor and its layers, and ``exclude`` in the report's
spec lists the readers excluded here, so the spec reproduces the run.
"""

from __future__ import annotations

import dataclasses

from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import stages_for
from netshrink.compression.spec import CompressSpec


def shared_weights(net: Network) -> dict[str, list[str]]:
    """Weight initializer -> the names of the layers that read it, in graph order, for every
    initializer read by more than one layer."""
    readers: dict[str, list[str]] = {}
    for layer in net.layers:
        readers.setdefault(layer.weight_key, []).append(layer.name)
    return {key: names for key, names in readers.items() if len(names) > 1}


def tie_shared_weights(net: Network, spec: CompressSpec) -> tuple[CompressSpec, list[str]]:
    """``spec`` with the readers that must not draw a shared weight added to ``exclude``, and one
    summary warning per shared weight (see the module docstring)."""
    shared = shared_weights(net)
    if not shared:
        return spec, []
    excluded = set(spec.exclude)
    added: list[str] = []
    notes: list[str] = []
    for key, names in shared.items():
        listed = ", ".join(repr(n) for n in names)
        asked = [n for n in names if n in excluded]
        if asked:
            added += [n for n in names if n not in excluded]
            notes.append(
                f"weight {key!r} is shared by layers {listed}; {asked[0]!r} is excluded, so the "
                "shared tensor is kept uncompressed for every one of them"
            )
            continue
        # the first reader the spec compresses (per-layer bits or keep may skip some), else the first
        first = next((n for n in names if stages_for(net.layer(n), spec) != (None, None)), names[0])
        rest = [n for n in names if n != first]
        added += rest
        others = ", ".join(repr(n) for n in rest)
        verb = "reads" if len(rest) == 1 else "read"
        notes.append(
            f"weight {key!r} is shared by layers {listed}: it is compressed once, by the draw of "
            f"{first!r} on its own input, and {others} {verb} the same compressed tensor (excluded "
            "from drawing, listed in exclude; the measured error includes every reader)"
        )
    if not added:
        return spec, notes
    return dataclasses.replace(spec, exclude=(*spec.exclude, *added)), notes
