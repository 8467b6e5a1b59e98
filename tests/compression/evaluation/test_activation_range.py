"""``check_activation_range``: activations whose float32 sums of squares overflow are refused up front,
as invalid weights naming the tensor, instead of failing inside a stage (an internal error) or
writing Infinity/NaN into the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper

from netshrink.compression.errors import CalibrationError, InvalidSpecError, InvalidWeightsError
from netshrink.compression.evaluation.activation_range import (
    FLOAT16_MAX,
    FLOAT32_MAX,
    check_activation_range,
)
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import factories as F
from tests.compression.export.export_models import as_type

N_FEATURES, SAMPLES = 4, 8


def _identity_relu(tmp_path: Path, scale: float = 1.0) -> Network:
    """input (batch, 4) -> Gemm(scale·I) -> Relu -> output: with scale 1, every watched tensor equals
    a positive input."""
    eye = scale * np.eye(N_FEATURES, dtype=np.float32)  # (4, 4)
    model = F.chain_model(
        [
            helper.make_node("Gemm", ["input", "w", "b"], ["h"], "fc", transB=1),
            helper.make_node("Relu", ["h"], ["output"], "relu"),
        ],
        [numpy_helper.from_array(eye, "w"), numpy_helper.from_array(np.zeros(N_FEATURES, np.float32), "b")],
        ["batch", N_FEATURES],
        "output",
    )
    return load_model(F.write_bytes(model.SerializeToString(), tmp_path / "eye.onnx"))


def _inputs(peak: float) -> torch.Tensor:
    X = torch.ones(SAMPLES, N_FEATURES)  # (S, 4)
    X[3, 2] = peak
    return X


@pytest.mark.parametrize("margin", [0.999, 1.001])
def test_the_limit_is_the_float32_sum_of_the_squares(tmp_path: Path, margin: float) -> None:
    net = _identity_relu(tmp_path)
    limit = math.sqrt(FLOAT32_MAX / (SAMPLES * N_FEATURES))  # 3.26e18 for 32 values
    X = _inputs(limit * margin)
    if margin < 1:
        check_activation_range(Executor(net), net, X, inputs="calibration fit")
        return
    # the model's input itself is past the limit: the inputs are at fault, not the weights
    with pytest.raises(CalibrationError, match=r"calibration fit inputs \(tensor 'input'\)") as info:
        check_activation_range(Executor(net), net, X, inputs="calibration fit")
    assert "32 squared values" in info.value.detail and info.value.field == "inputs"
    with pytest.raises(InvalidSpecError) as spec_info:  # synthetic inputs: the scale asked for
        check_activation_range(Executor(net), net, X, inputs="gaussian fit")
    assert spec_info.value.field == "evaluation.scale"


def test_weights_that_carry_an_activation_past_the_limit_are_invalid_weights(tmp_path: Path) -> None:
    """Inputs well inside the limit, a weight that multiplies them past it: the weights' refusal."""
    net = _identity_relu(tmp_path, scale=1e18)
    with pytest.raises(InvalidWeightsError, match=r"output of layer 'fc'.*calibration fit inputs"):
        check_activation_range(Executor(net), net, _inputs(10.0), inputs="calibration fit")


def test_inf_activations_are_refused_as_not_finite(tmp_path: Path) -> None:
    """A finite input of 3e38 times a weight of 2 is Inf in float32: named as not finite."""
    net = _identity_relu(tmp_path, scale=2.0)
    with pytest.raises(InvalidWeightsError, match=r"output of layer 'fc'.*is not finite .* gaussian fit"):
        check_activation_range(Executor(net), net, _inputs(3e38), inputs="gaussian fit")


