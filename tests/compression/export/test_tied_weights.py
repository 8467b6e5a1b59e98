"""A weight initializer read by several layers (compression/export/tied_weights.py, export_onnx.py).

Before, ``--bits 4`` on such a model drew the tensor once per reader and wrote it twice: the artifact
failed the ONNX checker ("input 'w1_quantized' ... is not output of any previous nodes"), and that
was reported as "The model file could not be read" (the upload's refusal, exit 2). Now the first
reader draws the tensor, the others read the same dequantized tensor, and the error measured by the
core is the error of the artifact, both models run in onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.errors import CompressionError
from netshrink.compression.evaluation.evaluation import evaluation_data
from netshrink.compression.evaluation.ort_eval import run_logits
from netshrink.compression.export.export_onnx import ExportCheckError, _verify, export_onnx_detailed
from netshrink.compression.export.tied_weights import shared_weights, tie_shared_weights
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import factories
from tests.compression.export.export_models import load, quantized


def shared_gemm(seed: int = 0) -> onnx.ModelProto:
    """x -> Gemm(w1, b1) -> Relu -> Gemm(w1, b1) -> Relu -> Gemm(w2, b2) -> y: w1 and b1 read twice."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": (rng.standard_normal((16, 16)) / 4).astype(np.float32),
        "b1": rng.standard_normal(16).astype(np.float32),
        "w2": (rng.standard_normal((10, 16)) / 4).astype(np.float32),
        "b2": rng.standard_normal(10).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], "fc_a", transB=1),
        helper.make_node("Relu", ["h1"], ["r1"], "relu_a"),
        helper.make_node("Gemm", ["r1", "w1", "b1"], ["h2"], "fc_b", transB=1),
        helper.make_node("Relu", ["h2"], ["r2"], "relu_b"),
        helper.make_node("Gemm", ["r2", "w2", "b2"], ["y"], "fc_out", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


class Tied(torch.nn.Module):
    """The same nn.Linear called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(16, 16)
        self.out = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.a(torch.relu(self.a(x)))))


def _compress(net: Network, **spec: Any) -> tuple[dict[str, Any], bytes, np.ndarray]:
    """report, model.onnx and the held-out inputs the report's error was measured on."""
    s = CompressSpec.from_dict({"seed": 0, "evaluation": {"samples": 300}, **spec}).with_seed()
    result = compress(net, s)
    assert s.seed is not None
    X = evaluation_data(net, s.evaluation, None, s.seed).holdout
    return result.report, result.artifacts["model.onnx"], X


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(axis=1).mean() / (a**2).sum(axis=1).mean()))


@pytest.fixture
def shared_net(tmp_path: Path) -> Network:
    return load(tmp_path, shared_gemm())


def test_shared_weights_lists_every_reader_in_graph_order(shared_net: Network) -> None:
    assert shared_weights(shared_net) == {"w1": ["fc_a", "fc_b"]}


SPECS = [{"quantize": {"bits": 4}}, {"prune": {"keep": 0.3}, "quantize": {"bits": 8}}]


@pytest.mark.parametrize("spec", SPECS)
def test_a_shared_weight_is_compressed_once_and_read_by_every_reader(
    shared_net: Network, spec: dict[str, Any]
) -> None:
    report, art, X = _compress(shared_net, **spec)
    m = onnx.load_from_string(art)
    onnx.checker.check_model(m, full_check=not m.graph.sparse_initializer)
    made = [n for n in m.graph.node if "w1" in n.output]
    assert len(made) == 1 and made[0].op_type == "DequantizeLinear"  # one tensor, written once
    assert [n.name for n in m.graph.node if "w1" in n.input] == ["fc_a", "fc_b"]
    assert "w1" not in {t.name for t in m.graph.initializer}
    assert [s["layer"] for s in report["summary"]["storage"]] == ["fc_a", "fc_out"]
    assert report["reproducibility"]["spec"]["exclude"] == ["fc_b"]
    assert any("'w1'" in w and "'fc_a'" in w and "'fc_b'" in w for w in report["summary"]["warnings"])
    # the measured error is the artifact's: both models run in onnxruntime on the held-out inputs
    ort = _relative_l2(run_logits(shared_net.upload_bytes(), "x", "y", X), run_logits(art, "x", "y", X))
    assert report["summary"]["error"]["relative_l2"] == pytest.approx(ort, rel=1e-4)
    assert report["summary"]["error"]["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(
        ort, rel=1e-6
    )


