"""Rewrite equivalent spellings of supported ops into the one the analysis knows.

``torch.onnx.export`` writes ``nn.AdaptiveAvgPool2d(1)`` (and ``x.mean((2, 3), keepdim=True)``) as a
``ReduceMean`` over the spatial axes with ``keepdims=1``: exactly ``GlobalAveragePool``. Rewriting it
lets such CNNs get full support (channel pruning, bounds; docs/method.md §3 Lipschitz table,
AveragePool). The rewrite is done on the working graph only; ``Network.original`` keeps the upload.
"""

from __future__ import annotations

import onnx
from onnx import helper

from netshrink.compression.graph.graph_index import GraphIndex, attr


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
    """A copy of ``model`` with spatial keepdims ``ReduceMean`` nodes written as ``GlobalAveragePool``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = GraphIndex(out)
    for i, node in enumerate(out.graph.node):
        if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
            continue
        shape = g.shapes.get(node.input[0], ())
        if len(shape) != 4 or int(attr(node, "keepdims", 1)) != 1 or not _spatial_axes(node, g):  # type: ignore[call-overload]
            continue
        gap = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        out.graph.node[i].CopyFrom(gap)
    return out