def test_chunks_cover_every_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 3 samples after the first (one sample, which sizes them): every sample is run once,
    in order, and the peak in the last one is still found."""
    import netshrink.compression.evaluation.activation_range as module

    net = _identity_relu(tmp_path)
    per_sample = 2 * N_FEATURES * 4  # the input and the Relu output (= the logits): 2 × 4 float32
    monkeypatch.setattr(module, "CHUNK_BYTES", 3 * per_sample)
    ex = Executor(net)
    seen: list[torch.Tensor] = []
    real_run = ex.run

    def run(X: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
        seen.append(X[:, 0].clone())  # (c,) the chunk's samples, by their first feature
        return real_run(X, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ex, "run", run)
    X = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, N_FEATURES)  # (10, 4): sample i is i
    X[9, 1] = 1e19
    with pytest.raises(InvalidSpecError, match="40 squared values"):  # the synthetic inputs' scale
        check_activation_range(ex, net, X, inputs="uniform fit")
    assert [len(c) for c in seen] == [1, 3, 3, 3]
    assert torch.equal(torch.cat(seen), torch.arange(10, dtype=torch.float32))


def _mlp_with_weight(tmp_path: Path, value: float) -> Network:
    m = F.tiny_mlp((8, 16, 16, 4))
    with torch.no_grad():
        m[0].weight[3, 0] = value
    return load_model(F.write_bytes(F.export_onnx(m, (8,)), tmp_path / "big.onnx"))


@pytest.mark.parametrize("stage", [{"prune": {"keep": 0.5}}, {"quantize": {"bits": 8}, "compensate": False}])
def test_compress_refuses_a_weight_whose_activations_overflow(tmp_path: Path, stage: dict) -> None:
    """One weight of 1e20: before, a Cholesky with no positive definite H (exit 4, internal) with
    compensation, and Infinity in report.json without it."""
    net = _mlp_with_weight(tmp_path, 1e20)
    spec = CompressSpec.from_dict({**stage, "seed": 1})
    with pytest.raises(InvalidWeightsError, match="the output of layer") as info:
        compress(net, spec)
    assert info.value.nodes and "rescale" in info.value.detail


def test_a_large_but_safe_weight_still_compresses(tmp_path: Path) -> None:
    """1e15: activations near 3e15, inside the limit (2.9e17 for 256 Gaussian fit samples x 16 units)."""
    net = _mlp_with_weight(tmp_path, 1e15)
    result = compress(net, CompressSpec.from_dict({"prune": {"keep": 0.5}, "seed": 1}))
    text = json.dumps(result.report, allow_nan=False)  # raises on Infinity/NaN
    assert json.loads(text)["summary"]


def _float16_identity_relu(tmp_path: Path) -> Network:
    model = _identity_relu(tmp_path).model
    return load_model(F.write_bytes(as_type(model, np.float16).SerializeToString(), tmp_path / "eye16.onnx"))


@pytest.mark.parametrize("peak", [FLOAT16_MAX, 70000.0])
def test_a_float16_tensor_must_stay_within_float16(tmp_path: Path, peak: float) -> None:
    """A float16 model whose activation exceeds 65504 gives Inf in onnxruntime, in the upload itself:
    refused naming float16 (before, Infinity and NaN reached report.json's onnxruntime error)."""
    net = _float16_identity_relu(tmp_path)
    X = _inputs(peak)
    if peak <= FLOAT16_MAX:
        check_activation_range(Executor(net), net, X, inputs="calibration fit")
        return
    with pytest.raises(CalibrationError, match=r"inputs \(tensor 'input'\).*over float16's largest finite"):
        check_activation_range(Executor(net), net, X, inputs="calibration fit")  # the input itself


def test_compress_refuses_a_float16_model_that_overflows(tmp_path: Path) -> None:
    m = as_type(F.chain_model(
        [helper.make_node("Gemm", ["input", "w", "b"], ["output"], "fc", transB=1)],
        [numpy_helper.from_array(np.full((N_FEATURES, N_FEATURES), 3e4, np.float32), "w"),
         numpy_helper.from_array(np.zeros(N_FEATURES, np.float32), "b")],
        ["batch", N_FEATURES],
        "output",
    ), np.float16)  # fmt: skip
    net = load_model(F.write_bytes(m.SerializeToString(), tmp_path / "big16.onnx"))
    with pytest.raises(InvalidWeightsError, match="float16"):
        compress(net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0}))
