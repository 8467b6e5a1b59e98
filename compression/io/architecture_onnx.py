"""Write the ONNX graph an architecture JSON describes (``netshrink.architecture/v1``).

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
    final softmax / log_softmax (then ``logits`` is that node's input)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    x = "input"
    layers = arch["layers"]
    for i, spec in enumerate(layers):
        kind = spec["kind"]
        name = spec.get("name") or f"{kind}_{i}"
        last = i == len(layers) - 1
        nxt = layers[i + 1]["kind"] if not last else ""
        y = {"softmax": "probabilities", "log_softmax": "log_probabilities"}.get(kind) if last else None
        y = y or ("logits" if last or nxt in ("softmax", "log_softmax") else f"{name}_out")
        ins = [x]
        for key in {
            "linear": ("weight", "bias"),
            "conv2d": ("weight", "bias"),
            "batchnorm2d": ("weight", "bias", "running_mean", "running_var"),
        }.get(kind, ()):
            if key == "bias" and kind != "batchnorm2d" and not spec["bias"]:
                continue
            inits.append(
                numpy_helper.from_array(np.asarray(state[f"{name}.{key}"], np.float32), f"{name}.{key}")
            )
            ins.append(f"{name}.{key}")
        nodes.append(_node(spec, ins, y, name))
        x = y
    shape = ["batch", *arch["input_shape"]]
    graph = helper.make_graph(
        nodes,
        "netshrink_architecture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
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
