"""Core benchmark: our randomized greedy method vs its deterministic baselines and two library peers.

    python -m bench.core        # writes bench/results/core.{md,json}; ~1-2 min on a loaded 2-core CPU

Models (trained here with torch, seeded): a digits MLP 64→256→256→10 and a small CNN on the 8×8
digits images (conv 1→16 → pool → conv 16→32 → linear 512→10). Each is compressed through the
public entry point ``compression.pipeline.compress`` with the calibration split (500 samples; the
core keeps 20% of it apart for its own report). Every method is then judged the same way, on a test
split no method has seen (297 samples): the *shipped* ONNX file is run in onnxruntime (default graph
optimizations, what users get; and ``ORT_DISABLE_ALL``, the weights alone), and we report its bytes,
the relative output error on the logits, sqrt(E‖Φ−Φ̂‖²/E‖Φ‖²), and the test accuracy.

Methods:
- ours: randomized greedy pruning (unstructured, neuron/channel; layer and output-aware scores; one
  draw and best of 8 whole-network draws), stochastic-rounding quantization, and both (docs/method.md §1);
- baselines (ours, deterministic): ``magnitude``, ``obd`` pruning, ``rtn`` rounding, same density/bits;
- peers: ``torch.nn.utils.prune.l1_unstructured`` per layer (zeros weights; shipped as the dense fp32
  ONNX it produces, since sparse COO with int64 indices is larger at 50% density, see docs/method.md §5)
  and ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized at run time).

Timing: wall seconds of the whole ``compress`` call (draw + measurement + bound tiers + linearized
prediction + artifacts + onnxruntime re-check + diagnostics), the draw alone (``best_of``), and one
dense torch forward pass of the test batch (median of 20), all measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from bench.common import (
    DigitsCNN,
    Split,
    accuracy,
    digits_split,
    machine,
    md_table,
    mlp,
    mlp_architecture,
    ort_logits,
    relative_l2,
    to_network,
    train,
)
from netshrink.compression.evaluation.evaluation import evaluation_data
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.calibration import Calibration
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.select import best_of
from netshrink.compression.spec import CompressSpec

RESULTS = Path(__file__).parent / "results"
COMMAND = "python -m bench.core"
SEED = 0
KEEP = 0.5


def settings(structured: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, setting, spec) for our method and our baselines; ``structured`` is neuron | channel."""
    w = {"keep": KEEP, "granularity": "weight"}
    s = {"keep": KEEP, "granularity": structured}
    return [
        ("ours", f"prune weight κ={KEEP} (f auto)", {"prune": w}),
        ("ours", f"prune weight κ={KEEP}, output-aware score", {"prune": {**w, "score": "output"}}),
        ("ours", f"prune weight κ={KEEP}, best of 8 draws", {"prune": w, "draws": 8}),
        ("ours", f"prune {structured} κ={KEEP}", {"prune": s}),
        ("ours", "quantize 4 bit", {"quantize": {"bits": 4}}),
        ("ours", "quantize 8 bit", {"quantize": {"bits": 8}}),
        ("ours", f"prune weight κ={KEEP} + 4 bit", {"prune": w, "quantize": {"bits": 4}}),
        ("magnitude", f"prune weight κ={KEEP}", {"prune": {**w, "method": "magnitude"}}),
        ("obd", f"prune weight κ={KEEP}", {"prune": {**w, "method": "obd"}}),
        ("magnitude", f"prune {structured} κ={KEEP}", {"prune": {**s, "method": "magnitude"}}),
        ("rtn", "quantize 4 bit", {"quantize": {"bits": 4, "method": "rtn"}}),
        ("rtn", "quantize 8 bit", {"quantize": {"bits": 8, "method": "rtn"}}),
        (
            "magnitude+rtn",
            f"prune weight κ={KEEP} + 4 bit",
            {"prune": {**w, "method": "magnitude"}, "quantize": {"bits": 4, "method": "rtn"}},
        ),
    ]


