"""``graph/explicit_pads``: SAME_UPPER/SAME_LOWER padding written out is the same node (onnxruntime
agrees to the last bit), and such a CNN gets full support (found by probing, 2026-12-05)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.graph.canonical import canonicalize
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec


def _model(op: str, mode: str, size: int, stride: int, dilation: int) -> onnx.ModelProto:
    """x (N, 3, size, size) -> op with auto_pad=mode -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(
            rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "cw"
        ),  # (out, in, k, k)
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "cb"),
        numpy_helper.from_array(rng.standard_normal((4, 6 if op == "Conv" else 3)).astype(np.float32), "fw"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fb"),
    ]
    if op == "Conv":
        first = helper.make_node(
            "Conv", ["x", "cw", "cb"], ["c"], auto_pad=mode, strides=[stride] * 2, dilations=[dilation] * 2
        )
    else:
        first = helper.make_node(op, ["x"], ["c"], auto_pad=mode, kernel_shape=[3, 3], strides=[stride] * 2)
        inits = [t for t in inits if t.name in ("fw", "fb")]
    nodes = [
        first,
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": X})
    return np.asarray(y)


GEOMETRIES = [(8, 1, 1), (8, 2, 1), (7, 2, 1)]  # (size, stride, dilation)
CASES = [
    *((op, *g) for op in ("Conv", "MaxPool", "AveragePool") for g in GEOMETRIES),
    ("Conv", 9, 3, 2),  # dilated: onnxruntime refuses SAME there, so the node is left as it is
    ("Conv", 5, 2, 2),
]


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize(("op", "size", "stride", "dilation"), CASES)
def test_explicit_pads_are_the_same_node(op: str, mode: str, size: int, stride: int, dilation: int) -> None:
    model = _model(op, mode, size, stride, dilation)
    out = canonicalize(model)
    first = out.graph.node[0]
    if dilation != 1:  # onnxruntime refuses a dilated SAME conv: no reference, left as it is
        assert first == model.graph.node[0]
        return
    assert all(a.name != "auto_pad" for a in first.attribute)
    X = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    np.testing.assert_array_equal(_run(out, X), _run(model, X))


def test_a_same_padded_cnn_has_full_support_and_prunes_channels(tmp_path: Path) -> None:
    """Before: "Conv 'Conv_0': auto_pad SAME (bounds not covered)", generic, channel pruning refused."""
    path = tmp_path / "same.onnx"
    onnx.save(_model("Conv", "SAME_UPPER", 8, 2, 1), path)
    net = load_model(path)
    assert net.support == "full" and net.layers[1].structured
    spec = CompressSpec.from_dict({"prune": {"keep": 0.5, "granularity": "channel"}, "seed": 0})
    artifact = compress(net, spec).artifacts["model.onnx"]
    X = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert _run(onnx.load_from_string(artifact), X).shape == (3, 4)
