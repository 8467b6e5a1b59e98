"""Rewrite equivalent spellings of supported ops into the one the analysis knows.

``torch.onnx.export`` writes ``nn.AdaptiveAvgPool2d(1)`` (and ``x.mean((2, 3), keepdim=True)``) as a
``ReduceMean`` over the spatial axes with ``keepdims=1``: exactly ``GlobalAveragePool``;
``x.mean((2, 3))`` (keepdims=0) is GlobalAveragePool + Flatten. Rewriting them lets such CNNs get
full support (channel pruning, bounds; docs/method.md §3 Lipschitz table, AveragePool). Its
TorchScript exporter also writes parameters that happen to be equal as ``Identity(initializer)``;
those become initializers again, so that BatchNorm folding sees constants. The rewrite is done on
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
    return infer_shapes(out) if grew else out
