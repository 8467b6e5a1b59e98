"""Residual, depthwise and concat CNNs: our channel pruning (dependency groups) and quantization against
Torch-Pruning (DepGraph + MagnitudePruner) and onnxruntime quantization, in one run.

Models: the ResNet-, MobileNetV2- and two-branch-Concat CNNs of ``tests/dag_models.py`` (trained
briefly in torch on their generated 4-class task), uploaded as ONNX (TorchScript exporter, BN nodes),
and ``resnet-wide``, the same ResNet at widths 32/64 (77 k weights), where a 4-bit file is no longer
dominated by the graph's own bytes.
Ours: ``--prune-keep κ --granularity channel`` for κ ∈ {0.9, 0.75, 0.5}, and ``--bits 4`` / ``--bits 8``,
seed 0, calibrated on 200 labelled samples. Peers: ``torch_pruning.pruner.MagnitudePruner`` (L2
importance, DepGraph groups, pruning_ratio = 1 − κ, classifier ignored), exported with the same
exporter; ``onnxruntime.quantization.quantize_dynamic`` (int8) and ``quantize_static`` QDQ
per-channel int8 (calibrated on the same 200 samples). Every error is measured on a separate test set
(512 samples) by running the shipped ONNX file in onnxruntime against the dense model's logits.

Columns: file bytes and, measured from every file the same way (``export.storage.storage_summary``),
its tensor bytes (initializers: weights, biases, scales) and graph bytes (the rest: nodes, names,
shapes); conv/linear weight count after/before; relative L2 error of the logits; accuracy; compress
wall time; our end-to-end tier-E/T/W bounds (on E‖Φ−Φ̂‖², report held-out split), the tightness
mse / bound E and the linearized prediction / mse. Run: ``.venv/bin/python -m bench.cnn``
(``--models resnet,resnet-wide`` for a subset; writes ``bench/results/cnn.{md,json}``).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from bench.common import accuracy, machine, md_table, ort_logits, relative_l2
from netshrink.compression.export.storage import storage_summary
from netshrink.compression.graph.calibration import load_calibration
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D

OUT = Path(__file__).resolve().parent / "results"
KEEPS = (0.9, 0.75, 0.5)
BITS = (4, 8)


def _weights(model: onnx.ModelProto) -> int:
    """Conv/Gemm weight entries of an ONNX file (quantized codes counted as entries)."""
    inits = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    total = 0
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1:
            w = n.input[1]
            src = made.get(w)
            while src is not None and src.op_type in ("DequantizeLinear", "Add", "Identity"):
                w = src.input[0]
                src = made.get(w)
            total += inits.get(w, 0)
    return total


def _judge(data: bytes, X: np.ndarray, y: np.ndarray, phi: np.ndarray) -> dict[str, Any]:
    phi_hat = ort_logits(data, X, optimized=False)
    st = storage_summary(data)
    return {
        "bytes": len(data),
        "tensor_bytes": st["weights"],
        "graph_bytes": st["graph"],
        "weights": _weights(onnx.load_model_from_string(data)),
        "relative_l2": relative_l2(phi, phi_hat),
        "accuracy": accuracy(phi_hat, y),
    }


def _ours(
    arch: str, spec: dict[str, Any], tmp: Path, X: np.ndarray, y: np.ndarray, phi: np.ndarray
) -> dict[str, Any]:
    net = load_model(tmp / f"{arch}.onnx")
    cal = load_calibration(tmp / "cal.npz", net)
    t0 = time.perf_counter()
    res = compress(net, CompressSpec.from_dict({**spec, "seed": 0}), calibration=cal)
    wall = time.perf_counter() - t0
    s = res.report["summary"]
    mse = s["error"]["mse"]
    bE, bT, bW = (s["bounds"][t]["value"] for t in ("E", "T", "W"))
    pred = (s.get("prediction") or {}).get("mse")
    keeps = {(e["keep"] or {}).get("realized") for e in res.report["layers"] if e.get("f") is not None}
    return {
        **_judge(res.artifacts["model.onnx"], X, y, phi),
        "seconds": wall,
        "bound_E": bE,
        "bound_T": bT,
        "bound_W": bW,
        "tightness_E": None if not bE else mse / bE,
        "tightness_W": None if not bW else mse / bW,
        "prediction_over_mse": None if pred is None or not mse else pred / mse,
        "realized_keeps": sorted(k for k in keeps if k is not None),
        "not_covered_tiers": sorted({n["tier"] for n in res.report["not_covered"]}),
    }


def _torch_pruning(arch: str, keep: float, X: np.ndarray, y: np.ndarray, phi: np.ndarray) -> dict[str, Any]:
    import copy

    import torch_pruning as tp

    model = copy.deepcopy(D.trained(arch)).eval()
    example = torch.zeros(1, *D.INPUT_SHAPE)
    t0 = time.perf_counter()
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=1.0 - keep,
        ignored_layers=[model.fc],
    )
    pruner.step()
    wall = time.perf_counter() - t0
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        D._export(model, buf)
    return {**_judge(buf.getvalue(), X, y, phi), "seconds": wall, "bound_E": None, "bound_W": None}


class _Reader:
    def __init__(self, X: np.ndarray) -> None:
        self.items = iter([{"input": X[i : i + 32]} for i in range(0, X.shape[0], 32)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def _ort(
    kind: str, dense: bytes, cal: np.ndarray, X: np.ndarray, y: np.ndarray, phi: np.ndarray
) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "dense.onnx"), Path(tmp, "q.onnx")
        src.write_bytes(dense)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "dynamic":
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            else:
                quantize_static(
                    src, dst, _Reader(cal), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                )  # fmt: skip
        wall = time.perf_counter() - t0
        data = dst.read_bytes()
    return {**_judge(data, X, y, phi), "seconds": wall, "bound_E": None, "bound_W": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join([*D.BUILDERS, *D.EXTRA]), help="comma-separated subset")
    models = ap.parse_args().models.split(",")
    torch.set_num_threads(1)
    X, y = D.task_data(512, seed=7)
    Xc, yc = D.task_data(200, seed=5)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        np.savez(tmp / "cal.npz", inputs=Xc, labels=yc)
        for arch in models:
            dense = D.onnx_bytes(arch)
            (tmp / f"{arch}.onnx").write_bytes(dense)
            phi = ort_logits(dense, X)
            base = {**_judge(dense, X, y, phi), "seconds": 0.0, "bound_E": None, "bound_W": None}
            rows.append({"model": arch, "method": "dense", "setting": "fp32", **base})
            for keep in KEEPS:
                spec = {"prune": {"keep": keep, "granularity": "channel"}}
                rows.append(
                    {
                        "model": arch,
                        "method": "ours",
                        "setting": f"channel keep {keep}",
                        **_ours(arch, spec, tmp, X, y, phi),
                    }
                )
                rows.append(
                    {
                        "model": arch,
                        "method": "torch-pruning",
                        "setting": f"MagnitudePruner ratio {1 - keep:.2f}",
                        **_torch_pruning(arch, keep, X, y, phi),
                    }
                )
            for bits in BITS:
                rows.append(
                    {
                        "model": arch,
                        "method": "ours",
                        "setting": f"{bits} bits",
                        **_ours(arch, {"quantize": {"bits": bits}}, tmp, X, y, phi),
                    }
                )
            rows.append(
                {
                    "model": arch,
                    "method": "ort",
                    "setting": "quantize_dynamic int8",
                    **_ort("dynamic", dense, Xc, X, y, phi),
                }
            )
            rows.append(
                {
                    "model": arch,
                    "method": "ort",
                    "setting": "quantize_static QDQ per-channel int8",
                    **_ort("static", dense, Xc, X, y, phi),
                }
            )
    for r in rows:
        dense_row = next(d for d in rows if d["model"] == r["model"] and d["method"] == "dense")
        r["bytes_ratio"] = dense_row["bytes"] / r["bytes"]
        r["tensor_bytes_ratio"] = dense_row["tensor_bytes"] / r["tensor_bytes"]
        r["accuracy_drop_points"] = 100 * (dense_row["accuracy"] - r["accuracy"])
        r["weights_ratio"] = r["weights"] / dense_row["weights"] if r["weights"] else None  # None: not traced
    header = ["model", "method", "setting", "bytes", "× smaller", "tensor bytes", "tensors × smaller",
              "graph bytes", "weights ×", "rel. L2", "accuracy", "drop (pts)", "seconds", "bound E",
              "tight. E", "bound T", "bound W", "pred / mse"]  # fmt: skip
    table = md_table(
        header,
        [
            [r["model"], r["method"], r["setting"], r["bytes"], r["bytes_ratio"], r["tensor_bytes"],
             r["tensor_bytes_ratio"], r["graph_bytes"], r["weights_ratio"], r["relative_l2"], r["accuracy"],
             r["accuracy_drop_points"], r["seconds"], r["bound_E"], r.get("tightness_E"), r.get("bound_T"),
             r["bound_W"], r.get("prediction_over_mse")]
            for r in rows
        ],
    )  # fmt: skip
    OUT.mkdir(exist_ok=True)
    out = {"machine": machine(), "models": models, "rows": rows}
    (OUT / "cnn.json").write_text(json.dumps(out, indent=1))
    (OUT / "cnn.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
