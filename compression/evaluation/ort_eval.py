"""Run an artifact in onnxruntime and read its logits (docs/method.md §5 "onnxruntime fusion").

Under default graph optimizations onnxruntime may fuse DequantizeLinear+MatMul into integer kernels
that also quantize the activations, so the artifact is measured twice: with the default settings
(what users get) and with ``ORT_DISABLE_ALL`` (the weights alone, comparable with the bound).
A model with a fixed batch dimension (``[1, 16]``) is run in batches of its own size.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort

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


def run_in_batches(
    sess: ort.InferenceSession, outputs: list[str] | None, input_name: str, X: np.ndarray
) -> list[np.ndarray]:
    """``sess.run`` on X (S, ...), in chunks of the model's own batch size when it is fixed.

    A last chunk shorter than the fixed batch is padded by repeating its last sample, and the padding
    is cut from every output (outputs are per-sample along axis 0). Dynamic batch: one call.
    """
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
