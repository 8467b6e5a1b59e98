"""The evaluation inputs of a model whose input is float16 or float64, as the model receives them.

The core evaluates every network in float32 (its torch interpreter; docs/method.md), while
onnxruntime runs the upload and the artifact in the element type their graph declares
(``ort_eval.run_in_batches`` feeds that type). A float64 input holds every float32 value exactly.
A float16 one does not: onnxruntime would round each input to float16 (and any |x| above 65504
becomes Inf), so the float32 reference and the onnxruntime re-check would see different inputs.
``as_model_input`` rounds the inputs to the model's type once, so both see the same values, and
refuses inputs that float16 cannot hold, naming the type.
"""

from __future__ import annotations

import numpy as np
import onnx

from netshrink.compression.errors import CalibrationError, InvalidSpecError
from netshrink.compression.graph.network import Network

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def as_model_input(net: Network, X: np.ndarray, *, calibration: bool) -> np.ndarray:
    """X (S, *input_shape) float32, with values the model's input type holds: rounded to float16 for a
    float16 input (round to nearest even, as a cast does), unchanged for float32 and float64.

    Raises ``CalibrationError`` (a calibration file, ``calibration=True``) or ``InvalidSpecError``
    (synthetic inputs: ``evaluation.scale``) when an input is beyond float16's largest finite value.
    """
    if np.dtype(net.input_dtype) != np.float16 or X.size == 0:
        return X
    peak = float(np.abs(X).max())
    if peak > FLOAT16_MAX:
        detail = (
            f"the model's input {net.input_name!r} is float16, whose largest finite value is "
            f"{FLOAT16_MAX:g}, and the {'calibration' if calibration else 'synthetic'} inputs reach "
            f"|x| = {peak:.3g}: onnxruntime would see Inf"
        )
        if calibration:
            raise CalibrationError(f"{detail}; rescale the calibration inputs", field="calibration")
        raise InvalidSpecError(f"{detail}; lower evaluation.scale", field="evaluation.scale")
    return X.astype(np.float16).astype(np.float32)  # (S, *input_shape) float32, float16 values


def float16_note(net: Network) -> str | None:
    """A summary warning for a model that computes in float16 (its input or a layer's weight is
    float16), else None."""
    inits = {t.name: t.data_type for t in net.model.graph.initializer}
    half = np.dtype(net.input_dtype) == np.float16 or any(
        inits.get(la.weight_key) == onnx.TensorProto.FLOAT16 for la in net.layers
    )
    if not half:
        return None
    return (
        "the model computes in float16: the error, bounds and prediction are those of netshrink's "
        "float32 evaluation of it (on inputs rounded to float16); summary.error.onnxruntime runs the "
        "artifact in float16 and so also counts float16's rounding"
    )
