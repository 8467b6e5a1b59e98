"""``graph/canonical.canonicalize``: equivalent spellings become the ones the analysis knows, and the
constants they leave unread are dropped (docs/method.md §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.graph.canonical import canonicalize
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec


def _identity_chain() -> onnx.ModelProto:
    """w1 -> Identity -> Identity -> Gemm -> Relu -> Gemm: a reused parameter as exporters write it."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((32, 16)).astype(np.float32) / 4,  # (out, in)
        "b1": rng.standard_normal(32).astype(np.float32),
        "w2": rng.standard_normal((10, 32)).astype(np.float32) / 6,
        "b2": rng.standard_normal(10).astype(np.float32),
    }
    nodes = [
        helper.make_node("Identity", ["w1"], ["w1a"]),
        helper.make_node("Identity", ["w1a"], ["w1b"]),
        helper.make_node("Gemm", ["x", "w1b", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_an_identity_chain_becomes_one_constant_and_its_sources_go() -> None:
    out = canonicalize(_identity_chain())
    assert [n.op_type for n in out.graph.node] == ["Gemm", "Relu", "Gemm"]
    assert sorted(t.name for t in out.graph.initializer) == ["b1", "b2", "w1b", "w2"]
    onnx.checker.check_model(out, full_check=True)


def test_an_identity_chain_layer_is_compressed_and_the_file_shrinks(tmp_path: Path) -> None:
    """2026-12-05, found by probing: the second Identity stayed, so the layer was not compressed and
    model.onnx held the unread float w1 plus a float copy: 3,750 -> 4,858 bytes at 4 bits."""
    path = tmp_path / "chain.onnx"
    onnx.save(_identity_chain(), path)
    net = load_model(path)
    assert net.support == "full" and [layer.weight.shape for layer in net.layers] == [(32, 16), (10, 32)]
    result = compress(net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0}))
    model = result.artifacts["model.onnx"]
    assert len(model) < path.stat().st_size / 2
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # no unused initializer left
    X = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    assert session.run(None, {"x": X})[0].shape == (5, 10)
