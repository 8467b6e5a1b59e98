"""``search/off_logits``: a layer that does not feed the logits Φ (another graph output reads it) is
left uncompressed by default, because no error or bound here covers it; a spec that names it
compresses it, with a warning (found by probing, 2026-12-05)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec


def _two_heads(path: Path) -> Path:
    """x (N, 8) -> Gemm 'body' -> Relu -> h; h -> Gemm 'side' -> y; h -> Gemm 'head' -> z (the logits)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32) / 3, "w0"),  # (out, in)
        numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32) / 4, "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32) / 4, "w2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w0"], ["a"], name="body", transB=1),
        helper.make_node("Relu", ["a"], ["h"]),
        helper.make_node("Gemm", ["h", "w1"], ["y"], name="side", transB=1),
        helper.make_node("Gemm", ["h", "w2"], ["z"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two_heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4]),
        ],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _side_output(artifact: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for m in (path.read_bytes(), artifact)]
    return run[0].run(["y"], {"x": X})[0], run[1].run(["y"], {"x": X})[0]


def test_a_layer_off_the_logits_is_left_uncompressed(tmp_path: Path) -> None:
    """Before: 'side' was quantized at 4 bits and output y changed, with no error reported for it."""
    path = _two_heads(tmp_path / "two.onnx")
    net = load_model(path)
    assert net.logits == "z" and [la.feeds_logits for la in net.layers] == [True, False, True]
    result = compress(net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0}))
    assert "side" in result.report["reproducibility"]["spec"]["exclude"]
    assert any("'side'" in w and "left uncompressed" in w for w in result.report["summary"]["warnings"])
    before, after = _side_output(result.artifacts["model.onnx"], path)
    assert not np.array_equal(before, after)  # 'body' is compressed, and y reads it ...
    side = {t.name: t for t in onnx.load_from_string(result.artifacts["model.onnx"]).graph.initializer}
    assert side["w1"].data_type == TensorProto.FLOAT  # ... but 'side' itself stays float


def test_a_spec_that_names_the_layer_compresses_it_with_a_warning(tmp_path: Path) -> None:
    path = _two_heads(tmp_path / "two.onnx")
    spec = CompressSpec.from_dict({"quantize": {"bits": {"body": 8, "side": 4, "head": 8}}, "seed": 0})
    result = compress(load_model(path), spec)
    assert "side" not in result.report["reproducibility"]["spec"]["exclude"]
    assert any(
        "'side'" in w and "not measured" not in w and "no error or bound" in w
        for w in result.report["summary"]["warnings"]
    )
    names = {t.name for t in onnx.load_from_string(result.artifacts["model.onnx"]).graph.initializer}
    assert "w1" not in names  # quantized: stored as codes and scales