def test_excluding_one_reader_keeps_the_shared_tensor_float(shared_net: Network) -> None:
    report, art, _ = _compress(shared_net, quantize={"bits": 4}, exclude=["fc_b"])
    m = onnx.load_from_string(art)
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    np.testing.assert_array_equal(numpy_helper.to_array(w1), shared_net.layer("fc_a").weight)
    assert [s["layer"] for s in report["summary"]["storage"]] == ["fc_out"]
    assert sorted(report["reproducibility"]["spec"]["exclude"]) == ["fc_a", "fc_b"]
    assert any("'fc_b' is excluded" in w for w in report["summary"]["warnings"])


def test_the_reader_that_draws_is_the_first_one_the_spec_compresses(shared_net: Network) -> None:
    """Per-layer bits that name only the second reader: the tensor is drawn through it."""
    report, art, _ = _compress(shared_net, quantize={"bits": {"fc_b": 4, "fc_out": 4}})
    assert [s["layer"] for s in report["summary"]["storage"]] == ["fc_b", "fc_out"]
    assert report["reproducibility"]["spec"]["exclude"] == ["fc_a"]
    m = onnx.load_from_string(art)
    assert [n.op_type for n in m.graph.node if "w1" in n.output] == ["DequantizeLinear"]
    assert any("by the draw of 'fc_b'" in w for w in report["summary"]["warnings"])


def test_tie_leaves_a_model_without_shared_weights_alone(tmp_path: Path) -> None:
    net = load(tmp_path, onnx.load_from_string(factories.mlp_onnx((8, 16, 4))))
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}})
    assert tie_shared_weights(net, spec) == (spec, [])


def test_a_linear_module_called_twice_compresses_as_exported_by_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = load(tmp_path, factories.export_onnx(Tied().eval(), (16,)))
    (key, readers), *_ = shared_weights(net).items()
    report, art, X = _compress(net, quantize={"bits": 4})
    m = onnx.load_from_string(art)
    assert [n.op_type for n in m.graph.node if key in n.output] == ["DequantizeLinear"]
    assert len([n for n in m.graph.node if key in n.input]) == len(readers) == 2
    name, logits = net.input_name, net.logits
    ort = _relative_l2(run_logits(net.upload_bytes(), name, logits, X), run_logits(art, name, logits, X))
    assert report["summary"]["error"]["relative_l2"] == pytest.approx(ort, rel=1e-4)


def test_the_exporter_refuses_two_different_weights_for_one_tensor(shared_net: Network) -> None:
    cw = {name: quantized(shared_net, name, 4) for name in ("fc_a", "fc_b")}
    with pytest.raises(ValueError, match="'w1' is read by layers 'fc_a' and 'fc_b'"):
        export_onnx_detailed(shared_net, cw)
    one = quantized(shared_net, "fc_a", 4)  # one draw handed for both readers: written once
    m = onnx.load_from_string(export_onnx_detailed(shared_net, {"fc_a": one, "fc_b": one}).data)
    assert [n.op_type for n in m.graph.node if "w1" in n.output] == ["DequantizeLinear"]


def test_an_export_that_fails_the_checker_is_an_internal_error_not_a_bad_upload() -> None:
    """The upload passed this checker when it was loaded: a failing artifact is the exporter's bug
    (CLI exit 4), never "The model file could not be read" (``ModelFormatError``, exit 2)."""
    m = shared_gemm()
    m.graph.node[0].input[1] = "nowhere"  # a node reading a tensor nothing makes
    with pytest.raises(ExportCheckError, match="failed the ONNX checker") as err:
        _verify(m)
    assert not isinstance(err.value, CompressionError)
