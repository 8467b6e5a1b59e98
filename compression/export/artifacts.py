"""Write the compressed artifacts and measure them as files (docs/method.md §5).

- ``model.onnx`` always: real integer initializers + DequantizeLinear, removed units gone.
- For state-dict inputs also ``model.pt`` / ``model.safetensors`` and ``architecture.json``.
- The ONNX artifact is run in onnxruntime on the held-out inputs, with default optimizations (what
  users get) and with ``ORT_DISABLE_ALL`` (the weights alone, comparable with the bound).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from netshrink.compression.evaluation.metrics import output_error
from netshrink.compression.evaluation.ort_eval import (
    OPTIMIZATION_LEVELS,
    latency_ms,
    logits_of,
    ort_threads,
    refusing_missing_kernels,
    session,
    with_logits_output,
)
from netshrink.compression.export.export_onnx import export_onnx_detailed
from netshrink.compression.export.export_torch import export_state_dict
from netshrink.compression.export.storage import storage_summary, upload_summary
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw
from netshrink.compression.search.measure import Measurement
from netshrink.compression.spec import CompressSpec


@dataclass
class Artifacts:
    files: dict[str, bytes]
    summary_before: dict[str, Any]
    summary_after: dict[str, Any]
    shapes_after: dict[str, list[int]]
    storage: list[dict[str, Any]]
    notes: list[str]
    onnxruntime: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: dict[str, Any] | None = None
    state_dict_after: int | None = None


LATENCY_BATCH = 64


@dataclass(frozen=True)
class UploadFacts:
    """What the artifacts report about the upload itself: its bytes by type, and its onnxruntime
    latency (None without the onnxruntime re-check). ``upload_facts`` measures them before the
    compression holds a draw, so that the upload's bytes, its parse and its onnxruntime session are
    not in memory next to the draw and the artifact (peak RSS, issue 10)."""

    summary: dict[str, Any]
    latency_ms: float | None


def upload_facts(net: Network, X: np.ndarray, *, onnxruntime_check: bool = True) -> UploadFacts:
    """``UploadFacts`` of ``net``'s upload; ``X`` (S, ...) the held-out inputs (the first
    ``LATENCY_BATCH`` time it)."""
    original = net.upload_bytes()
    summary = upload_summary(net, original)  # a state dict's tensors in their uploaded types
    # the upload's first session: a model onnxruntime cannot run is refused here, before any draw
    with refusing_missing_kernels(net.input_dtype):
        latency = latency_ms(original, net.input_name, X[:LATENCY_BATCH]) if onnxruntime_check else None
    return UploadFacts(summary, latency)


def build_artifacts(
    net: Network,
    nd: NetworkDraw,
    spec: CompressSpec,
    X: np.ndarray,
    m: Measurement,
    *,
    onnxruntime_check: bool = True,
    before: UploadFacts | None = None,
) -> Artifacts:
    """The artifacts of draw ``nd``; ``before`` (``upload_facts``, measured earlier) or measured here."""
    if before is None or (onnxruntime_check and before.latency_ms is None):
        before = upload_facts(net, X, onnxruntime_check=onnxruntime_check)
    compressed = {name: d.compressed for name, d in nd.layers.items()}
    ox = export_onnx_detailed(net, compressed, target_opset=spec.target_opset)
    files = {"model.onnx": ox.data}
    shapes = {layer.name: list(layer.weight.shape) for layer in net.layers}
    for ls in ox.layers:
        shapes[ls.layer] = list(ls.shape_after)
    storage = [{"layer": ls.layer, "weight": ls.weight, "outliers": ls.outliers} for ls in ox.layers]
    notes = list(ox.notes)
    for ls in ox.layers:
        d = nd.layers.get(ls.layer)
        pruned = (
            d is not None and spec.prune is not None and d.granularity == "weight" and d.expected_keep < 1
        )
        if d is not None and pruned and ls.weight in ("float32", "float16", "float64", "int8", "int4"):
            notes.append(
                f"{ls.layer}: unstructured pruning at density {d.compressed.density:.3f} is above the "
                f"sparse break-even for {ls.weight}; dense zeros are stored and this pruning saves no "
                "bytes on its own (docs/method.md §5)"
            )
    art = Artifacts(files, before.summary, storage_summary(ox.data), shapes, storage, notes)
    if net.source_format in ("pytorch", "safetensors"):
        fmt: Literal["pt", "safetensors"] = "pt" if net.source_format == "pytorch" else "safetensors"
        data, arch = export_state_dict(net, compressed, fmt=fmt)
        files[f"model.{fmt}"] = data
        files["architecture.json"] = json.dumps(arch, indent=2, sort_keys=True).encode()
        art.state_dict_after = len(data)
    if onnxruntime_check:
        check_in_onnxruntime(art, net, X, m, before)
    return art


def check_in_onnxruntime(
    art: Artifacts, net: Network, X: np.ndarray, m: Measurement, before: UploadFacts
) -> None:
    """Run the ONNX artifact in onnxruntime on ``X`` (S, ...): its error against ``m.phi`` at each
    optimization level, and its latency; fills ``art.onnxruntime`` and ``art.latency``. Needs only the
    artifact's bytes, so the caller may let the draw go first (``NetworkDraw.without_arrays``)."""
    shipped = art.files["model.onnx"]
    measured = with_logits_output(shipped, net.logits)  # the shipped bytes when Φ is an output
    X_lat = X[:LATENCY_BATCH]  # (≤ 64, ...): a latency needs no more, and costs 6 passes per model
    after: float | None = None
    for level in OPTIMIZATION_LEVELS:
        sess = session(measured, level)
        if level == "default" and measured is shipped:
            # this same session of the shipped bytes is timed first (its buffers then serve the
            # check below: 0.53 GiB instead of 0.8 on the 8192-wide MLP) and released before the
            # next session is built: one session alive at a time (peak RSS, issue 10)
            after = latency_ms(sess, net.input_name, X_lat)
        phi_hat = logits_of(sess, net.input_name, net.logits, X)
        e = output_error(m.phi, phi_hat)
        art.onnxruntime[level] = {"relative_l2": e.relative_l2, "p95": e.p95, "max": e.max}
        del sess, phi_hat
    art.latency = {
        "before": before.latency_ms,
        "after": latency_ms(shipped, net.input_name, X_lat) if after is None else after,
        "device": "cpu",
        "provider": "CPUExecutionProvider",
        "batch": int(X_lat.shape[0]),
        "threads": ort_threads(),
    }
