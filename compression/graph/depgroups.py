"""Channel coupling groups of a DAG, as Torch-Pruning's DepGraph computes them (Fang et al., CVPR 2023,
"DepGraph: Towards Any Structural Pruning", §3.2 dependency graph), on an ONNX graph.

Every (tensor, channel) pair is a node of a union-find; the graph's ops tie them:
- elementwise ops, pools, Pad, Clip, BatchNorm (folded), GlobalAveragePool: channel c in = c out;
- Add of two tensors: channel c of both operands and of the sum are one;
- Concat on channels: channel c of operand i is channel off_i + c of the output;
- a depthwise conv ties its input channel c to its output channel c (its filter c goes with them);
- Flatten of (N, C, H, W): features c·HW … (c+1)·HW − 1 all belong to channel c.
A class of the union-find is one **dependency group**: the rows of every layer producing it, the
filter of every depthwise conv carrying it and the input units (a channel, or the H·W block of a
flattened channel) of every layer reading it are removed together. A group is **locked** (never
cut) when it reaches the graph input (Layer 1's inputs), a graph output or Φ, an op not listed
above, a grouped conv that is not depthwise, or when one layer reads two of its units.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

from netshrink.compression.graph.graph_index import GraphIndex
from netshrink.compression.graph.network import Layer

__all__ = ["ChannelGroups", "dependency_groups"]

ONE_TO_ONE = frozenset(
    {
        "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Softplus", "Gelu", "Clip", "HardSigmoid", "HardSwish",
        "MaxPool", "AveragePool", "GlobalAveragePool", "Pad", "Dropout", "Identity", "Cast",
    }
)  # fmt: skip
SCALAR_ARITH = frozenset({"Mul", "Div", "Add", "Sub"})


@dataclass
class ChannelGroups:
    """The prunable dependency groups. Group ids are 0..n_groups−1; −1 marks a unit outside any."""

    n_groups: int
    units: dict[str, np.ndarray] = field(default_factory=dict)  # consumer layer -> (n_units,) group id
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # producer/depthwise -> (n_out,) group id
    space: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n_groups,) space id
    consumers: dict[int, list[str]] = field(default_factory=dict)  # group -> consumer layers, in order
    # layer -> groups it reads that a layer upstream of it also reads (a shared draw: not independent)
    shared_upstream: dict[str, set[int]] = field(default_factory=dict)

    def space_groups(self) -> list[np.ndarray]:
        """Groups of each channel space (same set of tensors), the unit of P1's per-layer rule."""
        return [np.flatnonzero(self.space == s) for s in range(int(self.space.max(initial=-1)) + 1)]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(self, a: tuple[str, int]) -> tuple[str, int]:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _channels(g: GraphIndex, t: str) -> int:
    shape = g.shapes.get(t, ())
    return int(shape[1]) if len(shape) >= 2 and shape[1] else 0


def _depthwise(layer: Layer) -> bool:
    return layer.conv is not None and layer.conv.group == layer.n_out and layer.weight.shape[1] == 1


