"""Budget search: the most compressed setting whose error meets the target (``spec.target``).

The linearized prediction (docs/method.md §3) screens every candidate cheaply from the dense
activations; only candidates the prediction does not rule out get a full greedy draw, measured on
the FIT split (the held-out split is reserved for the reported numbers, docs/method.md §2). The
trace of every candidate goes into the report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from netshrink.compression.algorithm.cost import sparse_saves_bytes
from netshrink.compression.algorithm.layer_compress import compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds.prediction import Sensitivity, predict_groups, predict_independent
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import classification, output_error
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw, draw_network, stages_for
from netshrink.compression.search.group_draw import too_few_units
from netshrink.compression.search.units import unit_model
from netshrink.compression.search.verification import verification_split
from netshrink.compression.spec import CompressSpec, PruneSpec, QuantizeSpec

KEEP_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)  # 1.0: no pruning
BITS_GRID = (8, 7, 6, 5, 4, 3, 2)
PREDICTION_SLACK = 1.5  # measure a candidate unless its prediction exceeds the target by this factor
MAX_MEASURED = 8


@dataclass
class Candidate:
    keep: float | None
    bits: int | None
    cost_bits: float  # storage proxy: weight bits after compression
    predicted: float | None = None  # predicted relative_l2
    measured: float | None = None  # fit-split metric
    meets: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def candidate_spec(spec: CompressSpec, keep: float | None, bits: int | None) -> CompressSpec:
    prune = None if keep is None else dataclasses.replace(spec.prune or PruneSpec(), keep=keep)
    quant = None if bits is None else dataclasses.replace(spec.quantize or QuantizeSpec(), bits=bits)
    return dataclasses.replace(spec, prune=prune, quantize=quant, target=None, draws=1)


def _cost(net: Network, spec: CompressSpec) -> float:
    """Weight bits after compression; a structured keep counts the input units it really drops
    (``units.UnitModel``: κ = 0.9 of a 4-channel space drops none; until 2026-12-05 it counted 10%)."""
    total = 0.0
    units = unit_model(net, spec)
    keeps = (
        {} if spec.prune is None else {layer.name: spec.prune.keep_for(layer.name) for layer in net.layers}
    )
    for layer in net.layers:
        prune, quant = stages_for(layer, spec)
        bits = 32 if quant is None else quant.container_bits
        n = float(layer.weight.size)
        if prune is not None:
            keep = prune.keep_for(layer.name)
            if prune.granularity != "weight":
                n *= units.col_fraction(layer.name, keeps)
            elif sparse_saves_bytes(keep, bits):
                n *= keep * (1 + 64 / bits)  # int64 index per kept entry
        total += n * bits
    return total


def _distinct(net: Network, spec: CompressSpec, keeps: list[float | None]) -> list[float | None]:
    """``keeps`` less each structured keep that drops no unit more than a larger one (the same network:
    ``units.UnitModel``'s counts), so that no candidate is a no-op keep credited with bytes."""
    out: list[float | None] = []
    seen: set[tuple[float, ...]] = set()
    for k in keeps:
        if k is None or spec.prune is None or spec.prune.granularity == "weight":
            out.append(k)
            continue
        cspec = candidate_spec(spec, k, None)
        units = unit_model(net, cspec)
        assert cspec.prune is not None
        every = {layer.name: cspec.prune.keep_for(layer.name) for layer in net.layers}
        sig = tuple(units.col_fraction(layer.name, every) for layer in net.layers)
        if sig not in seen:
            seen.add(sig)
            out.append(k)
    return out


def _predict(
    net: Network,
    spec: CompressSpec,
    Zs: Mapping[str, torch.Tensor],
    sens: Mapping[str, Sensitivity],
    seed: int,
) -> float:
    pred = 0.0
    for layer in net.layers:
        prune, quant = stages_for(layer, spec)
        if prune is None and quant is None:
            continue
        stats = layer_stats(layer, Zs[layer.name], groups=prune is not None and prune.granularity != "weight")
        d = compress_layer(
            layer,
            stats,
            prune=prune,
            quantize=quant,
            keep=1.0 if prune is None else prune.keep_for(layer.name),
            generator=generator(seed, layer.index, 0),
        )
        pred += predict_independent(d.var, sens[layer.name])
        if d.group_tau2 is not None:
            pred += predict_groups(d.group_tau2, sens[layer.name])
    return pred


def search(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X: torch.Tensor,
    labels: Any,
    sens: Mapping[str, Sensitivity] | None,
    *,
    should_cancel: Callable[[], bool] | None = None,
    on_candidate: Callable[[int, int], None] | None = None,
) -> tuple[CompressSpec, dict[str, Any], NetworkDraw | None]:
    """Return the chosen spec, the report's ``budget`` section, and the chosen fit-split draw."""
    assert spec.target is not None and spec.seed is not None
    t = spec.target
    keeps: list[float | None] = list(KEEP_GRID) if spec.prune is not None else [None]
    bits: list[int | None] = list(BITS_GRID) if spec.quantize is not None or spec.prune is None else [None]
    # a structured keep that would leave a layer one unit or fewer on average is not a candidate
    keeps = [k for k in keeps if k is None or too_few_units(net, candidate_spec(spec, k, None)) is None]
    keeps = _distinct(net, spec, keeps)
    cands = [Candidate(k, b, _cost(net, candidate_spec(spec, k, b))) for k in keeps for b in bits]
    cands.sort(key=lambda c: (c.cost_bits, -(c.keep or 1.0), -(c.bits or 32)))
    with torch.no_grad():
        dense = ex.run(X, capture=[layer.input for layer in net.layers])
    phi = dense[net.logits]
    energy = float((phi.double().reshape(phi.shape[0], -1) ** 2).sum(dim=1).mean())
    Zs = {layer.name: dense[layer.input] for layer in net.layers}
    # compensated candidates are judged on fit samples their refit did not see (search/verification.py)
    vs = verification_split(X, dense, phi, labels, bool(spec.compensate))
    X_judge, phi_judge, labels_judge = X, phi, labels
    if vs.X_ver is not None and vs.phi_ver is not None:
        X_judge, phi_judge, labels_judge = vs.X_ver, vs.phi_ver, vs.labels_ver
    if sens is not None and t.metric == "relative_l2":
        for c in cands:
            p = _predict(net, candidate_spec(spec, c.keep, c.bits), Zs, sens, spec.seed)
            c.predicted = math.sqrt(p / energy) if energy > 0 else None
    chosen: tuple[Candidate, NetworkDraw] | None = None
    measured = 0
    for i, c in enumerate(cands):
        if on_candidate is not None:
            on_candidate(i, len(cands))
        limit = t.max if t.metric == "relative_l2" else None
        if limit is not None and c.predicted is not None and c.predicted > PREDICTION_SLACK * limit:
            continue
        if measured >= MAX_MEASURED:
            break
        cspec = candidate_spec(spec, c.keep, c.bits)
        nd = draw_network(
            net, ex, cspec, vs.X_refit, draw=0, sensitivities=sens, should_cancel=should_cancel,
            dense_inputs=vs.dense_refit,
        )  # fmt: skip
        nd.fit_rows = vs.refit_rows
        measured += 1
        with torch.no_grad():
            phi_hat = ex.run(X_judge, overrides=nd.overrides(ex.device))[net.logits]
        if t.metric == "relative_l2":
            c.measured = output_error(phi_judge, phi_hat).relative_l2
            c.meets = c.measured <= float(t.max or 0.0)
        else:
            c.measured = classification(phi_judge, phi_hat, labels_judge)["top1_agreement"]
            c.meets = c.measured is not None and c.measured >= float(t.min or 0.0)
        if c.meets:
            chosen = (c, nd)
            break
    if chosen is None:
        # Nothing met the budget on the fit split: fall back to the least aggressive candidate.
        pick = max(cands, key=lambda x: (x.cost_bits, x.keep or 1.0, x.bits or 32))
        draw = None
    else:
        pick, draw = chosen
    budget = {
        "target": dataclasses.asdict(t),
        "met": False if chosen is None else None,  # decided on the held-out split by the caller
        "chosen": {"keep": pick.keep, "bits": pick.bits},
        "trace": [x.to_dict() for x in cands],
        "selection_split": "fit",
    }
    return candidate_spec(spec, pick.keep, pick.bits), budget, draw
