"""``compression.pipeline.compress`` on degenerate inputs, found by probing the CLI with them: a few
calibration samples, inputs that carry no signal, logits without labels, a small CNN's search. Each
used to fail inside a stage (an internal error) or to misjudge the target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest

from netshrink.compression.graph.calibration import Calibration
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec

Validate = Callable[[dict[str, Any]], None]


@pytest.mark.parametrize("samples", [2, 5])
@pytest.mark.parametrize(
    "stage",
    [{"prune": {"keep": 0.5}}, {"target": {"metric": "top1_agreement", "min": 0.9}}],
    ids=["prune", "target"],
)
def test_a_calibration_of_a_few_samples_ships_the_plain_draw(
    mlp_net: Network, validate_report: Validate, samples: int, stage: dict[str, Any]
) -> None:
    """Fewer fit samples than the held-back rule needs (MIN_SAMPLES = 8): every layer ships its plain
    draw and says why. Before, 2 samples failed with an internal error: the dense outputs of an empty
    set of held-back rows were computed before that rule was consulted."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((samples, 16)).astype(np.float32)  # (samples, 16)
    cal = Calibration(X, rng.integers(0, 8, samples), sha256="test")
    report = compress(mlp_net, CompressSpec.from_dict({**stage, "seed": 0}), calibration=cal).report
    validate_report(report)
    checks = [layer["refit_check"] for layer in report["layers"] if layer.get("refit_check")]
    assert checks and all(c["kept"] is False and "fewer than 8 fit samples" in c["reason"] for c in checks)


def test_inputs_that_carry_no_signal_meet_a_target_by_dropping_units(
    mlp_net: Network, validate_report: Validate
) -> None:
    """All-zero calibration inputs: every output is the bias path's, so the budget search may drop
    every input unit of a layer and still quantize it. Before, rounding the refit's empty weight
    matrix raised (an internal error)."""
    X = np.zeros((64, 16), np.float32)  # (64, 16)
    cal = Calibration(X, None, sha256="test")
    spec = {"target": {"metric": "top1_agreement", "min": 0.9}, "seed": 0}
    report = compress(mlp_net, CompressSpec.from_dict(spec), calibration=cal).report
    validate_report(report)
    assert report["summary"]["budget_met"] is True


def test_a_top1_target_on_a_logits_model_without_labels_is_judged_by_top1(mlp_net: Network) -> None:
    """A PyTorch export ends in logits (no Softmax: not ``is_classifier``) and Gaussian inputs have no
    labels. The search judged its candidates by top-1 agreement, but the final measurement computed
    none, so ``netshrink compress --target-top1 0.9`` exited 3 (budget not met) with the budget's
    ``measured_holdout`` in relative L2. Now top-1 is measured whenever the target asks for it."""
    assert not mlp_net.is_classifier  # the precondition: nothing else turns top-1 on
    spec = {"target": {"metric": "top1_agreement", "min": 0.9}, "seed": 0}
    report = compress(mlp_net, CompressSpec.from_dict(spec)).report
    agree = report["summary"]["classification"]["top1_agreement"]
    assert agree >= 0.9 and report["summary"]["budget_met"] is True
    assert report["budget"]["measured_holdout"] == agree


@pytest.mark.parametrize(
    "target", [{"metric": "relative_l2", "max": 0.05}, {"metric": "top1_agreement", "min": 0.9}]
)
def test_a_search_on_a_small_cnn_never_empties_a_layer(
    cnn_net: Network, validate_report: Validate, target: dict[str, Any]
) -> None:
    """All-zero inputs make every channel look free to drop. The per-layer search offered κ = 0.1 of
    a 4-channel conv, whose draw could drop all four: the export then failed in onnxruntime ("invalid
    channel count", an internal error). Its menu now stops at the keeps that leave more than one
    channel on average (κ > 1/4 there)."""
    X = np.zeros((64, *cnn_net.input_shape), np.float32)  # (64, C, H, W)
    cal = Calibration(X, None, sha256="test")
    result = compress(cnn_net, CompressSpec.from_dict({"target": target, "seed": 1}), calibration=cal)
    validate_report(result.report)
    model = onnx.load_from_string(result.artifacts["model.onnx"])
    assert all(all(d > 0 for d in t.dims) for t in model.graph.initializer)


@pytest.mark.parametrize(
    ("samples", "holdout", "warned"), [(200, 0.0, True), (30, 0.2, True), (200, 0.2, False)]
)
def test_figures_without_a_held_out_split_say_so(
    mlp_net: Network, validate_report: Validate, samples: int, holdout: float, warned: bool
) -> None:
    """2026-12-05, found by probing: with ``holdout_fraction`` 0 the CLI printed the error as
    "held-out", report.html blamed too few samples, and no warning said that ``budget_met`` was
    judged on the samples the search had fitted."""
    rng = np.random.default_rng(0)
    cal = Calibration(rng.standard_normal((samples, 16)).astype(np.float32), None, sha256="test")
    spec = {"target": {"max": 0.5}, "evaluation": {"holdout_fraction": holdout}, "seed": 0}
    report = compress(mlp_net, CompressSpec.from_dict(spec), calibration=cal).report
    validate_report(report)
    assert (report["summary"]["evaluation"]["split"] == "none") is warned
    assert any("no held-out split" in w for w in report["summary"]["warnings"]) is warned


def test_the_prediction_of_a_compensated_draw_says_why_it_is_absent(mlp_net: Network) -> None:
    """The default spec refits every layer (compensate: held_back), which has no prediction; the
    report said "deterministic methods (magnitude, obd, rtn) have no variance", naming methods the
    spec never used (2026-12-05; bench.tightness crashed on the null prediction)."""
    rng = np.random.default_rng(0)
    cal = Calibration(rng.standard_normal((200, 16)).astype(np.float32), None, sha256="test")
    report = compress(
        mlp_net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0}), calibration=cal
    ).report
    assert report["summary"]["prediction"] is None and report["summary"]["compensated_layers"]
    (entry,) = [e for e in report["not_covered"] if e["tier"] == "prediction"]
    assert "compensated layers" in entry["reason"] and "magnitude" not in entry["reason"]
