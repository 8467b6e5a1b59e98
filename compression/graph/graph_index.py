"""Producer / consumer / constant indices over one ONNX graph, and attribute readers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from netshrink.compression.io.onnx_io import constant_arrays, static_shapes

SMALL_CONST_BYTES = 1 << 20  # initializers up to this size are converted once and kept


class LazyConsts(Mapping[str, np.ndarray]):
    """The graph's constants by name, converted to numpy only when read.

    Memory: an index over a 17M-parameter model no longer holds a second copy of every weight
    (``GraphIndex`` is built three times while loading). Initializers of up to
    ``SMALL_CONST_BYTES`` are kept once converted; a larger one is converted on each read (a fresh,
    read-only array; the few readers take it once per layer).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self._inits = {t.name: t for t in model.graph.initializer}
        small = onnx.ModelProto()  # the Constant nodes' values (small by nature)
        small.graph.node.extend(n for n in model.graph.node if n.op_type == "Constant")
        self._cache: dict[str, np.ndarray] = constant_arrays(small)

    def __getitem__(self, name: str) -> np.ndarray:
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        t = self._inits[name]  # KeyError for names that are not constants
        arr = numpy_helper.to_array(t)
        if arr.nbytes <= SMALL_CONST_BYTES:
            self._cache[name] = arr
        return arr

    def __contains__(self, name: object) -> bool:
        return name in self._cache or name in self._inits

    def __iter__(self) -> Iterator[str]:
        yield from self._inits
        yield from (k for k in self._cache if k not in self._inits)

    def __len__(self) -> int:
        return len(self._inits) + sum(1 for k in self._cache if k not in self._inits)


class GraphIndex:
    """Producer / consumer / constant indices over one ``ModelProto``."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.consts: Mapping[str, np.ndarray] = LazyConsts(model)
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
