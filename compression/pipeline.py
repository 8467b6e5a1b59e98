"""compress() and analyze(): the core's two jobs, from a loaded Network to a report and artifacts.

Flow (docs/method.md §1-§5): evaluation inputs and the fit/held-out split -> (budget search) ->
best-of-R greedy draws on the fit split -> measurement and bound tiers on the held-out split ->
real-integer / physically smaller artifacts -> the artifact re-measured in onnxruntime -> report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from netshrink.compression.api import CancelFn, CompressionResult, ProgressEvent, ProgressFn
from netshrink.compression.bounds.prediction import (
    Sensitivity,
    predict_groups,
    predict_independent,
    removable_units,
    sensitivities,
)
from netshrink.compression.diagnostics.background import start_tails
from netshrink.compression.diagnostics.diagnostics import diagnose_network
from netshrink.compression.errors import CalibrationError, CancelledError, InvalidSpecError
from netshrink.compression.evaluation.activation_range import check_activation_range
from netshrink.compression.evaluation.evaluation import CalibrationLike, evaluation_data
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.input_dtype import float16_note
from netshrink.compression.export.tied_weights import tie_shared_weights
from netshrink.compression.graph.network import Network
from netshrink.compression.report.provenance import resolve_device, sha256_bytes
from netshrink.compression.report.report_build import build_analyze_report, build_compress_report
from netshrink.compression.search.auto_compensate import dropped_refits, off_reason, resolve_compensate
from netshrink.compression.search.greedy import NetworkDraw, baseline_specs, draw_network
from netshrink.compression.search.group_draw import space_keep_note
from netshrink.compression.search.off_logits import exclude_off_logits
from netshrink.compression.search.select import best_of
from netshrink.compression.search.spec_check import check_spec
from netshrink.compression.search.units import drop_unchanged, noop_keep_note
from netshrink.compression.spec import HELD_BACK, CompressSpec


class _Progress:
    """Maps (stage, layer i of n) to an overall fraction and forwards it; checks cancellation."""

    WEIGHTS = {
        "preparing": (0.0, 0.05),
        "searching": (0.05, 0.45),
        "compressing": (0.45, 0.75),
        "measuring": (0.75, 0.85),
        "exporting": (0.85, 0.95),
        "baselines": (0.95, 0.99),
    }

    def __init__(self, fn: ProgressFn | None, cancel: CancelFn | None) -> None:
        self.fn, self.cancel = fn, cancel

    def __call__(self, stage: str, i: int = 0, n: int = 0) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("the job was cancelled")
        if self.fn is None:
            return
        lo, hi = self.WEIGHTS.get(stage, (1.0, 1.0))
        frac = lo + (hi - lo) * (i / n if n else 0.0)
        self.fn(ProgressEvent(stage=stage, layer=i, layers_total=n, fraction=round(frac, 4)))

    def done(self) -> None:
        if self.fn is not None:
            self.fn(ProgressEvent(stage="done", fraction=1.0))


class StageTimer:
    """Wall seconds per pipeline stage, for the report's ``timings`` and ``netshrink compress --verbose``.

    ``overlapped``: work done on a worker thread during a stage (its own wall seconds, and the stage),
    not counted in ``stages``: e.g. the diagnostics' SVD-free half during the compress stage.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.overlapped: dict[str, dict[str, Any]] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": {k: round(v, 4) for k, v in self.seconds.items()},
            **({"overlapped": self.overlapped} if self.overlapped else {}),
            "total": round(time.perf_counter() - self.start, 4),
            "torch_threads": torch.get_num_threads(),
            "unit": "seconds (wall clock)",
        }


def predicts(nd: NetworkDraw) -> bool:
    """Whether ``_layer_predictions`` can give a prediction for ``nd``: some layer is drawn and every
    drawn layer has a variance to linearize (P1's randomized rules; not compensated or deterministic)."""
    return bool(nd.layers) and all(d.tier_E_A is not None for d in nd.layers.values())


