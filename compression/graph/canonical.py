"""Rewrite equivalent spellings of supported ops into the one the analysis knows.

``torch.onnx.export`` writes ``nn.AdaptiveAvgPool2d(1)`` (and ``x.mean((2, 3), keepdim=True)``) as a
``ReduceMean`` over the spatial axes with ``keepdims=1``: exactly ``GlobalAveragePool``;
``x.mean((2, 3))`` (keepdims=0) is GlobalAveragePool + Flatten. Rewriting them lets such CNNs get
full support (channel pruning, bounds; docs/method.md §3 Lipschitz table, AveragePool). Its
TorchScript exporter also writes parameters that happen to be equal as ``Identity(initializer)``;
those become initializers again (chains too), so that BatchNorm folding sees constants, and an
initializer no node reads any more is dropped. The rewrite is done on
the working graph only; ``Network.original`` keeps the upload.
"""

from __future__ import annotations

import onnx
from onnx import helper

from netshrink.compression.graph.graph_index import GraphIndex, attr
from netshrink.compression.io.onnx_io import infer_shapes


def _spatial_axes(node: onnx.NodeProto, g: GraphIndex) -> bool:
    """True when the ReduceMean averages exactly the spatial axes of a 4-D (N, C, H, W) input."""
    axes: list[int] | None = None
    if len(node.input) > 1 and node.input[1]:  # opset >= 18: axes are an input
        if node.input[1] not in g.consts:
            return False
        axes = [int(a) for a in g.consts[node.input[1]].reshape(-1)]
    else:
        raw = attr(node, "axes", None)
        axes = None if raw is None else [int(a) for a in raw]  # type: ignore[attr-defined]
    if axes is None:
        return False
    return sorted(a % 4 for a in axes) == [2, 3]


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model``: Identity(initializer) nodes become initializers; spatial ``ReduceMean``
    becomes ``GlobalAveragePool`` (keepdims=1) or ``GlobalAveragePool`` + ``Flatten`` (keepdims=0).
    ``model`` itself when it has neither op (no copy of its weights: the loader's memory)."""
    if not any(n.op_type in ("Identity", "ReduceMean") for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = GraphIndex(out)
    used = {t for n in out.graph.node for t in [*n.input, *n.output]}
    nodes: list[onnx.NodeProto] = []
    inits = {t.name: t for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in g.outputs:
            # torch's exporter deduplicates equal parameters as Identity(initializer): a constant.
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            out.graph.initializer.append(copy)
            inits[copy.name] = copy  # a chain Identity(Identity(w)) resolves in one pass (topological)
            continue
        shape = g.shapes.get(node.input[0], ()) if node.input else ()
        if (
            node.op_type != "ReduceMean"
            or node.domain not in ("", "ai.onnx")
            or len(shape) != 4
            or not _spatial_axes(node, g)
        ):
            nodes.append(node)
            continue
        if int(attr(node, "keepdims", 1)) == 1:  # type: ignore[call-overload]
            nodes.append(
                helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
            )
            continue
        mid = f"{node.output[0]}_pooled"
        while mid in used:
            mid += "_"
        used.add(mid)
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [mid], name=node.name))
        nodes.append(
            helper.make_node("Flatten", [mid], list(node.output), name=f"{node.name}/flatten", axis=1)
        )
    grew = len(nodes) > len(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    _drop_unused_initializers(out)
    return infer_shapes(out) if grew else out


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Initializers no node and no graph output reads any more (an Identity chain's sources, once
    its end is a constant): kept, they went into the compressed file as float copies of a weight
    and made it larger than the upload (found by probing, 2026-12-05)."""
    read = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    unused = {t.name for t in model.graph.initializer if t.name not in read}
    if not unused:
        return
    keep = [t for t in model.graph.initializer if t.name not in unused]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    inputs = [i for i in model.graph.input if i.name not in unused]  # an initializer listed as an input
    del model.graph.input[:]
    model.graph.input.extend(inputs)
