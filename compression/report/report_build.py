"""Assemble the ``CompressionReport`` dicts for compress and analyze jobs (docs/report-format.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from netshrink.compression.bounds.advice import advise
from netshrink.compression.bounds.certificate import sigma_bound
from netshrink.compression.diagnostics.diagnostics import diagnose_network
from netshrink.compression.evaluation.evaluation import EvalData
from netshrink.compression.evaluation.metrics import loss_bound, mse_loss
from netshrink.compression.export.artifacts import Artifacts
from netshrink.compression.graph.network import Network
from netshrink.compression.report.provenance import reproducibility
from netshrink.compression.report.report import (
    MARKOV_CAVEAT,
    PREDICTION_LABEL,
    SCHEMA,
    bound_verdict,
    end_to_end_bounds,
    layer_entry,
    model_section,
    not_covered,
    sigma_summary,
)
from netshrink.compression.search.greedy import NetworkDraw
from netshrink.compression.search.measure import Measurement
from netshrink.compression.spec import CompressSpec


def _params(net: Network, shapes: dict[str, list[int]]) -> int:
    total = 0
    for layer in net.layers:
        shape = shapes.get(layer.name, list(layer.weight.shape))
        total += math.prod(shape) + (shape[0] if layer.bias is not None else 0)
    return total


def build_compress_report(
    *,
    net: Network,
    spec: CompressSpec,
    seed: int,
    device: torch.device,
    data: EvalData,
    draw: NetworkDraw,
    m: Measurement,
    predictions: dict[str, float] | None,
    prediction_reason: str,
    artifacts: Artifacts,
    baselines: list[dict[str, Any]],
    budget: dict[str, Any] | None,
    input_sha256: str,
    diagnostics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    eps = spec.target.max if spec.target is not None and spec.target.max is not None else 0.1
    layers = []
    for layer in net.layers:
        d = draw.layers.get(layer.name)
        methods = {
            "prune": None if spec.prune is None or d is None or d.expected_keep >= 1 else spec.prune.method,
            "quantize": None
            if spec.quantize is None or d is None or d.compressed.bits is None
            else spec.quantize.method,
            "score": None if spec.prune is None else spec.prune.score,
            "granularity": None if d is None else d.granularity,
        }
        layers.append(
            layer_entry(
                net,
                layer.name,
                d,
                m,
                artifacts.shapes_after[layer.name],
                methods=methods,
                keep_target=None if spec.prune is None or d is None else spec.prune.keep_for(layer.name),
                prediction=None if predictions is None else predictions.get(layer.name, 0.0),
                epsilon=eps,
            )
        )
    energy = m.error.reference_energy
    pred_total = None if predictions is None else sum(predictions.values())
    delta = spec.evaluation.delta
    bounds = end_to_end_bounds(m.end_to_end, m.error.mse, energy, delta)
    loss = None
    labels = data.holdout_labels
    if labels is not None and m.end_to_end.get("E") is not None:
        before, after = mse_loss(m.phi, labels), mse_loss(m.phi_hat, labels)
        bound = loss_bound(before, float(m.end_to_end["E"] or 0.0))
        loss = {
            "loss": "mean squared error on the logits vs one-hot labels",
            "loss_before": before,
            "loss_after": after,
            "bound": bound,
            "tier": "E",
            "holds": bool(after <= bound),
        }
    budget_met = None
    if budget is not None:
        t = spec.target
        assert t is not None
        measured: float | None
        if t.metric == "relative_l2":
            measured = m.error.relative_l2
            budget_met = bool(measured <= float(t.max or 0.0))
        else:
            measured = (m.classification or {}).get("top1_agreement")
            budget_met = measured is not None and bool(measured >= float(t.min or 0.0))
        budget = {**budget, "met": budget_met, "measured_holdout": measured}  # in the target's metric
    summary = {
        "params": {"before": _params(net, {}), "after": _params(net, artifacts.shapes_after)},
        "bytes": {
            "before": artifacts.summary_before,
            "after": artifacts.summary_after,
            "ratio": artifacts.summary_before["total"] / max(1, artifacts.summary_after["total"]),
            "measured_from": "model.onnx",
            "state_dict_after": artifacts.state_dict_after,
        },
        "error": {
            **{k: m.error.to_dict()[k] for k in ("relative_l2", "mse", "p95", "max")},
            "onnxruntime": artifacts.onnxruntime or None,
        },
        "bounds": bounds,
        "sigma": sigma_summary(m),
        "bound_holds": bound_verdict(bounds, delta),
        "delta": delta,
        "markov_caveat": MARKOV_CAVEAT,
        "prediction": None
        if pred_total is None
        else {
            "mse": pred_total,
            "relative_l2": math.sqrt(pred_total / energy) if energy > 0 else None,
            "label": PREDICTION_LABEL,
        },
        "classification": m.classification,
        "loss_bound": loss,
        "latency_ms": artifacts.latency,
        "evaluation": data.describe(),
        "budget_met": budget_met,
        "fit_relative_l2": draw.fit_relative_l2 if math.isfinite(draw.fit_relative_l2) else None,
        "draws": draw.draws_summary() if draw.fit_errors else None,
        "compensated_layers": [n for n, d in draw.layers.items() if d.compensated],
        "storage": artifacts.storage,
        "storage_notes": artifacts.notes,
        "warnings": spec_warnings(spec),
    }
    return {
        "schema": SCHEMA,
        "kind": "compress",
        "model": model_section(net, input_sha256),
        "summary": summary,
        "layers": layers,
        "diagnostics": diagnose_network(net, seed=seed) if diagnostics is None else diagnostics,
        "baselines": baselines,
        "budget": budget,
        "not_covered": not_covered(
            net,
            layers,
            m.notes + ([] if predictions is not None else [f"prediction: {prediction_reason}"]),
        ),
        "reproducibility": reproducibility(
            seed=seed,
            draws=spec.draws,
            chosen_draw=draw.draw,
            device=device,
            spec=spec.to_dict(),
            input_sha256=input_sha256,
            calibration_sha256=data.calibration_sha256,
        ),
        "artifacts": [],
    }


NOTHING_TO_DO = (
    "nothing to compress: the spec sets neither prune nor quantize nor a target, so the model is "
    "returned unchanged (a drop-in check); add e.g. quantize.bits or prune.keep to shrink it"
)


def spec_warnings(spec: CompressSpec) -> list[str]:
    """Warnings about the spec itself, shown in the report and by the CLI (never a silent 1.00×)."""
    if spec.prune is None and spec.quantize is None and spec.target is None:
        return [NOTHING_TO_DO]
    return []


def build_analyze_report(
    net: Network,
    *,
    seed: int,
    input_sha256: str,
    on_layer: Callable[[int, int], None] | None = None,
    full_diagnostics: bool = False,
) -> dict[str, Any]:
    """Diagnostics and P1's width-condition advice from the weights alone (no compression)."""
    layers = []
    for layer in net.layers:
        if on_layer is not None:
            on_layer(layer.index, len(net.layers))
        hw = _static_hw(net, layer)
        cert = sigma_bound(layer, hw) if (layer.kind == "dense" or hw is not None) else None
        sigma = None if cert is None else cert.value
        layers.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "shape_before": list(layer.weight.shape),
                "inputs": {
                    "sigma": sigma,
                    "nu": float(abs(layer.weight).max()),
                    "n_in": layer.n_in,
                    "n_out": layer.n_out,
                    "L": layer.lipschitz,
                    "sigma_bound": None if cert is None else cert.to_dict(),
                },
                "advice": None if not sigma else advise(layer, sigma).to_dict(),
                "not_covered": list(layer.notes),
            }
        )
    from netshrink.compression.export.storage import upload_summary

    before = upload_summary(net)
    return {
        "schema": SCHEMA,
        "kind": "analyze",
        "model": model_section(net, input_sha256),
        "summary": {"params": {"before": _params(net, {})}, "bytes": {"before": before}},
        "layers": layers,
        "diagnostics": diagnose_network(net, seed=seed, full=full_diagnostics),
        "not_covered": [{"tier": "all", "layer": None, "reason": r} for r in net.not_covered],
        "reproducibility": reproducibility(
            seed=seed,
            draws=0,
            chosen_draw=0,
            device=torch.device("cpu"),
            spec={"kind": "analyze", "seed": seed, "full_diagnostics": full_diagnostics},  # as used
            input_sha256=input_sha256,
            calibration_sha256=None,
        ),
        "artifacts": [],
    }


def _static_hw(net: Network, layer: Any) -> tuple[int, int] | None:
    """The static input spatial size of a conv layer, from a one-sample dense forward pass."""
    if layer.kind != "conv":
        return None
    from netshrink.compression.evaluation.executor import Executor

    x = torch.zeros((1, *net.input_shape), dtype=torch.float32)
    with torch.no_grad():
        z = Executor(net).run(x, capture=[layer.input])[layer.input]
    return int(z.shape[-2]), int(z.shape[-1])
