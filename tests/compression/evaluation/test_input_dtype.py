"""``as_model_input`` and ``evaluation_data``: a float16 model's evaluation inputs are the float16
values onnxruntime feeds it, and inputs float16 cannot hold are refused naming the type
(compression/evaluation/input_dtype.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netshrink.compression.errors import CalibrationError, InvalidSpecError
from netshrink.compression.evaluation.evaluation import evaluation_data
from netshrink.compression.evaluation.input_dtype import FLOAT16_MAX, as_model_input, float16_note
from netshrink.compression.graph.network import Network
from netshrink.compression.spec import EvaluationSpec
from tests.compression.export.export_models import as_type, load, mlp_gemm


class Cal:
    def __init__(self, inputs: np.ndarray) -> None:
        self.inputs, self.labels, self.sha256 = inputs, None, "0" * 64


def _net(tmp_path: Path, dtype: type | None) -> Network:
    model = mlp_gemm((16, 32, 10))
    return load(tmp_path, model if dtype is None else as_type(model, dtype))


def test_float16_inputs_are_rounded_as_a_cast_rounds(tmp_path: Path) -> None:
    net = _net(tmp_path, np.float16)
    X = np.random.default_rng(0).standard_normal((9, 16)).astype(np.float32)  # (S, 16)
    got = as_model_input(net, X, calibration=True)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, X.astype(np.float16).astype(np.float32))
    assert not np.array_equal(got, X)  # they did round
    d = evaluation_data(net, EvaluationSpec(samples=40), None, 0)  # synthetic: rounded too
    np.testing.assert_array_equal(d.fit, d.fit.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(d.holdout, d.holdout.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("dtype", [None, np.float64])
def test_float32_and_float64_inputs_are_kept_as_they_are(tmp_path: Path, dtype: type | None) -> None:
    net = _net(tmp_path, dtype)
    X = np.random.default_rng(1).standard_normal((9, 16)).astype(np.float32)
    assert as_model_input(net, X, calibration=True) is X
    assert float16_note(net) is None


def test_calibration_beyond_float16_is_a_calibration_error_naming_the_type(tmp_path: Path) -> None:
    net = _net(tmp_path, np.float16)
    X = np.zeros((60, 16), np.float32)
    X[7, 3] = FLOAT16_MAX  # still finite in float16
    evaluation_data(net, EvaluationSpec(), Cal(X), 0)
    X[7, 3] = 70000.0  # Inf in float16
    with pytest.raises(CalibrationError, match=r"input 'x' is float16.*reach \|x\| = 7e\+04") as err:
        evaluation_data(net, EvaluationSpec(), Cal(X), 0)
    assert err.value.field == "calibration"


def test_a_synthetic_scale_beyond_float16_is_a_spec_error(tmp_path: Path) -> None:
    net = _net(tmp_path, np.float16)
    with pytest.raises(InvalidSpecError, match="float16") as err:
        evaluation_data(net, EvaluationSpec(scale=1e5), None, 0)
    assert err.value.field == "evaluation.scale"


def test_a_float16_model_gets_a_note(tmp_path: Path) -> None:
    note = float16_note(_net(tmp_path, np.float16))
    assert note is not None and "float16" in note and "summary.error.onnxruntime" in note
