"""Write the ONNX graph an architecture JSON describes (``netshrink.architecture/v1`` and ``/v2``).

``build_onnx`` takes a validated architecture (``io.architecture.validate_architecture``)
and its state dict, and writes the graph with ``onnx.helper`` / ``numpy_helper.from_array`` at opset
21 with a dynamic batch dimension. Ref: docs/architecture-json.md, "The ONNX graph it becomes".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.io.architecture import ACTIVATION_KINDS, OPSET


def build_onnx(arch: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX graph (opset 21, input ``input`` of shape (batch, *input_shape)) of a *validated*
    architecture. The output is ``logits``, or ``probabilities`` / ``log_probabilities`` after a
    final softmax / log_softmax (then ``logits`` is that node's input). A residual block becomes an
    ``Add`` of its body and its shortcut (the block's input when there is none), a concat block a
    ``Concat(axis=1)`` of its branches, each reading the block's input."""
    b = _Builder(state)
    layers = arch["layers"]
    final = layers[-1]["kind"] if layers[-1]["kind"] in ("softmax", "log_softmax") else None
    x = b.sequence(layers[: -1 if final else None], "input", "", "logits")
    if final:
        x = b.leaf(
            layers[-1], x, str(len(layers) - 1), f"{'log_' if final == 'log_softmax' else ''}probabilities"
        )
    shape = ["batch", *arch["input_shape"]]
    graph = helper.make_graph(
        b.nodes,
        "netshrink_architecture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="netshrink"
    )
    # Declare the output's shape (batch, n_out): infer it on a copy whose output is left undeclared.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(f"{x}__probe", TensorProto.FLOAT, None))
    probe.graph.node.append(helper.make_node("Identity", [x], [f"{x}__probe"]))
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    if x in inferred:
        model.graph.output[0].CopyFrom(inferred[x])
    return model


class _Builder:
    """Emits nodes and initializers for (nested) layer lists. A layer's node is named after it, or
    ``<kind>_<path>`` without a name (path ``3.body.1`` for ``/layers/3/body/1``; ``2`` at the top,
    as in version 1); its output is ``<node>_out`` unless the caller names it."""

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def sequence(self, specs: list[dict[str, Any]], x: str, path: str, y: str | None = None) -> str:
        """Apply ``specs`` to tensor ``x``; the last output is called ``y`` when given."""
        for i, spec in enumerate(specs):
            here = f"{path}.{i}" if path else str(i)
            out = y if i == len(specs) - 1 else None
            x = (
                self.block(spec, x, here, out)
                if spec["kind"] in ("residual", "concat")
                else self.leaf(spec, x, here, out)
            )
        return x

    def block(self, spec: Mapping[str, Any], x: str, path: str, y: str | None) -> str:
        name = spec.get("name") or f"{spec['kind']}_{path}"
        y = y or f"{name}_out"
        if spec["kind"] == "residual":
            a = self.sequence(spec["body"], x, f"{path}.body")
            c = self.sequence(spec["shortcut"], x, f"{path}.shortcut") if spec["shortcut"] else x
            self.nodes.append(helper.make_node("Add", [a, c], [y], name))
        else:
            ins = [self.sequence(br, x, f"{path}.branches.{j}") for j, br in enumerate(spec["branches"])]
            self.nodes.append(helper.make_node("Concat", ins, [y], name, axis=1))
        return y

    def leaf(self, spec: Mapping[str, Any], x: str, path: str, y: str | None) -> str:
        kind = spec["kind"]
        name = spec.get("name") or f"{kind}_{path}"
        y = y or f"{name}_out"
        ins = [x]
        for key in {
            "linear": ("weight", "bias"),
            "conv2d": ("weight", "bias"),
            "batchnorm2d": ("weight", "bias", "running_mean", "running_var"),
        }.get(kind, ()):
            if key == "bias" and kind != "batchnorm2d" and not spec["bias"]:
                continue
            self.inits.append(
                numpy_helper.from_array(np.asarray(self.state[f"{name}.{key}"], np.float32), f"{name}.{key}")
            )
            ins.append(f"{name}.{key}")
        if kind == "relu6":  # torch.nn.ReLU6 = Clip(x, 0, 6), the limits as scalar initializers
            for bound, value in (("min", 0.0), ("max", 6.0)):
                self.inits.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}.{bound}"))
                ins.append(f"{name}.{bound}")
        self.nodes.append(_node(spec, ins, y, name))
        return y


def _group(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A grouped conv's ``group`` attribute; none for groups = 1 (a v1 graph stays byte-identical)."""
    return {"group": int(spec["groups"])} if spec.get("groups", 1) != 1 else {}


def _node(spec: Mapping[str, Any], ins: list[str], y: str, name: str) -> onnx.NodeProto:
    kind = spec["kind"]
    if kind == "linear":
        return helper.make_node("Gemm", ins, [y], name, transB=1)
    if kind == "conv2d":
        p = spec["padding"]
        return helper.make_node(
            "Conv",
            ins,
            [y],
            name,
            kernel_shape=spec["kernel_size"],
            strides=spec["stride"],
            pads=[p[0], p[1], p[0], p[1]],
            dilations=spec["dilation"],
            **_group(spec),
        )
    if kind == "batchnorm2d":
        return helper.make_node("BatchNormalization", ins, [y], name, epsilon=float(spec["eps"]))
    if kind in ("maxpool2d", "avgpool2d"):
        p = spec["padding"]
        extra: dict[str, Any] = (
            {"count_include_pad": int(bool(spec["count_include_pad"]))} if kind == "avgpool2d" else {}
        )
        op = "MaxPool" if kind == "maxpool2d" else "AveragePool"
        return helper.make_node(
            op,
            ins,
            [y],
            name,
            kernel_shape=spec["kernel_size"],
            strides=spec["stride"],
            pads=[p[0], p[1], p[0], p[1]],
            **extra,
        )
    if kind == "relu6":
        return helper.make_node("Clip", ins, [y], name)
    if kind == "hardswish":
        return helper.make_node("HardSwish", ins, [y], name)
    if kind == "hardsigmoid":  # torch.nn.Hardsigmoid = relu6(x + 3) / 6
        return helper.make_node("HardSigmoid", ins, [y], name, alpha=1.0 / 6.0, beta=0.5)
    if kind == "leaky_relu":
        return helper.make_node("LeakyRelu", ins, [y], name, alpha=float(spec["negative_slope"]))
    if kind == "gelu":
        return helper.make_node("Gelu", ins, [y], name, approximate=spec["approximate"])
    if kind in ACTIVATION_KINDS:
        return helper.make_node(ACTIVATION_KINDS[kind], ins, [y], name)
    simple: dict[str, tuple[str, dict[str, Any]]] = {
        "global_avgpool2d": ("GlobalAveragePool", {}),
        "flatten": ("Flatten", {"axis": 1}),
        "dropout": ("Identity", {}),
        "identity": ("Identity", {}),
        "softmax": ("Softmax", {"axis": -1}),
        "log_softmax": ("LogSoftmax", {"axis": -1}),
    }
    op, attrs = simple[kind]
    return helper.make_node(op, ins, [y], name, **attrs)
