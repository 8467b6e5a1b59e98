"""The network-level half of channel pruning by dependency groups (``algorithm/group_prune.py``):
score every group by summing over its readers, then draw once per group for the whole network.

Ref: docs/method.md §1 "Structured pruning"; Fang et al. 2023 (DepGraph) for the groups. The scores
are taken on the dense network's inputs of each reader (one pass), since a group's draw must be
known before its first reader is compressed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from netshrink.compression.algorithm.fraction import keeps_a_unit
from netshrink.compression.algorithm.group_prune import GroupDraw, draw_groups
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import column_groups, layer_stats, n_units
from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.spec import CompressSpec

GROUP_STREAM = -1  # the "layer" index of the generator that draws the groups


def uses_groups(net: Network, spec: CompressSpec) -> bool:
    """True when ``spec`` prunes channels of a DAG: the draw is per dependency group."""
    return bool(
        net.dag
        and net.channel_groups is not None
        and spec.prune is not None
        and spec.prune.granularity != "weight"
    )


def too_few_units(net: Network, spec: CompressSpec) -> tuple[str, float, int] | None:
    """(layer, keep, units) of the first layer whose neuron/channel Bernoulli draw would keep one unit
    or fewer on average (``fraction.keeps_a_unit``), else None. Fixed-count draws (a DAG's groups,
    the baselines) keep one unit at least by construction and never appear here."""
    prune = spec.prune
    if prune is None or prune.granularity == "weight" or prune.method != "randomized_greedy":
        return None
    if uses_groups(net, spec):
        return None
    for layer in net.layers:
        if layer.structured and not {layer.name, layer.producer} & set(spec.exclude):
            keep, units = float(prune.keep_for(layer.name)), n_units(layer)
            if not keeps_a_unit(keep, units):
                return layer.name, keep, units
    return None


def prunes_a_unit(net: Network, spec: CompressSpec) -> bool:
    """Whether a neuron/channel prune of ``spec`` has a layer to act on: one that reads units another
    layer produces (not the model's inputs, not units a model output also shows), is not excluded,
    and is named by a per-layer keep mapping when there is one; on a DAG, a channel space no excluded
    layer reads. Keep values are the user's (1 asks for nothing). True for unstructured or no pruning."""
    prune = spec.prune
    if prune is None or prune.granularity == "weight":
        return True
    if uses_groups(net, spec):
        return any(idx.size for idx in _spaces(net, spec))
    named = prune.keep if isinstance(prune.keep, Mapping) else None
    return any(
        layer.structured
        and not {layer.name, layer.producer} & set(spec.exclude)  # an excluded producer keeps its rows
        and (named is None or layer.name in named)
        for layer in net.layers
    )


def _spaces(net: Network, spec: CompressSpec) -> list[np.ndarray]:
    """The group ids of each channel space, less the groups an excluded layer reads or writes
    (frozen): ``exclude`` leaves a layer as it is, rows included (until 2026-12-05 an excluded conv
    lost the output channels its readers dropped, found by probing)."""
    cg = net.channel_groups
    assert cg is not None
    excluded = [la for la in net.layers if la.name in spec.exclude]
    frozen = {int(g) for la in excluded for g in cg.units.get(la.name, ()) if g >= 0}  # a reader
    frozen |= {int(g) for la in excluded for g in cg.rows.get(la.name, ()) if g >= 0}  # a producer
    return [np.array([g for g in idx if int(g) not in frozen], dtype=np.int64) for idx in cg.space_groups()]


def space_deciders(net: Network, spec: CompressSpec) -> set[str] | None:
    """The layers whose keep decides a channel space (each space's first reader, ``space_keeps``),
    on a residual/depthwise/concat graph; None on a chain, where every structured layer decides its
    own. A keep move on any other reader changes nothing that is drawn, so a search offers none
    (found by probing, 2026-12-05: such moves used up measured candidates and credited byte savings
    to networks identical to their base)."""
    cg = net.channel_groups
    if not net.dag or cg is None:
        return None
    return {cg.consumers[int(idx[0])][0] for idx in _spaces(net, spec) if idx.size}


def space_keeps(net: Network, spec: CompressSpec) -> CompressSpec:
    """``spec`` with one keep per channel space: every reader of a space takes the keep of the space's
    first reader, the one ``plan_groups`` draws the space with. A dropped group is deleted from every
    reader (export/physical.py refuses otherwise), so readers cannot differ; only a per-layer keep
    mapping (the budget search's allocations, or a user's) can make them differ. Unchanged otherwise."""
    prune = spec.prune
    if prune is None or not isinstance(prune.keep, Mapping) or not uses_groups(net, spec):
        return spec
    cg = net.channel_groups
    assert cg is not None
    keep = {name: float(k) for name, k in prune.keep.items()}
    for idx in _spaces(net, spec):
        if idx.size:
            k = float(prune.keep_for(cg.consumers[int(idx[0])][0]))
            for g in idx:
                for reader in cg.consumers.get(int(g), []):
                    if reader not in spec.exclude:
                        keep[reader] = k
    kept = {name: k for name, k in keep.items() if k < 1.0}
    return dataclasses.replace(spec, prune=dataclasses.replace(prune, keep=kept) if kept else None)


def space_keep_note(net: Network, spec: CompressSpec) -> str | None:
    """The report's warning when ``space_keeps`` changes a per-layer keep the spec asked for (a user's
    mapping: the search's table shows its drawn keeps itself), else None."""
    shaped = space_keeps(net, spec)
    if shaped is spec or spec.prune is None:
        return None
    changed = []
    for layer in net.layers:
        asked = float(spec.prune.keep_for(layer.name))
        drawn = 1.0 if shaped.prune is None else float(shaped.prune.keep_for(layer.name))
        if asked != drawn and layer.name not in spec.exclude:
            changed.append(f"{layer.name} {asked:g} -> {drawn:g}")
    if not changed:
        return None
    return (
        "prune.keep: on this residual/depthwise/concat graph a keep applies per channel space (the keep "
        "of the space's first reader; every reader deletes the same channels), so these layers take "
        f'their space\'s keep: {", ".join(changed)} (docs/method.md "One keep per channel space")'
    )


def reads_drawn(net: Network, gd: GroupDraw, name: str, spec: CompressSpec) -> bool:
    """Whether layer ``name`` (not excluded) reads a group that draw ``gd`` dropped or rescaled. Such a
    reader must apply the draw whatever its own keep: one per-layer keep cannot hold the keeps of all
    the spaces a reader reads (``space_keeps`` gives it the last one), and until 2026-12-05 a concat
    reader whose own space was kept whole (keep 1) did not delete a channel an earlier space dropped;
    the export then refused the model ("dropped by some readers but not by ...", exit 2) and the
    budget search measured a network it could not ship (found by probing a DenseNet-style CNN)."""
    cg = net.channel_groups
    if cg is None or name in spec.exclude or name not in cg.units:
        return False
    units = cg.units[name]
    return bool(np.any(gd.scale[units[units >= 0]] != 1.0))


def plan_groups(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X: torch.Tensor,
    *,
    draw: int,
    sensitivities: Mapping[str, Sensitivity] | None = None,
) -> GroupDraw:
    """One draw of every group (P1's structured rule per channel space, module docstring)."""
    cg = net.channel_groups
    prune = spec.prune
    assert cg is not None and prune is not None and spec.seed is not None
    if spec.compensate:
        raise InvalidSpecError(
            "compensation is not available with channel pruning of a residual/concat graph",
            field="compensate",
        )
    readers = [la for la in net.layers if la.name in cg.units and la.name not in spec.exclude]
    with torch.no_grad():
        dense = ex.run(X, capture=[la.input for la in readers])
    scores = np.zeros(cg.n_groups)
    for layer in readers:
        units = cg.units[layer.name]
        per_unit: np.ndarray
        if prune.score == "output" and sensitivities is not None:
            per_unit = np.asarray(sensitivities[layer.name].group_sq, dtype=np.float64)
        elif prune.method == "magnitude":
            gid = column_groups(layer)
            per_unit = np.bincount(gid, weights=(layer.matrix.astype(np.float64) ** 2).sum(axis=0)).astype(
                np.float64
            )
        else:
            energy = layer_stats(layer, dense[layer.input], groups=True).group_energy
            assert energy is not None
            per_unit = energy
        ok = units >= 0
        np.add.at(scores, units[ok], per_unit[ok])
    spaces = _spaces(net, spec)
    keeps = [prune.keep_for(cg.consumers[int(idx[0])][0]) if idx.size else 1.0 for idx in spaces]
    gen = generator(spec.seed, GROUP_STREAM, draw)
    return draw_groups(spaces, scores, keeps, prune.fraction, gen, method=prune.method)