def _layer_predictions(
    nd: NetworkDraw, sens: dict[str, Sensitivity] | None, coupled: dict[str, float] | None = None
) -> dict[str, float]:
    """Per-layer linearized predictions. ``coupled`` (DAG channel groups, ``bounds.prediction_dag``)
    replaces the per-layer group terms: each group's term, cross-reader terms included, is reported
    at its first reader."""
    if sens is None:
        return {}
    out = {}
    for name, d in nd.layers.items():
        if d.tier_E_A is None:  # a deterministic baseline: no variance to linearize
            return {}
        p = predict_independent(d.var, sens[name])
        if d.group_tau2 is not None and coupled is None:
            p += predict_groups(d.group_tau2, sens[name])
        out[name] = p
    for name, p in (coupled or {}).items():
        out[name] = out.get(name, 0.0) + p
    return out


def dag_group_prediction(
    net: Network, ex: Executor, nd: NetworkDraw, X: torch.Tensor
) -> dict[str, float] | None:
    """The coupled group terms of the prediction for a DAG's channel-group draw, else None."""
    cg = net.channel_groups
    if not net.dag or cg is None or not any(d.group_draw for d in nd.layers.values()):
        return None
    from netshrink.compression.bounds.prediction_dag import group_moments, group_predictions

    M = group_moments(ex.run, net, X, cg.units, cg.n_groups)
    return group_predictions(net, nd.layers, M)


