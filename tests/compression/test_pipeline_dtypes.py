"""``compress`` of an ONNX model whose input and weights are float16 or float64 (the probe's
``netshrink compress fp16.onnx --bits 4``, which failed as an internal error, exit 4: onnxruntime
refused the float32 inputs it was fed, "Unexpected input data type").

Oracle: the upload and the artifact both run in onnxruntime on the held-out inputs the report was
measured on; their relative L2 error is the report's (float64: to 1e-4, both are float32 computations
in effect; float16: to 2%, the float32 evaluation against onnxruntime's float16 arithmetic).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from netshrink.compression.evaluation.evaluation import evaluation_data
from netshrink.compression.evaluation.ort_eval import run_logits
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests.compression.export.export_models import FLOAT_TYPES, as_type, load, mlp_gemm

TOLERANCE = {np.float16: 2e-2, np.float64: 1e-4}


class Cal:
    def __init__(self, inputs: np.ndarray) -> None:
        self.inputs, self.labels, self.sha256 = inputs, None, "0" * 64


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(axis=1).mean() / (a**2).sum(axis=1).mean()))


def _run(net: Network, spec: dict[str, Any], cal: Cal | None) -> tuple[dict[str, Any], bytes, np.ndarray]:
    s = CompressSpec.from_dict({"seed": 0, **spec}).with_seed()
    result = compress(net, s, calibration=cal)
    assert s.seed is not None
    return (
        result.report,
        result.artifacts["model.onnx"],
        evaluation_data(net, s.evaluation, cal, s.seed).holdout,
    )


SPECS = [
    {"quantize": {"bits": 4}},
    {"prune": {"keep": 0.5, "granularity": "neuron"}, "quantize": {"bits": 8}},
    {"prune": {"keep": 0.1}},  # sparse float16/float64 initializers
    {"prune": {"keep": 0.7}},  # above the break-even: dense zeros, and the storage note says so
]


@pytest.mark.parametrize("calibrated", [False, True])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_a_float16_or_float64_model_compresses_and_stays_its_type(
    tmp_path: Path,
    dtype: type,
    spec: dict[str, Any],
    calibrated: bool,
    validate_report: Callable[[dict[str, Any]], None],
) -> None:
    net = load(tmp_path, as_type(mlp_gemm((16, 32, 32, 10), opset=17), dtype))
    cal = Cal(np.random.default_rng(5).standard_normal((80, 16)).astype(dtype)) if calibrated else None
    report, art, X = _run(net, spec, cal)
    json.dumps(report, allow_nan=False)  # no Infinity/NaN anywhere
    validate_report(report)
    g = onnx.load_from_string(art).graph
    assert g.input[0].type.tensor_type.elem_type == FLOAT_TYPES[dtype]
    assert g.output[0].type.tensor_type.elem_type == FLOAT_TYPES[dtype]
    before, after = run_logits(net.upload_bytes(), "x", "logits", X), run_logits(art, "x", "logits", X)
    assert after.shape == (X.shape[0], 10)
    ort = _relative_l2(before, after)
    err = report["summary"]["error"]
    assert 0 < err["relative_l2"] == pytest.approx(ort, rel=TOLERANCE[dtype])
    for level in ("default", "no_optimizations"):
        assert err["onnxruntime"][level]["relative_l2"] == pytest.approx(ort, rel=TOLERANCE[dtype])
    assert report["model"]["input"]["dtype"] == np.dtype(dtype).name
    if spec == {"prune": {"keep": 0.7}}:
        kinds = {s["weight"] for s in report["summary"]["storage"]}
        assert kinds == {np.dtype(dtype).name}
        assert any("dense zeros are stored" in n for n in report["summary"]["storage_notes"])
    half_note = [w for w in report["summary"]["warnings"] if "computes in float16" in w]
    assert len(half_note) == (1 if dtype == np.float16 else 0)
