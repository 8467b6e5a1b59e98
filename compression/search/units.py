"""What a structured keep really drops, and whether a layer's draw changed anything at all.

A neuron/channel keep κ is a fraction; the draws turn it into a count of units, each by its own rule:

- a channel space of G groups on a residual/depthwise/concat graph (a DAG), any method: a fixed count,
  G − max(1, ⌊κG + ½⌋) dropped (``algorithm/group_prune.draw_groups``; derived, docs/bounds-dag.md
  "Fixed-count draws"; the groups are DepGraph's, Fang et al. 2023);
- a chain layer's G input units, magnitude/OBD baselines: G − max(1, round(κG)) dropped
  (``algorithm/prune._baseline_groups``);
- a chain layer's G units under P1's randomized rule (P1 §3.2, Algorithm 1: one Bernoulli(p) per
  randomized unit, p = 1 − (1−κ)G/m, docs/method.md §1 "Choosing (f, p)"): (1 − κ)G dropped in
  expectation.

So κ = 0.9 of a 4-channel space keeps ⌊3.6 + ½⌋ = 4 channels: the draw drops nothing. ``UnitModel``
gives the budget searches' byte models the units a keep really drops (until 2026-12-05 they scaled a
reader's whole input by κ: such a keep was credited bytes it never saved, and the search shipped it,
found by probing), and ``noop_keep_note`` the report's warning. ``unchanged`` says a layer's draw
left its weight as it was (nothing dropped, nothing quantized, nothing refit): such a layer is not
compressed (``drop_unchanged``), and the exporter leaves its tensors as uploaded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.algorithm.scores import n_units
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.search.greedy import NetworkDraw
from netshrink.compression.search.group_draw import _spaces, uses_groups
from netshrink.compression.spec import CompressSpec

__all__ = ["UnitModel", "drop_unchanged", "noop_keep_note", "unchanged", "unit_model"]


@dataclass(frozen=True)
class Space:
    """Units drawn together: a DAG's channel space, or a chain layer's input units."""

    decider: str  # the layer whose keep draws it (a DAG space's first reader, ``space_keeps``)
    size: int  # G, its units


@dataclass(frozen=True)
class UnitModel:
    """Which space each layer's input units and output rows belong to, and how many a keep keeps."""

    spaces: tuple[Space, ...]
    fixed: bool  # a DAG's fixed-count group draw
    baseline: bool  # magnitude/OBD: round(κG) kept on a chain
    cols: Mapping[str, tuple[int, dict[int, int]]]  # layer -> (its input units, {space: units in it})
    rows: Mapping[str, tuple[int, dict[int, int]]]  # layer -> (its output rows, {space: rows in it})

    def kept(self, s: int, keep: float) -> float:
        """Units of space ``s`` kept at ``keep`` (module docstring; the expectation for P1's rule)."""
        G = self.spaces[s].size
        if keep >= 1.0:
            return float(G)
        if self.fixed:
            return float(max(1, math.floor(keep * G + 0.5)))
        if self.baseline:
            return float(max(1, round(keep * G)))
        return keep * G

    def _fraction(self, entry: tuple[int, dict[int, int]] | None, keep: Mapping[str, float]) -> float:
        if entry is None:
            return 1.0
        n, per_space = entry
        lost = sum(
            c * (1.0 - self.kept(s, keep.get(self.spaces[s].decider, 1.0)) / self.spaces[s].size)
            for s, c in per_space.items()
        )
        return 1.0 - lost / n

    def col_fraction(self, name: str, keep: Mapping[str, float]) -> float:
        """The fraction of layer ``name``'s input columns kept under per-layer ``keep``."""
        return self._fraction(self.cols.get(name), keep)

    def row_fraction(self, name: str, keep: Mapping[str, float]) -> float:
        """The fraction of layer ``name``'s output rows kept (its readers' dropped units)."""
        return self._fraction(self.rows.get(name), keep)

    def signature(self, name: str, keep: float) -> tuple[float, ...]:
        """Units kept of every space layer ``name``'s keep decides: two keeps with one signature draw
        the same count (the same draw, for fixed counts and baselines); () when it decides none."""
        return tuple(self.kept(s, keep) for s, sp in enumerate(self.spaces) if sp.decider == name)