def compress(
    net: Network,
    spec: CompressSpec,
    *,
    calibration: CalibrationLike | None = None,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    input_sha256: str | None = None,
) -> CompressionResult:
    """Compress ``net`` as ``spec`` says; return the report and the artifacts (docs/method.md §1-§5)."""
    spec = spec.with_seed()
    if spec.kind == "analyze":
        if calibration is not None:  # (until 2026-12-05 `compress --kind analyze` ignored it silently)
            raise CalibrationError(
                "kind analyze takes no calibration: it reads the weights and measures nothing",
                field="calibration",
            )
        return analyze(
            net,
            on_progress=on_progress,
            input_sha256=input_sha256,
            seed=spec.seed,
            full_diagnostics=spec.full_diagnostics,
        )
    assert spec.seed is not None
    check_spec(net, spec)
    spec, tied_notes = tie_shared_weights(net, spec)  # a tied weight is drawn by one reader only
    spec, off_notes = exclude_off_logits(net, spec)  # a layer only another output reads: unmeasured
    compensate_note = off_reason(net, spec)  # null, but the refit would cost too much: say so
    spec = resolve_compensate(net, spec)  # null: on wherever it applies (docs/compensation.md "Default")
    assert spec.seed is not None
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise InvalidSpecError("device 'cuda' was asked for but torch sees no CUDA device", field="device")
    progress = _Progress(on_progress, should_cancel)
    progress("preparing")
    timer = StageTimer()
    with timer("prepare"):
        device = resolve_device(spec.device)
        data = evaluation_data(net, spec.evaluation, calibration, spec.seed)
        ex = Executor(net, device)
        X_fit = torch.as_tensor(data.fit, device=device)
        X_ho = torch.as_tensor(data.holdout, device=device)
        check_activation_range(ex, net, X_fit, inputs=f"{data.inputs} fit")
        if data.split != "none":  # otherwise the holdout is the fit split
            check_activation_range(ex, net, X_ho, inputs=f"{data.inputs} held-out")
    from netshrink.compression.export.artifacts import build_artifacts, check_in_onnxruntime, upload_facts

    with timer("export_and_onnxruntime"):  # the upload's bytes and latency, before any draw is held
        before = upload_facts(net, data.holdout)
    full = net.support == "full"
    compresses = spec.prune is not None or spec.quantize is not None or spec.target is not None
    need_fit_sens = (
        full
        and compresses
        and ((spec.prune is not None and spec.prune.score == "output") or spec.target is not None)
    )
    # the group terms cost one more product per output: only when a structured draw may need them
    by_groups = (spec.prune is not None and spec.prune.granularity != "weight") or spec.target is not None
    with timer("sensitivities_fit"):
        sens_fit = (
            sensitivities(ex.run, net, X_fit, net.layers, groups=by_groups, group_layers=removable_units(net))
            if need_fit_sens
            else None
        )
    budget = None
    chosen: NetworkDraw | None = None
    if spec.target is not None:
        from netshrink.compression.search.budget import search
        from netshrink.compression.search.mixed import mixed_search

        # Per-layer mixed search (bits and structured keep per layer) needs the prediction; an
        # unstructured-pruning target, or a generic graph, keeps the uniform (keep, bits) grid.
        uniform = sens_fit is None or (spec.prune is not None and spec.prune.granularity == "weight")
        on_candidate = lambda i, n: progress("searching", i, n)  # noqa: E731
        with timer("search"):
            run_search = search if uniform else mixed_search  # mixed: sens_fit is not None
            picked, budget, chosen = run_search(
                net,
                ex,
                spec,
                X_fit,
                data.fit_labels,
                sens_fit,  # type: ignore[arg-type]
                should_cancel=should_cancel,
                on_candidate=on_candidate,
            )
        spec_run = dataclasses.replace(picked, draws=spec.draws, target=spec.target)
        if uniform and spec.draws != 1:  # the per-layer search ships its verified draw; the grid redraws
            chosen = None
    else:
        spec_run = spec
    # a large model's diagnostics, SVD-free half, on a worker thread to the export (diagnostics/background.py)
    early = start_tails(net, seed=spec.seed, full=spec.full_diagnostics, stages=timer.seconds)
    if chosen is None:
        with timer("compress"):
            chosen = best_of(
                net,
                ex,
                spec_run,
                X_fit,
                sensitivities=sens_fit,
                on_layer=lambda i, n: progress("compressing", i, n),
                should_cancel=should_cancel,
                keep_plain=spec_run.compensate == HELD_BACK,  # the twin's layers (search/twin.py)
            )
    chosen = drop_unchanged(net, chosen)  # a keep that drops no unit, unquantized: not compressed
    progress("measuring")
    from netshrink.compression.search.measure import measure

    with timer("measure_and_bounds"):
        m = measure(net, ex, chosen, X_ho, data.holdout_labels, top1=spec.top1_target)
    compensation = None
    if spec_run.compensate and any(d.compensated for d in chosen.layers.values()):
        from netshrink.compression.search.twin import compensation_section

        with timer("compensation_section"):  # before the export: the kept plain draws go first
            compensation = compensation_section(
                net, ex, spec_run, X_fit, X_ho, data.holdout_labels, chosen, m
            )
    chosen.plain = {}
    drawn_groups = any(d.group_tau2 is not None for d in chosen.layers.values())
    with timer("prediction"):
        # a deterministic layer (compensated, or a baseline method) empties the prediction: the
        # held-out sensitivities (a backward pass per output) are then not computed at all
        predictable = full and predicts(chosen)
        coupled = dag_group_prediction(net, ex, chosen, X_ho) if predictable else None
        sens_ho = (
            sensitivities(
                ex.run, net, X_ho, net.layers, groups=drawn_groups and coupled is None, weight_sq=False
            )
            if predictable
            else None
        )
        preds = _layer_predictions(chosen, sens_ho, coupled)
    del sens_fit, sens_ho
    tails = None
    if early is not None:  # before anything is timed in onnxruntime
        during = early.during(timer.seconds)
        with timer("diagnostics"):  # the wait, if the worker is still running
            tails = early.wait()
        timer.overlapped["diagnostics"] = {"seconds": round(early.seconds, 4), "during": during}
    progress("exporting")
    with timer("export_and_onnxruntime"):
        arts = build_artifacts(net, chosen, spec_run, data.holdout, m, before=before, onnxruntime_check=False)
        chosen = chosen.without_arrays()  # later stages read no per-entry array: the sessions get the room
        check_in_onnxruntime(arts, net, data.holdout, m, before)
    baselines: list[dict[str, Any]] = []
    if spec.compare_baselines and chosen.layers:
        with timer("baselines"):
            for i, bspec in enumerate(baseline_specs(spec_run)):
                progress("baselines", i, len(baseline_specs(spec_run)))
                nd = drop_unchanged(net, draw_network(net, ex, bspec, X_fit, draw=0))
                bm = measure(net, ex, nd, X_ho, data.holdout_labels, top1=spec.top1_target)
                barts = build_artifacts(
                    net, nd, bspec, data.holdout, bm, onnxruntime_check=False, before=before
                )
                baselines.append(_baseline_entry(bspec, bm, barts.summary_after))
    with timer("diagnostics"):
        diagnostics = diagnose_network(net, seed=spec.seed, full=spec.full_diagnostics, tails=tails)
    with timer("report"):
        report = build_compress_report(
            net=net,
            spec=spec_run,
            seed=spec.seed,
            device=device,
            data=data,
            draw=chosen,
            m=m,
            predictions=preds if preds else None,
            prediction_reason=_prediction_reason(net, chosen),
            artifacts=arts,
            baselines=baselines,
            budget=budget,
            input_sha256=input_sha256 or sha256_bytes(net.upload_bytes()),
            diagnostics=diagnostics,
        )
    if compensation is not None:
        report["summary"]["compensation"] = compensation
    space_note = space_keep_note(net, spec) if spec.target is None else None  # a user's per-layer keep
    noop_note = noop_keep_note(net, spec) if spec.target is None else None  # a keep dropping no unit
    for note in (compensate_note, dropped_refits(chosen), space_note, noop_note):  # compensate's first
        if note is not None:
            report["summary"]["warnings"].append(note)
    report["summary"]["warnings"] += [*tied_notes, *off_notes, *filter(None, [float16_note(net)])]
    if data.split == "none" and data.inputs == "calibration":  # the headline figures are fit figures
        report["summary"]["warnings"].append(NO_HOLDOUT)
    report["timings"] = timer.to_dict()
    progress.done()
    return CompressionResult(report=report, artifacts=arts.files)


