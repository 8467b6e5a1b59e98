"""``auto_pad="SAME_UPPER"/"SAME_LOWER"`` as the explicit ``pads`` it stands for.

ONNX Conv/MaxPool/AveragePool spec (opset 11+): with SAME_*, the output spatial size is
ceil(in / stride), and the total padding of an axis is max(0, (out - 1)·stride + (k - 1)·d + 1 - in),
split evenly with the odd pixel at the end (SAME_UPPER) or the beginning (SAME_LOWER). With a static
input size the node is exactly the same node with those pads and ``auto_pad`` NOTSET, which the
analysis and the torch executor know (found by probing, 2026-12-05: such convs made a graph
generic). Keras/TF exports (tf2onnx) write SAME convs this way.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from netshrink.compression.graph.graph_index import GraphIndex, attr, ints

SAME = ("SAME_UPPER", "SAME_LOWER")
_OPS = ("Conv", "MaxPool", "AveragePool")


def _mode(node: onnx.NodeProto) -> str:
    raw = attr(node, "auto_pad", b"NOTSET")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def has_same_padding(node: onnx.NodeProto) -> bool:
    return node.op_type in _OPS and node.domain in ("", "ai.onnx") and _mode(node) in SAME


def explicit_pads(node: onnx.NodeProto, g: GraphIndex) -> onnx.NodeProto | None:
    """The node with SAME padding written out as ``pads``; None when the input's spatial size or
    the kernel is not known statically (the node then stays as it is, and generic)."""
    if not has_same_padding(node):
        return None
    shape = g.shapes.get(node.input[0], ())
    spatial = [d for d in shape[2:] if isinstance(d, int) and d > 0]
    if len(spatial) != 2 or len(shape) != 4:
        return None
    kernel = ints(node, "kernel_shape", [])
    if not kernel and node.op_type == "Conv" and node.input[1] in g.consts:
        kernel = [int(d) for d in g.consts[node.input[1]].shape[2:]]  # (out, in / group, kh, kw)
    if len(kernel) != 2:
        return None
    strides, dilations = ints(node, "strides", [1, 1]), ints(node, "dilations", [1, 1])
    if any(d != 1 for d in dilations):  # onnxruntime refuses dilated SAME itself: nothing to match
        return None
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        low = total // 2 if _mode(node) == "SAME_UPPER" else total - total // 2
        begin.append(low)
        end.append(total - low)
    kept = {
        a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in ("auto_pad", "pads")
    }
    return helper.make_node(
        node.op_type, list(node.input), list(node.output), name=node.name, pads=begin + end, **kept
    )
