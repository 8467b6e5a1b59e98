"""Refusals before training (a follow-up compress's validation size, inputs out of float32 range),
cancellation while measuring, and the follow-up compress's artifact names (all found by probing,
2026-12-05)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.api import ProgressEvent
from netshrink.compression.errors import CalibrationError, CancelledError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.finetune.job import finetune
from netshrink.compression.finetune.prunability import prune_curve
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.finetune.train import Model, TrainingDivergedError, Weights
from netshrink.compression.graph.loading import load_model
from tests import factories

FAST = {"epochs": 1, "seed": 0, "batch_size": 32}
FOLLOW = {"compress": {"quantize": {"bits": 4}}}


def _npz(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, inputs=X, labels=y)
    return path


def _stages(events: list[ProgressEvent]) -> set[str]:
    return {e.stage for e in events}


def test_one_sample_validation_with_a_follow_up_compress_is_refused_before_training(
    digits_mlp: Path, digits_train: Path, tmp_path: Path
) -> None:
    """It trained every epoch of both arms, then failed on "calibration" (a file nobody gave)."""
    X, y = factories.digits_inputs(1)  # (1, 64), (1,)
    val1 = _npz(tmp_path / "val1.npz", X, y)
    events: list[ProgressEvent] = []
    with pytest.raises(CalibrationError) as info:
        finetune(
            load_model(digits_mlp),
            FinetuneSpec.from_dict({**FAST, **FOLLOW}),
            digits_train,
            upload=digits_mlp,
            validation=val1,
            on_progress=events.append,
        )
    assert info.value.field == "validation", info.value
    assert "validation holds 1 sample(s)" in info.value.detail and "at least 2" in info.value.detail
    assert "training" not in _stages(events)


def test_a_carved_one_sample_split_names_train(digits_mlp: Path, tmp_path: Path) -> None:
    X, y = factories.digits_inputs(5)
    train5 = _npz(tmp_path / "train5.npz", X, y)
    events: list[ProgressEvent] = []
    with pytest.raises(CalibrationError) as info:
        finetune(
            load_model(digits_mlp),
            FinetuneSpec.from_dict({**FAST, **FOLLOW}),
            train5,
            upload=digits_mlp,
            on_progress=events.append,
        )
    assert info.value.field == "train", info.value
    assert "train has 5 samples: validation_fraction 0.2 carves 1" in info.value.detail
    assert "training" not in _stages(events)


@pytest.mark.parametrize(
    "follow", [{}, {"compress": {"prune": {"keep": 0.5}, "evaluation": {"inputs": "gaussian"}}}]
)
def test_one_sample_validation_is_fine_when_nothing_measures_on_it(
    digits_mlp: Path, digits_train: Path, tmp_path: Path, follow: dict[str, Any]
) -> None:
    """No follow-up compress, or one on synthetic inputs: one validation sample is enough."""
    X, y = factories.digits_inputs(1)
    val1 = _npz(tmp_path / "val1.npz", X, y)
    spec = FinetuneSpec.from_dict({**FAST, **follow})
    res = finetune(load_model(digits_mlp), spec, digits_train, upload=digits_mlp, validation=val1)
    assert res.report["data"]["validation_samples"] == 1
    assert (res.report["compress"] is None) is (not follow)


@pytest.mark.parametrize("which", ["train", "validation"])
def test_inputs_out_of_float32_range_are_refused_naming_them(
    digits_mlp: Path, tmp_path: Path, which: str
) -> None:
    """Inputs ×1e30 (finite float32) failed as training-diverged on eta, "lower sigma or eta"."""
    X, y = factories.digits_inputs(100)
    big = _npz(tmp_path / "big.npz", X * np.float32(1e30), y)
    fine = _npz(tmp_path / "fine.npz", X, y)
    train, validation = (big, None) if which == "train" else (fine, big)
    events: list[ProgressEvent] = []
    with pytest.raises(CalibrationError) as info:
        finetune(
            load_model(digits_mlp),
            FinetuneSpec.from_dict(FAST),
            train,
            upload=digits_mlp,
            validation=validation,
            on_progress=events.append,
        )
    assert info.value.field == f"{which}.inputs", info.value
    assert info.value.slug == "invalid-calibration"
    assert f"the {which} inputs" in info.value.detail and "rescale them" in info.value.detail
    assert "evaluation.scale" not in info.value.detail
    assert "training" not in _stages(events)


def test_a_too_large_eta_on_inputs_in_range_is_still_a_divergence(digits_mlp: Path, tmp_path: Path) -> None:
    """Inputs ×1e5 pass the range check; η = 10 then diverges the plain arm (seeded: seed 0 does),
    while η = 0.01 trains them."""
    X, y = factories.digits_inputs(300)
    loud = _npz(tmp_path / "loud.npz", X * np.float32(1e5), y)
    spec = {**FAST, "sigma": 0.0}
    with pytest.raises(TrainingDivergedError) as info:
        finetune(
            load_model(digits_mlp), FinetuneSpec.from_dict({**spec, "eta": 10.0}), loud, upload=digits_mlp
        )
    assert info.value.field == "eta" and "in the plain arm" in info.value.detail
    res = finetune(
        load_model(digits_mlp), FinetuneSpec.from_dict({**spec, "eta": 0.01}), loud, upload=digits_mlp
    )
    assert res.report["finetune"]["arms"]["plain"]["accuracy"] >= 0.0


def test_cancel_while_measuring_stops_the_job(digits_mlp: Path, digits_train: Path) -> None:
    """The measuring stage (α̂, q(ε), the prune curves) ignored should_cancel: the job ran to the end."""
    stages: list[str] = []

    def cancelled() -> bool:
        return "measuring" in stages

    with pytest.raises(CancelledError):
        finetune(
            load_model(digits_mlp),
            FinetuneSpec.from_dict(FAST),
            digits_train,
            upload=digits_mlp,
            on_progress=lambda e: stages.append(e.stage),
            should_cancel=cancelled,
        )
    assert stages[-1] == "measuring" and "exporting" not in stages


def test_prune_curve_asks_before_every_fraction(digits_mlp: Path) -> None:
    net = load_model(digits_mlp)
    ex = Executor(net)
    X, y = factories.digits_inputs(40)
    calls: list[int] = []

    def cancel_at_third() -> bool:
        calls.append(1)
        return len(calls) == 3

    with pytest.raises(CancelledError):
        prune_curve(
            net,
            lambda w: Model(net, ex, w),
            Weights.of(net),
            torch.as_tensor(X),
            torch.as_tensor(y),
            1.0,
            should_cancel=cancel_at_third,
        )
    assert len(calls) == 3


def test_follow_up_report_names_the_files_it_describes(digits_mlp: Path, digits_train: Path) -> None:
    """The nested report listed model.onnx with the sha256 of compressed_model.onnx."""
    res = finetune(
        load_model(digits_mlp), FinetuneSpec.from_dict({**FAST, **FOLLOW}), digits_train, upload=digits_mlp
    )
    nested = res.report["compress"]["artifacts"]
    assert [a["name"] for a in nested] == ["compressed_model.onnx"]
    for entry in [*res.report["artifacts"], *nested]:
        data = res.artifacts[entry["name"]]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size_bytes"] == len(data)
    assert res.report["compress"]["summary"]["bytes"]["measured_from"] == "compressed_model.onnx"