def dependency_groups(
    g: GraphIndex, layers: list[Layer], nodes: list[onnx.NodeProto], logits: str
) -> ChannelGroups:
    """Dependency groups over ``nodes`` (the ancestors of Φ, in topological order); sets
    ``structured``/``input_group`` of every layer that reads a prunable group (module docstring)."""
    uf = _UnionFind()
    graph_inputs = {t for n in nodes for t in n.input if t and t not in g.producer and t not in g.consts}
    locked: set[str] = set(g.outputs) | {logits} | graph_inputs  # inputs and outputs are never cut
    by_node = {la.name: la for la in layers}
    consumer_of: dict[str, tuple[Layer, str, int]] = {}  # layer -> (layer, input tensor, unit size)
    producer_of: dict[str, tuple[Layer, str]] = {}
    for node in nodes:
        dyn = g.dynamic_inputs(node)
        out = node.output[0] if node.output else ""
        op = node.op_type
        layer = by_node.get(node.name)
        if layer is not None:
            if layer.conv is not None and layer.conv.group != 1:
                if not _depthwise(layer):
                    locked.update([dyn[0], out])
                    continue
                for c in range(layer.n_out):
                    uf.union((dyn[0], c), (out, c))
                producer_of[layer.name] = (layer, out)
                continue
            unit = 1
            src = g.producer.get(dyn[0])
            if layer.kind == "dense" and src is not None and src.op_type == "Flatten":
                shape = g.shapes.get(src.input[0], ())
                unit = _hw(shape)
            if unit:
                consumer_of[layer.name] = (layer, dyn[0], unit)
            else:
                locked.add(dyn[0])
            producer_of[layer.name] = (layer, out)
            continue
        C = _channels(g, out)
        if op in ONE_TO_ONE or (op in SCALAR_ARITH and len(dyn) == 1):
            consts = [g.consts[t] for t in node.input if t in g.consts and op in SCALAR_ARITH]
            if any(c.size != 1 for c in consts) and not _is_bias(node, layers):
                locked.update([*dyn, out])
                continue
            for c in range(C):
                uf.union((dyn[0], c), (out, c))
        elif op == "Add" and len(dyn) == 2:
            for c in range(C):
                uf.union((dyn[0], c), (out, c))
                uf.union((dyn[1], c), (out, c))
        elif op == "Concat":
            off = 0
            for t in dyn:
                for c in range(_channels(g, t)):
                    uf.union((t, c), (out, off + c))
                off += _channels(g, t)
        elif op == "Flatten" and len(g.shapes.get(dyn[0], ())) == 4:
            shape = g.shapes[dyn[0]]
            hw = _hw(shape)
            if not hw:
                locked.update([dyn[0], out])
                continue
            for f in range(_channels(g, dyn[0]) * hw):
                uf.union((dyn[0], f // hw), (out, f))
        else:
            locked.update([*dyn, *[o for o in node.output if o]])
    out = _collect(g, uf, locked, consumer_of, producer_of, layers)
    for name, ids in out.units.items():
        layer = by_node[name]
        upstream = {n.name for n in g.ancestors(layer.input)} & set(out.units)
        mine = {int(i) for i in ids if i >= 0}
        shared = {i for other in upstream for i in out.units[other].tolist() if i in mine}
        if shared:
            out.shared_upstream[name] = shared
    return out


def _hw(shape: tuple[int | None, ...]) -> int:
    """H·W of a static (N, C, H, W) shape, 0 when unknown."""
    if len(shape) != 4 or not all(shape[1:]):
        return 0
    return int(shape[2] or 0) * int(shape[3] or 0)


def _is_bias(node: onnx.NodeProto, layers: list[Layer]) -> bool:
    return node.op_type == "Add" and any(
        la.preact == node.output[0] and la.bias_key in node.input for la in layers
    )


def _collect(
    g: GraphIndex,
    uf: _UnionFind,
    locked: set[str],
    consumer_of: dict[str, tuple[Layer, str, int]],
    producer_of: dict[str, tuple[Layer, str]],
    layers: list[Layer],
) -> ChannelGroups:
    members: dict[tuple[str, int], set[str]] = defaultdict(set)  # root -> tensors
    for key in list(uf.parent):
        members[uf.find(key)].add(key[0])
    bad = {root for root, tensors in members.items() if tensors & locked}
    unit_roots: dict[str, list[tuple[str, int] | None]] = {}
    for name, (layer, t, unit) in consumer_of.items():
        n_units = int(layer.weight.shape[1]) if layer.kind == "conv" else layer.n_in // unit
        roots = [uf.find((t, u * unit)) if (t, u * unit) in uf.parent else None for u in range(n_units)]
        if layer.kind == "dense" and unit > 1:  # every feature of a unit must sit in the unit's group
            for u, r in enumerate(roots):
                if r is None or any(uf.find((t, u * unit + k)) != r for k in range(unit)):
                    roots[u] = None
        seen: dict[tuple[str, int], int] = defaultdict(int)
        for r in roots:
            if r is not None:
                seen[r] += 1
        bad |= {r for r, n in seen.items() if n > 1}  # one layer reads two units of a group
        bad |= {r for r in roots if r is None}  # type: ignore[misc]
        unit_roots[name] = roots
    row_roots = {
        name: [uf.find((t, c)) if (t, c) in uf.parent else None for c in range(layer.n_out)]
        for name, (layer, t) in producer_of.items()
    }
    readers = {r for roots in unit_roots.values() for r in roots if r is not None}
    makers = {r for roots in row_roots.values() for r in roots if r is not None}
    good = sorted(
        (r for r in members if r not in bad and r in readers and r in makers), key=_order(layers, unit_roots)
    )
    gid = {r: i for i, r in enumerate(good)}
    spaces: dict[frozenset[str], int] = {}
    space = np.array([spaces.setdefault(frozenset(members[r]), len(spaces)) for r in good], dtype=np.int64)
    out = ChannelGroups(n_groups=len(good), space=space)
    for layer in layers:
        if layer.name in unit_roots:
            ids = np.array(
                [gid.get(r, -1) if r is not None else -1 for r in unit_roots[layer.name]], np.int64
            )
            if (ids >= 0).any():
                out.units[layer.name] = ids
                layer.structured, layer.producer = True, None
                layer.input_group = consumer_of[layer.name][2] if layer.kind == "dense" else 1
                for i in np.unique(ids[ids >= 0]):
                    out.consumers.setdefault(int(i), []).append(layer.name)
        if layer.name in row_roots:
            ids = np.array([gid.get(r, -1) if r is not None else -1 for r in row_roots[layer.name]], np.int64)
            if (ids >= 0).any():
                out.rows[layer.name] = ids
    return out


def _order(layers: list[Layer], unit_roots: dict[str, list[tuple[str, int] | None]]):  # type: ignore[no-untyped-def]
    """Sort key: groups in the order of their first reader, then by unit index (deterministic)."""
    first: dict[tuple[str, int], tuple[int, int]] = {}
    for i, layer in enumerate(layers):
        for u, r in enumerate(unit_roots.get(layer.name, [])):
            if r is not None and r not in first:
                first[r] = (i, u)
    return lambda r: first.get(r, (len(layers), 0)) + (r[0], r[1])
