"""The float32 range of a model's activations on the evaluation inputs, checked before compressing.

The core computes in float32 (docs/method.md): a layer's second moments E[x xᵀ] (the compensation's
H, after GPTQ's float32 reference code), the bounds' per-input energies S_j = E[x_j²], and the squared
norms of the output errors. A model can have finite float32 weights and still produce activations
whose squares overflow float32 (|a| above about 1.8e19): one weight of 1e20 is enough. Such a model
used to fail deep inside a stage, as an internal error (a Cholesky that found no positive definite
H, a NaN from inf · 0 in a sum of products) or with Infinity in report.json. It is refused up front
instead, naming the tensor, as invalid weights (422 / CLI exit 2).

The rule: a captured tensor t of N values (over all the samples) passes when max|t|² · N fits
float32, so that every sum of squares over it, and every Gram entry (Cauchy-Schwarz), is finite.
Real models are many orders of magnitude inside it (|a| up to about 1.8e19 / √N, e.g. 5.8e16 for
10⁵ values).

A tensor the graph computes in float16 must also stay within float16's range (|a| ≤ 65504):
beyond it onnxruntime gives Inf in the upload itself and in the artifact, and the re-check would
write Infinity into report.json. It is refused alike, naming float16.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from torch import Tensor

from netshrink.compression.errors import (
    CalibrationError,
    CompressionError,
    InvalidSpecError,
    InvalidWeightsError,
)
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.input_dtype import FLOAT16_MAX
from netshrink.compression.graph.network import Network

FLOAT32_MAX = float(np.finfo(np.float32).max)
CHUNK_BYTES = 64 << 20  # the captured activations of one chunk of samples, at most (one sample at least)


def _watched(net: Network) -> dict[str, str]:
    """Tensor name -> what it is, for every compressible layer's input and output and the logits."""
    out: dict[str, str] = {}
    for layer in net.layers:
        out.setdefault(layer.input, f"the input of layer {layer.name!r}")
        out.setdefault(layer.output, f"the output of layer {layer.name!r}")
    out.setdefault(net.logits, "the model's output")
    out.pop("", None)
    return out


def check_activation_range(
    ex: Executor, net: Network, X: Tensor, *, inputs: str, data_field: str | None = None
) -> None:
    """Raise ``InvalidWeightsError`` when an activation of ``net`` on ``X`` (S, *input_shape) is not
    finite, or its sum of squares over the S samples would overflow float32. ``inputs`` names the
    inputs in the message ("calibration", "gaussian", ...); ``data_field``, when given, is the field a
    refusal at the model's input names (``CalibrationError``: a finetune job's ``train.inputs``). One
    dense forward pass, in chunks of samples whose captured tensors stay under ``CHUNK_BYTES``."""
    watched = _watched(net)
    source = net.input_name  # the model's input: a refusal there blames the inputs
    names = tuple(watched)
    peak = dict.fromkeys(names, 0.0)
    count = dict.fromkeys(names, 0)
    S = int(X.shape[0])
    step, i = 1, 0  # the first chunk is one sample: it sizes the others
    while i < S:
        got = ex.run(X[i : i + step], capture=names)  # {name: (c, ...)}
        for name in names:
            t = got[name]
            if t.numel():
                lo, hi = (float(v) for v in torch.aminmax(t))  # one pass, no |t| copy
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    raise _refusal(
                        watched[name],
                        name,
                        "is not finite (Inf or NaN) in float32",
                        inputs,
                        model_input=source,
                        data_field=data_field,
                    )
                peak[name] = max(peak[name], -lo, hi)
            count[name] += t.numel()
        if i == 0:
            per_sample = sum(got[n].numel() * got[n].element_size() for n in names)
            step = max(1, CHUNK_BYTES // max(1, per_sample))
            i = 1
        else:
            i += step
        del got
    half = _float16_tensors(net)
    for name in names:
        if name in half and peak[name] > FLOAT16_MAX:
            raise _refusal(
                watched[name],
                name,
                f"reaches |a| = {peak[name]:.3g}, over float16's largest finite value {FLOAT16_MAX:g}",
                inputs,
                why="the model computes it in float16, so onnxruntime gives Inf there, in the upload "
                "and in the compressed artifact alike",
                model_input=source,
                data_field=data_field,
            )
        if peak[name] ** 2 * count[name] > FLOAT32_MAX:  # Python floats: float64, no overflow here
            limit = math.sqrt(FLOAT32_MAX / count[name])
            raise _refusal(
                watched[name],
                name,
                f"reaches |a| = {peak[name]:.3g}, over the {limit:.3g} at which a float32 sum of its "
                f"{count[name]} squared values overflows",
                inputs,
                model_input=source,
                data_field=data_field,
            )


def _float16_tensors(net: Network) -> set[str]:
    """The tensors whose declared element type (the shape-inferred graph's) is float16."""
    g = net.model.graph
    infos = [*g.input, *g.value_info, *g.output]
    return {v.name for v in infos if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}


FLOAT32_WHY = (
    "the second moments, bounds and error norms that netshrink computes in float32 would be Inf or NaN"
)


def _refusal(
    what: str,
    tensor: str,
    problem: str,
    inputs: str,
    why: str = FLOAT32_WHY,
    *,
    model_input: str = "",
    data_field: str | None = None,
) -> CompressionError:
    """``InvalidWeightsError`` for an activation; when the tensor is the model's input itself, the
    inputs are at fault, not the weights (2026-12-05, found by probing: calibration inputs ×1e20
    were refused as "The model's weights are invalid"): ``CalibrationError`` on ``data_field`` when
    given, on ``inputs`` for a calibration file, ``InvalidSpecError`` on ``evaluation.scale`` for
    synthetic inputs."""
    if tensor == model_input:
        detail = f"the {inputs} inputs (tensor {tensor!r}) {problem}: {why}; rescale them"
        if data_field is not None:
            return CalibrationError(detail, field=data_field)
        if inputs.startswith("calibration"):
            return CalibrationError(detail, field="inputs")
        return InvalidSpecError(detail + " (a smaller evaluation.scale)", field="evaluation.scale")
    return InvalidWeightsError(
        f"{what} (tensor {tensor!r}) {problem} on the {inputs} inputs: {why}. The weights (or the "
        "inputs) are far outside any trained model's range; rescale them",
        nodes=[tensor],
    )