NO_HOLDOUT = (
    "no held-out split (fewer than 50 calibration samples, or evaluation.holdout_fraction 0): the "
    "reported error, bounds and budget_met are measured on the same samples the compression was "
    "fitted on, so they are optimistic"
)


def _prediction_reason(net: Network, nd: NetworkDraw) -> str:
    if net.support != "full":
        return "generic graph: the linearization needs autograd through the torch executor"
    if not nd.layers:
        return "nothing was compressed"
    compensated = [name for name, d in nd.layers.items() if d.compensated]
    if compensated:  # said "deterministic methods ..." for the default spec until 2026-12-05
        return (
            f"compensated layers ({', '.join(compensated)}: refit on the fit split) are deterministic "
            "given their draw, so the linearization of the random draw does not describe them"
        )
    return "deterministic methods (magnitude, obd, rtn) have no variance to linearize"


def _baseline_entry(bspec: CompressSpec, bm: Any, bytes_after: dict[str, Any]) -> dict[str, Any]:
    p, q = bspec.prune, bspec.quantize
    method = "+".join(x for x in (p.method if p else None, q.method if q else None) if x)
    w = bm.end_to_end.get("W")
    energy = bm.error.reference_energy
    return {
        "method": method,
        "keep": None if p is None else p.keep,
        "bits": None if q is None else q.bits,
        "error": {k: bm.error.to_dict()[k] for k in ("relative_l2", "mse", "p95", "max")},
        "classification": bm.classification,
        "bounds": {
            "W": {
                "value": w,
                "relative": None if w is None or energy <= 0 else float(np.sqrt(w / energy)),
                "holds": None if w is None else bool(bm.error.mse <= w * (1 + 1e-9)),
            }
        },
        "bytes_after": bytes_after,
    }


def analyze(
    net: Network,
    *,
    on_progress: ProgressFn | None = None,
    input_sha256: str | None = None,
    seed: int | None = 0,
    full_diagnostics: bool = False,
) -> CompressionResult:
    """Heavy-tail diagnostics and per-layer advice without compressing (docs/method.md §3-§4)."""
    progress = _Progress(on_progress, None)
    progress("preparing")
    timer = StageTimer()
    with timer("analyze"):
        report = build_analyze_report(
            net,
            seed=seed or 0,
            input_sha256=input_sha256 or sha256_bytes(net.upload_bytes()),
            on_layer=lambda i, n: progress("measuring", i, n),
            full_diagnostics=full_diagnostics,
        )
    report["timings"] = timer.to_dict()
    progress.done()
    return CompressionResult(report=report, artifacts={})
