"""Producer / consumer / constant indices over one ONNX graph, and attribute readers."""

from __future__ import annotations

import onnx

from netshrink.compression.io.onnx_io import constant_arrays, static_shapes


class GraphIndex:
    """Producer / consumer / constant indices over one ``ModelProto``."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.consts = constant_arrays(model)
        self.shapes = static_shapes(model)
        self.outputs = {o.name for o in model.graph.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for t in node.output:
                self.producer[t] = node
            for t in node.input:
                if t:
                    self.consumers.setdefault(t, []).append(node)

    def dynamic_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [t for t in node.input if t and t not in self.consts]

    def ancestors(self, tensor: str) -> list[onnx.NodeProto]:
        """Nodes needed to compute ``tensor``, in topological (graph) order."""
        need, stack = set(), [tensor]
        while stack:
            node = self.producer.get(stack.pop())
            if node is not None and node.name not in need:
                need.add(node.name)
                stack.extend(t for t in node.input if t)
        return [n for n in self.nodes if n.name in need]


def attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return [int(v) for v in attr(node, name, default)]  # type: ignore[attr-defined]
