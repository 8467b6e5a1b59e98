"""``finetune()``: the finetune job, from a loaded ``Network`` and training data to report + artifacts.

Flow (docs/method.md §4, [P3] Wan et al. 2024): load and split the training data -> refuse what would
only fail later (``checks``: a follow-up compress's validation split under 2 samples, inputs past
float32's range) -> train the plain arm (the control) -> train the noise arm (or one per σ of a
sweep, keeping the largest σ whose accuracy stays within ``tolerance`` points of the plain arm, as P3
selects σ) -> measure the original, plain and noise models on the validation split (accuracy, α̂,
q(ε), compressibility curves, the neuron/channel prune curve and its prunable fraction at ≤ tolerance
points) -> write the noise-arm model in the upload's format -> optionally compress it
(``pipeline.compress``) -> the report.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netshrink.compression.api import CancelFn, CompressionResult, ProgressEvent, ProgressFn
from netshrink.compression.diagnostics.diagnostics import tail_summary, tensor_rows
from netshrink.compression.errors import InvalidSpecError, UnsupportedModelError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.finetune.checks import check_follow_up_samples, check_input_range
from netshrink.compression.finetune.data import TrainingData, check_files, load_split
from netshrink.compression.finetune.noise import hidden_layers, noise_scale
from netshrink.compression.finetune.prunability import prune_curve
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.finetune.train import (
    ArmResult,
    Model,
    TrainingDivergedError,
    Weights,
    accuracy,
    stop_if_cancelled,
    train_arm,
)
from netshrink.compression.finetune.writeback import finetuned_files
from netshrink.compression.graph.calibration import Calibration
from netshrink.compression.graph.network import Network
from netshrink.compression.report.provenance import library_versions, resolve_device, sha256_bytes
from netshrink.compression.search.spec_check import check_spec

REPORT_SCHEMA = "netshrink.finetune-report/1"
MAX_DECOMPRESSED = 2 * 2**30
FOLLOW_UP_PREFIX = "compressed_"  # the follow-up compress's files, next to the fine-tuned model's


def finetune(
    net: Network,
    spec: FinetuneSpec,
    train: str | Path,
    *,
    upload: str | Path,
    validation: str | Path | None = None,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    input_sha256: str | None = None,
    max_data_bytes: int | None = None,
) -> CompressionResult:
    """Fine-tune ``net`` (the model read from ``upload``) in a plain and a noise arm; see the module doc."""
    spec = spec.with_seed()
    assert spec.seed is not None
    _supported(net, spec)
    device = resolve_device(spec.device)
    emit = _progress(on_progress, should_cancel)
    emit("preparing", 0, 0, 0.0)
    ex = Executor(net, device)
    n_classes, data = _checked(net, spec, ex, train, validation, max_data_bytes)
    tensors = _tensors(data, device)
    check_input_range(ex, net, tensors[0], "train")  # before any arm: inputs ×1e30 are no divergence
    check_input_range(ex, net, tensors[2], "validation" if data.validation_source == "uploaded" else "train")
    start = Weights.of(net)
    runs = [("plain", 0.0)] + [("noise", s) for s in spec.sigmas]
    results: dict[float | str, ArmResult] = {}
    sweep: list[dict[str, Any]] = []
    for i, (arm, sigma) in enumerate(runs):

        def on_epoch(e: int, n: int, i: int = i) -> None:
            emit("training", e, n, 0.05 + 0.8 * (i + e / n) / len(runs))

        on_epoch(0, spec.epochs)  # the arm starts (epoch 0 of n): progress and stage timing
        try:
            res = train_arm(
                net,
                ex,
                start,
                spec,
                tensors,
                arm=arm,
                sigma=sigma,
                on_epoch=on_epoch,
                should_cancel=should_cancel,
            )
        except TrainingDivergedError as exc:
            if arm == "plain" or not spec.is_sweep:
                raise
            sweep.append({"sigma": sigma, "diverged": True, "detail": exc.detail, "accuracy": None})
            continue
        results["plain" if arm == "plain" else sigma] = res
        if arm == "noise":
            sweep.append({"sigma": sigma, "diverged": False, "accuracy": res.history[-1]["accuracy"]})
    plain = results["plain"]
    chosen_sigma, selection = _choose_sigma(spec, plain, sweep)
    noise = results[chosen_sigma]

    def model_for(w: Weights) -> Model:
        return Model(net, ex, w)

    X_val, y_val = tensors[2], tensors[3]
    measured: dict[str, dict[str, Any]] = {}
    for j, (name, w, hist) in enumerate(
        (
            ("original", start, None),
            ("plain", plain.weights, plain.history),
            ("noise", noise.weights, noise.history),
        )
    ):
        emit("measuring", j, 3, 0.85 + 0.05 * j)
        measured[name] = _measure(net, model_for, w, X_val, y_val, spec, hist, should_cancel)
    if spec.is_sweep:
        for row in sweep:
            if not row["diverged"]:
                w = results[row["sigma"]].weights
                curve = prune_curve(net, model_for, w, X_val, y_val, spec.tolerance, should_cancel)
                row["prunable_fraction"] = curve["prunable_fraction"]
    emit("exporting", 0, 0, 0.95)
    files = finetuned_files(net, noise.weights, upload, max_decompressed_bytes=MAX_DECOMPRESSED)
    follow: dict[str, Any] | None = None
    if spec.compress is not None:
        emit("compressing", 0, 0, 0.97)
        follow, extra = _follow_up(net, spec, files, data, should_cancel)
        files.update(extra)
    report = {
        "schema": REPORT_SCHEMA,
        "kind": "finetune",
        "model": {
            "format": net.source_format,
            "n_params": net.n_params,
            "layers": [layer.name for layer in net.layers],
            "n_classes": n_classes,
        },
        "data": {
            "train_samples": int(data.x_train.shape[0]),
            "validation_samples": int(data.x_val.shape[0]),
            "validation_source": data.validation_source,
            "train_sha256": data.sha256,
        },
        "finetune": {
            "method": "P3 heavy-tailed noise injection after each optimizer step (Wan et al. 2024)",
            "hidden_layers": hidden_layers(net),
            "noise": {
                "alpha": spec.alpha,
                "sigma": chosen_sigma,
                "eta": spec.eta,
                "scale": noise_scale(chosen_sigma, spec.eta, spec.alpha),
                "type": "one symmetric alpha-stable scalar per unit (row / output channel), CMS sampler",
            },
            "original": measured["original"],
            "arms": {"plain": measured["plain"], "noise": measured["noise"]},
            "sweep": sweep if spec.is_sweep else None,
            "selection": selection,
            "tolerance_points": spec.tolerance,
        },
        "compress": follow,
        "reproducibility": {
            "seed": spec.seed,
            "device": device.type,
            "versions": library_versions(),
            "input_sha256": input_sha256 or sha256_bytes(Path(upload).read_bytes()),
            "train_sha256": data.sha256,
            "spec": spec.to_dict(),
        },
    }
    if on_progress is not None:
        on_progress(ProgressEvent(stage="done", fraction=1.0))
    return CompressionResult(report=report, artifacts=files)


def check_inputs(
    net: Network,
    spec: FinetuneSpec,
    train: str | Path,
    *,
    validation: str | Path | None = None,
    max_bytes: int | None = None,
) -> None:
    """What the service checks on submit: full support, a classifier, training data that fits it.

    The device is not checked here: a GPU worker, not the API process, runs a ``cuda`` job."""
    _supported(net, spec, device=False)
    n_classes = _n_classes(net, Executor(net, "cpu"))
    fraction = spec.validation_fraction
    check_files(train, net, n_classes, validation=validation, fraction=fraction, max_bytes=max_bytes)


def _checked(
    net: Network,
    spec: FinetuneSpec,
    ex: Executor,
    train: str | Path,
    validation: str | Path | None,
    max_bytes: int | None,
) -> tuple[int, TrainingData]:
    _supported(net, spec)
    if spec.compress is not None:  # the follow-up's layer names and keeps, before any training
        check_spec(net, spec.compress)  # (until 2026-12-05 only after both arms had trained)
    n_classes = _n_classes(net, ex)
    data = load_split(
        train,
        net,
        n_classes,
        validation=validation,
        fraction=spec.validation_fraction,
        seed=spec.seed or 0,
        max_bytes=max_bytes,
    )
    n_file = int(data.x_train.shape[0] + (data.x_val.shape[0] if data.validation_source == "carved" else 0))
    check_follow_up_samples(
        spec, int(data.x_val.shape[0]), carved=data.validation_source == "carved", n_train_file=n_file
    )
    return n_classes, data


def _supported(net: Network, spec: FinetuneSpec, *, device: bool = True) -> None:
    if net.support != "full":
        raise UnsupportedModelError(
            "fine-tuning needs full support (the graph is trained through the torch executor); "
            "this graph is generic: " + "; ".join(net.not_covered[:3])
        )
    if device and spec.device == "cuda" and not torch.cuda.is_available():
        raise InvalidSpecError("device 'cuda' was asked for but torch sees no CUDA device", field="device")


def _progress(
    fn: ProgressFn | None, should_cancel: CancelFn | None
) -> Callable[[str, int, int, float], None]:
    """Forward a stage event, then stop if the job was cancelled (as ``pipeline._Progress`` does):
    every stage boundary is a cancellation point, the training steps and measurements have their own."""

    def emit(stage: str, i: int, n: int, fraction: float) -> None:
        if fn is not None:
            fn(ProgressEvent(stage=stage, layer=i, layers_total=n, fraction=round(min(fraction, 1.0), 4)))
        stop_if_cancelled(should_cancel)

    return emit


def _n_classes(net: Network, ex: Executor) -> int:
    probe = torch.zeros((1, *net.input_shape), device=ex.device)
    with torch.no_grad():
        logits = ex.run(probe)[net.logits]
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise UnsupportedModelError(
            "fine-tuning needs a classifier whose logits are (batch, classes); "
            f"got shape {tuple(logits.shape)}"
        )
    return int(logits.shape[1])


def _tensors(
    data: TrainingData, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(data.x_train, device=device),  # (N, *in)
        torch.as_tensor(data.y_train, device=device),  # (N,)
        torch.as_tensor(data.x_val, device=device),  # (V, *in)
        torch.as_tensor(data.y_val, device=device),  # (V,)
    )


def _choose_sigma(
    spec: FinetuneSpec, plain: ArmResult, sweep: list[dict[str, Any]]
) -> tuple[float, dict[str, Any] | None]:
    """The single σ, or (sweep) the largest σ within ``tolerance`` points of the plain arm [P3]."""
    if not spec.is_sweep:
        return spec.sigmas[0], None
    ok = [r for r in sweep if not r["diverged"]]
    if not ok:
        raise TrainingDivergedError(
            "every sigma of the sweep diverged (non-finite loss); lower sigma or eta", field="sigma"
        )
    floor = plain.history[-1]["accuracy"] - spec.tolerance
    within = [r for r in ok if r["accuracy"] >= floor - 1e-9]
    if within:
        pick = max(within, key=lambda r: r["sigma"])
        rule = f"the largest sigma whose accuracy is within {spec.tolerance} points of the plain arm"
    else:
        pick = min(ok, key=lambda r: r["sigma"])
        rule = f"no sigma stayed within {spec.tolerance} points of the plain arm: the smallest one is kept"
    return float(pick["sigma"]), {
        "sigma": float(pick["sigma"]),
        "rule": rule,
        "plain_accuracy": floor + spec.tolerance,
    }


def _measure(
    net: Network,
    model_for: Callable[[Weights], Model],
    w: Weights,
    X: torch.Tensor,
    y: torch.Tensor,
    spec: FinetuneSpec,
    history: list[dict[str, float]] | None,
    should_cancel: CancelFn | None = None,
) -> dict[str, Any]:
    """Accuracy, loss, per-layer α̂ / q(ε) / curves and the prune curve of one model on (X, y);
    cancellable between layers and between prune fractions (it was not: a cancel in ``measuring``
    was acknowledged and ignored until 2026-12-05, found by probing)."""
    assert spec.seed is not None
    model = model_for(w)
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model.logits(X), y))
    layers = []
    for layer in net.layers:
        stop_if_cancelled(should_cancel)
        d = tail_summary(layer.name, tensor_rows(w.weight[layer.name]), seed=spec.seed)  # no SVD
        layers.append(
            {
                "name": layer.name,
                "hidden": layer.name in hidden_layers(net),
                **{k: d[k] for k in ("rows", "alpha", "q", "curves", "low_confidence")},
            }
        )
    return {
        "accuracy": accuracy(model, X, y),
        "loss": loss,
        "history": history,
        "layers": layers,
        "prune": prune_curve(net, model_for, w, X, y, spec.tolerance, should_cancel),
    }


def _follow_up(
    net: Network,
    spec: FinetuneSpec,
    files: dict[str, bytes],
    data: TrainingData,
    should_cancel: CancelFn | None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Compress the fine-tuned model with ``spec.compress``, calibrated on the validation split.

    Its files come back under ``FOLLOW_UP_PREFIX`` (``compressed_model.onnx``, ...), and its report
    names them so (``artifacts``, ``summary.bytes.measured_from``): until 2026-12-05 the nested report
    listed ``model.onnx`` / ``model.pt`` with the compressed files' sha256, while the files of those
    names are the fine-tuned, uncompressed model (found by probing)."""
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.pipeline import compress

    assert spec.compress is not None
    ((name, blob),) = files.items()
    cal = Calibration(
        inputs=data.x_val, labels=data.y_val, sha256=sha256_bytes(np.ascontiguousarray(data.x_val).tobytes())
    )
    cspec = (
        spec.compress
        if spec.compress.seed is not None
        else dataclasses.replace(spec.compress, seed=spec.seed)
    )
    # the loaded network re-reads its file where the export needs the upload verbatim
    # (graph.network.UploadFile), so the file outlives the whole compress, not just the load
    with tempfile.TemporaryDirectory(prefix="netshrink-ft-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(blob)
        tuned = load_model(path, architecture=net.architecture)
        result = compress(
            tuned, cspec, calibration=cal, should_cancel=should_cancel, input_sha256=sha256_bytes(blob)
        )
    report = result.report
    report["artifacts"] = [{**a, "name": FOLLOW_UP_PREFIX + a["name"]} for a in report["artifacts"]]
    sizes = report.get("summary", {}).get("bytes", {})
    if "measured_from" in sizes:
        sizes["measured_from"] = FOLLOW_UP_PREFIX + sizes["measured_from"]
    return report, {FOLLOW_UP_PREFIX + k: v for k, v in result.artifacts.items()}