def forward_seconds(model: nn.Module, X: np.ndarray, reps: int = 20) -> float:
    """Median wall time of one dense torch forward pass over the whole batch X."""
    Xt = torch.from_numpy(X)
    times = []
    with torch.no_grad():
        model(Xt)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            model(Xt)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def judge(model_bytes: bytes, split: Split, phi: np.ndarray) -> dict[str, Any]:
    """Bytes, test-split relative error (ORT default and no optimizations) and accuracy of a shipped file."""
    default = ort_logits(model_bytes, split.test_X, optimized=True)
    plain = ort_logits(model_bytes, split.test_X, optimized=False)
    return {
        "bytes": len(model_bytes),
        "relative_l2": relative_l2(phi, default),
        "relative_l2_no_opt": relative_l2(phi, plain),
        "accuracy": accuracy(default, split.test_y),
    }


def run_ours(net: Network, split: Split, phi: np.ndarray, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """One ``compress`` call (timed), then the draw alone (timed), then the shipped file judged."""
    spec = CompressSpec.from_dict({**spec_dict, "seed": SEED})
    cal = Calibration(split.cal_X, split.cal_y, sha256="bench")
    t0, c0 = time.perf_counter(), time.process_time()
    result = compress(net, spec, calibration=cal)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    data = evaluation_data(net, spec.evaluation, cal, SEED)
    t0 = time.perf_counter()
    best_of(net, Executor(net, "cpu"), spec, torch.as_tensor(data.fit))
    draw = time.perf_counter() - t0
    s = result.report["summary"]
    randomized = all(
        stage is None or stage.method == "randomized_greedy" for stage in (spec.prune, spec.quantize)
    )
    return {
        **judge(result.artifacts["model.onnx"], split, phi),
        "compress_s": wall,
        "compress_cpu_s": cpu,
        "draw_s": draw,
        "report_relative_l2": s["error"]["relative_l2"],
        # Tier E and the linearized prediction describe the randomized draw; the deterministic
        # baselines carry tier W only (docs/method.md §1 "Baselines"), so both are left out for them.
        "bound_E_relative": s["bounds"]["E"]["relative"] if randomized else None,
        "prediction_relative": (s.get("prediction") or {}).get("relative_l2") if randomized else None,
    }


def run_torch_l1(model: nn.Module, arch: dict[str, Any], split: Split, phi: np.ndarray) -> dict[str, Any]:
    """``l1_unstructured(amount=1-κ)`` on every weight, made permanent; shipped as dense fp32 ONNX."""
    pruned = copy.deepcopy(model)
    t0 = time.perf_counter()
    for mod in pruned.modules():
        if isinstance(mod, nn.Linear | nn.Conv2d):
            torch_prune.l1_unstructured(mod, name="weight", amount=1 - KEEP)
            torch_prune.remove(mod, "weight")
    wall = time.perf_counter() - t0
    onnx_bytes = to_network(pruned, arch).original.SerializeToString()
    nnz = sum(int((m.weight != 0).sum()) for m in pruned.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    out = {**judge(onnx_bytes, split, phi), "compress_s": wall, "compress_cpu_s": None, "draw_s": None}
    out["sparse_coo_weight_bytes"] = nnz * (4 + 8)  # fp32 value + int64 index per kept weight
    return out


def run_ort_dynamic(net: Network, split: Split, phi: np.ndarray) -> dict[str, Any]:
    """``quantize_dynamic`` with int8 weights (per-tensor, its default) on the dense ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "dense.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(net.original.SerializeToString())
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its advice to run shape-inference pre-processing first
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        wall = time.perf_counter() - t0
        q = dst.read_bytes()
    return {**judge(q, split, phi), "compress_s": wall, "compress_cpu_s": None, "draw_s": None}


def bench_model(
    name: str, model: nn.Module, arch: dict[str, Any], split: Split, epochs: int, structured: str
) -> dict[str, Any]:
    train_s = train(model, split.train_X, split.train_y, epochs=epochs, seed=SEED)
    net = to_network(model, arch)
    dense = net.original.SerializeToString()
    phi = ort_logits(dense, split.test_X)  # (S_test, 10) dense logits
    fwd = forward_seconds(model, split.test_X)
    rows: list[dict[str, Any]] = [
        {
            "method": "dense",
            "setting": "fp32",
            **judge(dense, split, phi),
            "compress_s": None,
            "compress_cpu_s": None,
            "draw_s": None,
        }
    ]
    for method, setting, spec in settings(structured):
        rows.append({"method": method, "setting": setting, **run_ours(net, split, phi, spec)})
        print(
            f"  {name}: {method} {setting}: {rows[-1]['relative_l2']:.4f} in {rows[-1]['compress_s']:.1f} s"
        )
    rows.append(
        {
            "method": "torch l1_unstructured",
            "setting": f"amount={1 - KEEP}",
            **run_torch_l1(model, arch, split, phi),
        }
    )
    rows.append(
        {"method": "ort quantize_dynamic", "setting": "int8 weights", **run_ort_dynamic(net, split, phi)}
    )
    for r in rows:
        r["compress_over_forward"] = None if r["compress_s"] is None else r["compress_s"] / fwd
        r["draw_over_forward"] = None if r["draw_s"] is None else r["draw_s"] / fwd
    return {
        "model": name,
        "params": net.n_params,
        "train_s": train_s,
        "forward_s": fwd,
        "test_samples": int(split.test_X.shape[0]),
        "rows": rows,
    }


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    header = [
        "method",
        "setting",
        "bytes",
        "rel. err (ORT default)",
        "rel. err (ORT no opt)",
        "test acc",
        "compress s",
        "compress CPU s",
        "draw s",
        "compress/forward",
        "E-bound rel.",
        "prediction rel.",
    ]
    out = [
        f"Generated by `{COMMAND}` on {info['cores']} cores ({info['cpu']}), torch {info['torch']}, "
        f"onnxruntime {info['onnxruntime']}, {info['torch_threads']} torch thread(s); total "
        f"{info['total_s']:.0f} s.\n"
    ]
    for res in results:
        out.append(
            f"\n### {res['model']} ({res['params']} parameters; trained in {res['train_s']:.1f} s; one dense "
            f"forward pass of the {res['test_samples']}-sample test batch "
            f"= {1e3 * res['forward_s']:.3f} ms)\n\n"
        )
        rows = [
            [
                r["method"],
                r["setting"],
                r["bytes"],
                r["relative_l2"],
                r["relative_l2_no_opt"],
                r["accuracy"],
                r["compress_s"],
                r["compress_cpu_s"],
                r["draw_s"],
                r["compress_over_forward"],
                r.get("bound_E_relative"),
                r.get("prediction_relative"),
            ]
            for r in res["rows"]
        ]
        out.append(md_table(header, rows))
        sparse = [r for r in res["rows"] if "sparse_coo_weight_bytes" in r]
        for r in sparse:
            out.append(
                f"\n{r['method']}: as sparse COO (fp32 + int64 index) its weights alone would take "
                f"{r['sparse_coo_weight_bytes']} bytes, more than dense, so the dense file is shipped.\n"
            )
    return "".join(out)


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Takes no options. Writes bench/results/core.{md,json}."
    ).parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = []
    torch.manual_seed(SEED)
    model = mlp((64, 256, 256, 10))
    results.append(
        bench_model(
            "digits MLP 64→256→256→10",
            model,
            mlp_architecture(model, 64),
            digits_split(image=False),
            epochs=20,
            structured="neuron",
        )
    )
    torch.manual_seed(SEED)
    cnn = DigitsCNN()
    results.append(
        bench_model(
            "digits CNN conv16-pool-conv32-fc",
            cnn,
            cnn.architecture(),
            digits_split(image=True),
            epochs=20,
            structured="channel",
        )
    )
    info = {**machine(), "total_s": time.perf_counter() - t0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = markdown(results, info)
    (RESULTS / "core.md").write_text(text, encoding="utf-8")
    payload = {"command": COMMAND, "machine": info, "results": results}
    (RESULTS / "core.json").write_text(
        json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
