"""The uncompensated twin of a compensated draw: its held-out error and its (still valid) bounds.

Ref: docs/compensation.md "Which bound still holds". A compensated layer keeps only tier W. So that
a report never loses the stronger statement silently, the pipeline also draws the SAME whole-network
draw (same seed, same draw index, hence the same random numbers for every layer) without the refit,
measures it on the held-out split and reports its tier-E/T/P/W bounds with their meaning: they bound
that uncompensated draw (the one P1's theorems are about), not the compensated artifact.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from netshrink.compression.algorithm.plain_codes import restore
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw, draw_network, input_free, stages_for
from netshrink.compression.search.measure import Measurement, measure
from netshrink.compression.spec import CompressSpec

MEANING = (
    "These bounds are for the uncompensated draw with the same seed and draw index (same random "
    "numbers; the masks can differ downstream because each layer is drawn on its own compressed "
    "input). They do not bound the compensated artifact, for which only tier W holds."
)


def _summary(m: Measurement) -> dict[str, Any]:
    energy = m.error.reference_energy
    bounds = {}
    for t, v in m.end_to_end.items():
        bounds[t] = {
            "value": v,
            "relative": None if v is None or energy <= 0 else math.sqrt(v / energy),
            "holds": None if v is None else bool(m.error.mse <= v * (1 + 1e-9) + 1e-30),
        }
    return {
        "relative_l2": m.error.relative_l2,
        "mse": m.error.mse,
        "classification": m.classification,
        "bounds": bounds,
    }


def reused_twin(net: Network, spec: CompressSpec, chosen: NetworkDraw) -> NetworkDraw | None:
    """The twin from the draws ``chosen`` already holds, when no layer's draw depends on its input
    (``greedy.input_free``: quantization alone, f = 1): each compensated layer's plain draw kept by
    the held-back check (``chosen.plain``, its codes: ``plain_codes.restore`` rebuilds Ŵ and Var(t)),
    each other drawn layer as shipped (it is a plain draw).

    Same seed, draw index and generator keys as ``draw_network``'s twin, so the same Ŵ, codes and
    Var(t); only the fit-split A_ℓ differ (taken on the compensated upstream), and ``measure``
    re-evaluates A_ℓ on the held-out split. None when a layer's plain draw is missing (redraw).
    """
    layers = {}
    for layer in net.layers:
        d = chosen.layers.get(layer.name)
        if d is None:
            continue
        if not input_free(*stages_for(layer, spec)):
            return None
        if d.compensated:
            held = chosen.plain.get(layer.name)
            if held is None:
                return None
            d = restore(layer, held)
        layers[layer.name] = d
    return NetworkDraw(chosen.draw, layers=layers)


def compensation_section(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X_fit: torch.Tensor,
    X_ho: torch.Tensor,
    labels: np.ndarray | None,
    chosen: NetworkDraw,
    m: Measurement,
) -> dict[str, Any]:
    """The report's ``summary.compensation``: compensated layers, and the uncompensated twin measured."""
    plain = reused_twin(net, spec, chosen)
    if plain is None:
        X = X_fit if chosen.fit_rows is None else X_fit[chosen.fit_rows]  # the rows the artifact was drawn on
        plain = draw_network(net, ex, dataclasses.replace(spec, compensate=False), X, draw=chosen.draw)
    twin = measure(net, ex, plain, X_ho, labels, top1=spec.top1_target)
    return {
        "layers": [n for n, d in chosen.layers.items() if d.compensated],
        "compensated": {**_summary(m), "meaning": "the artifact: only tier W bounds it"},
        "uncompensated_same_draw": {**_summary(twin), "meaning": MEANING},
    }
