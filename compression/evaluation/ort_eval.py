"""Run an artifact in onnxruntime and read its logits (docs/method.md §5 "onnxruntime fusion").

Under default graph optimizations onnxruntime may fuse DequantizeLinear+MatMul into integer kernels
that also quantize the activations, so the artifact is measured twice: with the default settings
(what users get) and with ``ORT_DISABLE_ALL`` (the weights alone, comparable with the bound).
A model with a fixed batch dimension (``[1, 16]``) is run in batches of its own size, and every
session is fed its input in the element type the model declares (float32, float16 or float64).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NoKernel

from netshrink.compression.errors import UnsupportedModelError

OPTIMIZATION_LEVELS = {
    "default": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "no_optimizations": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def with_logits_output(model_bytes: bytes, logits: str) -> bytes:
    """A copy of the model that also outputs the tensor ``logits`` (measurement only); the same bytes
    object when ``logits`` is a graph output already."""
    model = onnx.load_from_string(model_bytes)
    if logits in {o.name for o in model.graph.output}:
        return model_bytes
    model.graph.output.append(onnx.ValueInfoProto(name=logits))
    return model.SerializeToString()


NO_KERNEL = re.compile(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'")


@contextmanager
def refusing_missing_kernels(dtype: np.dtype[Any]) -> Iterator[None]:
    """Around the first session of an upload's graph: onnxruntime's ``NotImplemented`` (no CPU kernel
    for an operator at the model's type) becomes ``no_kernel_refusal``, a 422 instead of exit 4."""
    try:
        yield
    except NoKernel as exc:
        raise no_kernel_refusal(exc, dtype) from exc


def no_kernel_refusal(exc: Exception, dtype: np.dtype[Any]) -> UnsupportedModelError:
    """The refusal of an upload that onnxruntime cannot load: its CPU provider has no kernel for one of
    the graph's operators at the model's element type (a float64 Conv, for one; ``exc`` is its
    ``NotImplemented``). netshrink re-checks every artifact in onnxruntime, so such a model cannot be
    compressed; ``dtype`` (the model's input type) is named, since another type is the usual way out."""
    m = NO_KERNEL.search(str(exc))
    what = f"{m[1]} (node {m[3]!r}, opset {m[2]})" if m else "one of its operators"
    hint = "; export it in float32" if np.dtype(dtype) != np.float32 else ""
    return UnsupportedModelError(
        f"onnxruntime's CPU provider, which runs every upload and artifact here, has no kernel for {what} "
        f"of this {np.dtype(dtype)} model, so it cannot be measured or compressed{hint}",
        nodes=[m[3]] if m else [],
    )


def ort_threads() -> int:
    """onnxruntime's intra-op threads: the same cores torch was given (``NETSHRINK_TORCH_THREADS``,
    the worker's setting, or torch's default in the CLI)."""
    import torch

    return max(1, torch.get_num_threads())


def session(
    model_bytes: bytes, level: str = "default", *, threads: int | None = None
) -> ort.InferenceSession:
    threads = ort_threads() if threads is None else threads
    opts = ort.SessionOptions()
    opts.graph_optimization_level = OPTIMIZATION_LEVELS[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def fixed_batch(sess: ort.InferenceSession, input_name: str) -> int | None:
    """The input's batch size when the model fixes it (``torch.onnx.export`` without dynamic axes
    writes ``[1, ...]``), else None."""
    for i in sess.get_inputs():
        if i.name == input_name and i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0:
            return int(i.shape[0])
    return None


ORT_FLOAT_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
}


def input_type(sess: ort.InferenceSession, input_name: str) -> np.dtype[Any]:
    """The numpy type of the float input ``input_name`` as the model declares it (float32, float16 or
    float64): onnxruntime refuses any other ("Unexpected input data type")."""
    for i in sess.get_inputs():
        if i.name == input_name:
            if i.type not in ORT_FLOAT_TYPES:
                raise ValueError(f"input {input_name!r} is {i.type}, not a float tensor")
            return ORT_FLOAT_TYPES[i.type]
    raise KeyError(f"the session has no input {input_name!r}")


def run_in_batches(
    sess: ort.InferenceSession, outputs: list[str] | None, input_name: str, X: np.ndarray
) -> list[np.ndarray]:
    """``sess.run`` on X (S, ...), in chunks of the model's own batch size when it is fixed.

    A last chunk shorter than the fixed batch is padded by repeating its last sample, and the padding
    is cut from every output (outputs are per-sample along axis 0). Dynamic batch: one call. X (any
    float type) is fed as the model's own input type (``input_type``): no copy when it is that already.
    """
    X = np.asarray(X, dtype=input_type(sess, input_name))  # (S, ...), the declared element type
    b = fixed_batch(sess, input_name)
    if b is None or X.shape[0] == b:
        return [np.asarray(o) for o in sess.run(outputs, {input_name: X})]
    parts: list[list[np.ndarray]] = []
    for start in range(0, X.shape[0], b):
        chunk = X[start : start + b]  # (≤ b, ...)
        n = chunk.shape[0]
        if n < b:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])  # (b, ...)
        parts.append([np.asarray(o)[:n] for o in sess.run(outputs, {input_name: chunk})])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def run_logits(
    model_bytes: bytes, input_name: str, logits: str, X: np.ndarray, level: str = "default"
) -> np.ndarray:
    """Logits of ``model_bytes`` on X (S, *input_shape), as float64 (S, K)."""
    return logits_of(session(with_logits_output(model_bytes, logits), level), input_name, logits, X)


def logits_of(sess: ort.InferenceSession, input_name: str, logits: str, X: np.ndarray) -> np.ndarray:
    """The output ``logits`` of a session on X (S, *input_shape), as float64 (S, K)."""
    (out,) = run_in_batches(sess, [logits], input_name, X)
    a = np.asarray(out, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def latency_ms(
    model: bytes | ort.InferenceSession, input_name: str, X: np.ndarray, *, repeats: int = 5
) -> float:
    """Median wall time of one batched forward pass in onnxruntime, in ms: of the model's bytes under
    default settings, or of a session of them built so already (one build less)."""
    sess = model if isinstance(model, ort.InferenceSession) else session(model, "default")
    run_in_batches(sess, None, input_name, X)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_in_batches(sess, None, input_name, X)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
