"""``graph/constant_nodes`` through ``canonicalize``: a weight, bias or shape held in a ``Constant``
node is an initializer of the same name, and such a model compresses like any other.

2026-12-05: an MLP whose Gemm weights and biases came from Constant nodes (as older exporters and
``torch.onnx.export(do_constant_folding=False)`` write them) failed ``netshrink compress --bits 4``
as an internal error (``KeyError`` on the first bias). Oracle: the upload and the artifact both run
in onnxruntime on the held-out inputs the report was measured on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from netshrink.compression.evaluation.evaluation import evaluation_data
from netshrink.compression.evaluation.ort_eval import run_logits
from netshrink.compression.graph.canonical import canonicalize
from netshrink.compression.graph.constant_nodes import constant_initializer
from netshrink.compression.io.onnx_io import constant_arrays
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests.compression.export.export_models import cnn_reshape, load, mlp_gemm


def as_constants(model: onnx.ModelProto, names: set[str] | None = None) -> onnx.ModelProto:
    """``model`` with its initializers (those in ``names``, or all) moved into ``Constant`` nodes
    (attribute ``value``) that come first in the graph: the same network, as some exporters write it."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    moved = [t for t in out.graph.initializer if names is None or t.name in names]
    kept = [t for t in out.graph.initializer if not (names is None or t.name in names)]
    consts = [helper.make_node("Constant", [], [t.name], f"const_{t.name}", value=t) for t in moved]
    nodes = [*consts, *out.graph.node]
    del out.graph.node[:], out.graph.initializer[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(kept)
    onnx.checker.check_model(out, full_check=True)
    return out


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    """sqrt(E‖a−b‖² / E‖a‖²) over the rows of (S, K) outputs."""
    return float(np.sqrt(((a - b) ** 2).sum(axis=1).mean() / (a**2).sum(axis=1).mean()))


def _compress(
    tmp_path: Path, model: onnx.ModelProto, spec: dict[str, Any], out: str
) -> tuple[dict[str, Any], bytes, np.ndarray, np.ndarray]:
    """Report, artifact, and both models' onnxruntime logits (S, K) on the report's held-out inputs."""
    net = load(tmp_path, model)
    s = CompressSpec.from_dict({"seed": 0, **spec}).with_seed()
    result = compress(net, s)
    assert s.seed is not None
    X = evaluation_data(net, s.evaluation, None, s.seed).holdout  # (S, *input_shape)
    art = result.artifacts["model.onnx"]
    onnx.checker.check_model(onnx.load_from_string(art), full_check=True)
    before = run_logits(net.upload_bytes(), net.input_name, out, X)  # (S, K)
    after = run_logits(art, net.input_name, out, X)  # (S, K)
    return result.report, art, before, after


def test_constant_weights_and_biases_are_compressed_and_onnxruntime_agrees(
    tmp_path: Path, validate_report: Callable[[dict[str, Any]], None]
) -> None:
    plain = mlp_gemm((32, 128, 128, 10), opset=17)
    upload = as_constants(plain)
    assert not upload.graph.initializer
    report, art, before, after = _compress(tmp_path, upload, {"quantize": {"bits": 4}}, "logits")
    (tmp_path / "plain").mkdir()
    plain_art = _compress(tmp_path / "plain", plain, {"quantize": {"bits": 4}}, "logits")[1]
    assert art == plain_art  # compressed like any other: the initializer upload's very bytes
    validate_report(report)
    assert [ly["name"] for ly in report["layers"]] == ["fc0", "fc1", "fc2"]
    assert {s["weight"] for s in report["summary"]["storage"]} == {"int4"}
    err = report["summary"]["error"]
    ort = _relative_l2(before, after)
    assert 0 < ort < 0.3  # 4 bits on Gaussian inputs
    assert err["relative_l2"] == pytest.approx(ort, rel=1e-4)
    assert err["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(ort, rel=1e-4)
    size = len(upload.SerializeToString())
    assert report["summary"]["bytes"]["before"]["total"] == size
    assert len(art) == report["summary"]["bytes"]["after"]["total"] < size / 4  # 4-bit codes vs float32


@pytest.mark.parametrize("names", [None, {"flat_shape"}], ids=["every-tensor", "the-shape-only"])
def test_a_constant_reshape_shape_is_rewritten_when_channels_go(
    tmp_path: Path, validate_report: Callable[[dict[str, Any]], None], names: set[str] | None
) -> None:
    """The CNN's tensors as Constants, the Reshape's hard-coded [-1, 96] included (or that one alone, a
    Constant feeding no layer): channel pruning of the conv before it must still fit that flatten,
    and the artifact must run. Reshape(x, [-1, 96]) of a (N, 6, 4, 4) x is a Flatten since 2026-12-05
    (graph/canonical.py), so the artifact holds a Flatten and no stale shape."""
    spec = {"prune": {"keep": 0.5, "granularity": "channel"}, "quantize": {"bits": 8}}
    report, art, before, after = _compress(tmp_path, as_constants(cnn_reshape(), names), spec, "logits")
    validate_report(report)
    consts = constant_arrays(onnx.load_from_string(art))  # initializers and Constant nodes alike
    kept = consts["k2_quantized"].shape[0]  # conv2's channels left, of 6 (each 4×4 wide after the pool)
    assert kept < 6 and consts["fw_quantized"].shape == (5, 16 * kept)
    assert "flat_shape" not in consts and "Reshape" not in {
        n.op_type for n in onnx.load_from_string(art).graph.node
    }
    assert after.shape == before.shape
    assert report["summary"]["error"]["relative_l2"] == pytest.approx(_relative_l2(before, after), rel=1e-4)


def test_canonicalize_turns_each_dense_constant_into_an_initializer() -> None:
    """``value`` keeps its type; ``value_float(s)``/``value_int(s)`` are float32/int64 as the ONNX spec
    types them; Identity(Constant) is a constant too; a Constant that is a graph output stays a node,
    and so does a string one. The graph computes exactly what it computed."""
    model = as_constants(mlp_gemm((4, 6), opset=17))  # x (N, 4) -> Gemm -> logits (N, 6)
    model.graph.node.extend(
        [
            helper.make_node("Constant", [], ["shape"], value_ints=[-1, 3]),
            helper.make_node("Reshape", ["logits", "shape"], ["r"]),  # (N, 6) -> (2N, 3)
            helper.make_node("Constant", [], ["half"], value_float=0.5),
            helper.make_node("Mul", ["r", "half"], ["m"]),
            helper.make_node("Constant", [], ["shift"], value_floats=[1.0, 2.0, 3.0]),
            helper.make_node("Identity", ["shift"], ["shift_copy"]),
            helper.make_node("Add", ["m", "shift_copy"], ["y"]),  # (2N, 3)
            helper.make_node("Constant", [], ["seven"], value_int=7),
        ]
    )
    del model.graph.output[:]
    model.graph.output.extend(
        [
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("seven", onnx.TensorProto.INT64, []),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    out = canonicalize(model)
    onnx.checker.check_model(out, full_check=True)
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert sorted(inits) == ["W0", "b0", "half", "shape", "shift_copy"]  # "shift" is read no more
    assert inits["W0"].dtype == np.float32 and inits["W0"].shape == (6, 4)
    assert inits["shape"].dtype == np.int64 and inits["shape"].tolist() == [-1, 3]
    assert inits["half"].dtype == np.float32 and inits["half"].shape == () and float(inits["half"]) == 0.5
    assert inits["shift_copy"].dtype == np.float32 and inits["shift_copy"].tolist() == [1.0, 2.0, 3.0]
    assert [n.op_type for n in out.graph.node] == ["Gemm", "Reshape", "Mul", "Add", "Constant"]
    X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)  # (N, 4)
    want = ort_outputs(model.SerializeToString(), X)
    got = ort_outputs(out.SerializeToString(), X)
    assert want[0].shape == (10, 3) and all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
    strings = helper.make_node("Constant", [], ["s"], value_strings=["a"])
    assert constant_initializer(strings) is None
    assert constant_initializer(helper.make_node("Relu", ["x"], ["y"])) is None


def ort_outputs(model: bytes, X: np.ndarray) -> list[np.ndarray]:
    """Every output of ``model`` on ``X`` (N, 4) in onnxruntime."""
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [np.asarray(a) for a in sess.run(None, {"x": X})]