def unit_model(net: Network, spec: CompressSpec | None = None) -> UnitModel:
    """The ``UnitModel`` of ``net`` under ``spec``'s exclusions and prune method (P1's rule when
    ``spec`` has no prune stage); a DAG's channel spaces when ``spec`` prunes by units and ``net`` has
    dependency groups (``uses_groups``, or any DAG with groups when ``spec`` has no prune stage)."""
    spec = spec or CompressSpec()
    baseline = spec.prune is not None and spec.prune.method != "randomized_greedy"
    cg = net.channel_groups
    fixed = uses_groups(net, spec) if spec.prune is not None else bool(net.dag and cg is not None)
    spaces: list[Space] = []
    cols: dict[str, tuple[int, dict[int, int]]] = {}
    rows: dict[str, tuple[int, dict[int, int]]] = {}
    if fixed:
        assert cg is not None
        space_of = np.full(cg.n_groups, -1, dtype=np.int64)  # (n_groups,) drawn space, −1 if frozen
        for idx in _spaces(net, spec):
            if idx.size:
                space_of[idx] = len(spaces)
                spaces.append(Space(cg.consumers[int(idx[0])][0], int(idx.size)))
        for target, ids_of in ((cols, cg.units), (rows, cg.rows)):
            for name, ids in ids_of.items():
                s = np.where(ids >= 0, space_of[np.maximum(ids, 0)], -1)  # (n,) space of each unit
                counts = np.bincount(s[s >= 0], minlength=len(spaces))
                target[name] = (int(ids.size), {int(i): int(counts[i]) for i in np.flatnonzero(counts)})
        return UnitModel(tuple(spaces), True, baseline, cols, rows)
    for layer in net.layers:
        if not layer.structured or layer.producer is None or {layer.name, layer.producer} & set(spec.exclude):
            continue
        G = n_units(layer)
        cols[layer.name] = (G, {len(spaces): G})
        rows[layer.producer] = (G, {len(spaces): G})  # the producer's rows are the units (physical.py)
        spaces.append(Space(layer.name, G))
    return UnitModel(tuple(spaces), False, baseline, cols, rows)


def unchanged(layer: Layer, cw: CompressedWeight) -> bool:
    """Whether ``cw`` leaves ``layer`` as it is: not quantized, no unit dropped, no refit bias, and Ŵ
    equal to W entry for entry (a keep that rounds to every unit; a baseline dropping nothing). Not
    so for a randomized draw that dropped no unit but rescaled the survivors by 1/p (Ŵ ≠ W)."""
    if cw.codes is not None or cw.bits is not None or cw.bias is not None:
        return False
    if cw.dropped_inputs is not None and cw.dropped_inputs.size:
        return False
    return cw.weight.shape == layer.weight.shape and bool(np.array_equal(cw.weight, layer.weight))


def drop_unchanged(net: Network, nd: NetworkDraw) -> NetworkDraw:
    """``nd`` without the layer draws that changed nothing (``unchanged``): those layers are reported
    ``compressed: false`` and the artifact keeps their tensors (found by probing, 2026-12-05: they were
    reported compressed at keep 1.0, and the file grew, rewritten from the working graph)."""
    same = [n for n, d in nd.layers.items() if unchanged(net.layer(n), d.compressed)]
    if not same:
        return nd
    layers = {n: d for n, d in nd.layers.items() if n not in same}
    plain = {n: d for n, d in nd.plain.items() if n not in same}
    return dataclasses.replace(nd, layers=layers, plain=plain)


def noop_keep_note(net: Network, spec: CompressSpec) -> str | None:
    """The report's warning when a neuron/channel keep the spec asks for keeps every unit of what it
    draws (module docstring's counts): the layer, the keep and the units, else None. P1's randomized
    rule on a chain draws each unit, so no keep below 1 is a no-op there."""
    prune = spec.prune
    if prune is None or prune.granularity == "weight":
        return None
    model = unit_model(net, spec)
    if not model.fixed and not model.baseline:
        return None
    unit = "channels" if model.fixed or prune.granularity == "channel" else "neurons"
    found = []
    for s, sp in enumerate(model.spaces):
        keep = float(prune.keep_for(sp.decider))
        if keep < 1.0 and model.kept(s, keep) >= sp.size:
            what = (
                f"the {sp.size}-channel space it decides" if model.fixed else f"the {sp.size} {unit} it reads"
            )
            found.append(f"{sp.decider} keep {keep:g} of {what} keeps all {sp.size}")
    if not found:
        return None
    rule = (
        "a channel space of G channels on a residual/depthwise/concat graph keeps max(1, ⌊κG + ½⌋), drawn "
        "with the keep of its first reader"
        if model.fixed
        else f"{prune.method} keeps max(1, round(κG)) of a layer's G input {unit}"
    )
    return (
        f"prune.keep drops no unit of what these keeps draw: {'; '.join(found)} ({rule}; a keep below "
        "1 − 1/(2G) drops one). A layer nothing else prunes, quantizes or refits is left as it is "
        '(compressed: false; docs/method.md "A keep that drops no unit")'
    )
