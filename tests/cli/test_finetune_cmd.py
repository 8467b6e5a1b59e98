"""``netshrink finetune``: the local fine-tuning command, exit codes per docs/api.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from netshrink.cli.main import main
from tests import factories

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ft-cli")
    model = factories.write_bytes(factories.mlp_onnx((64, 24, 24, 10)), d / "mlp.onnx")
    X, y = factories.digits_inputs(200)
    np.savez(d / "train.npz", inputs=X, labels=y)
    return model, d / "train.npz"


def test_finetune_writes_model_report_and_html(files: tuple[Path, Path], tmp_path: Path) -> None:
    model, train = files
    out = tmp_path / "out"
    spec = json.dumps({"batch_size": 32, "optimizer": "adam", "eta": 0.001})
    code = main(
        ["finetune", str(model), "--train", str(train), "--epochs", "2", "--spec", spec, "--seed", "1"]
        + ["--out", str(out), "--quiet"]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "finetune" and report["reproducibility"]["spec"]["optimizer"] == "adam"
    assert report["reproducibility"]["seed"] == 1
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {sess.get_inputs()[0].name: np.zeros((2, 64), np.float32)})[0].shape == (2, 10)
    html = (out / "report.html").read_text()
    assert "side by side" in html and html.count('id="chart-finetune"') == 1
    for name in ("original", "plain", "noise"):
        assert f"<strong>{name}</strong>" in html


def test_bad_labels_exit_2_naming_the_field(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = files
    X, y = factories.digits_inputs(40)
    np.savez(tmp_path / "bad.npz", inputs=X, labels=y + 20)
    code = main(["finetune", str(model), "--train", str(tmp_path / "bad.npz"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "invalid-calibration) train.labels:" in err and len(err.splitlines()) == 1


def test_bad_spec_exit_2(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train = files
    code = main(["finetune", str(model), "--train", str(train), "--alpha", "3", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "invalid-spec) alpha:" in err and len(err.splitlines()) == 1


def test_threads_and_verbose_stage_seconds(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train = files
    before = torch.get_num_threads()
    try:
        code = main(
            ["finetune", str(model), "--train", str(train), "--epochs", "1", "--sigma", "0.001", "0.003"]
            + ["--seed", "2", "--out", str(tmp_path), "--quiet", "--verbose", "--threads", "1"]
        )
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert "1 torch threads" in err
    for stage in ("train arm 1", "train arm 2", "train arm 3", "measuring", "html", "total"):
        assert f"  {stage} " in err, err


def test_bad_thread_count_exit_2(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train = files
    code = main(["finetune", str(model), "--train", str(train), "--threads", "0", "--out", str(tmp_path)])
    assert code == 2 and "threads must be at least 1" in capsys.readouterr().err


def test_inputs_that_do_not_fit_exit_2_naming_the_field(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = files
    X, y = factories.digits_inputs(40)
    np.savez(tmp_path / "narrow.npz", inputs=X[:, :10], labels=y)
    code = main(["finetune", str(model), "--train", str(tmp_path / "narrow.npz"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "train.inputs:" in err and len(err.splitlines()) == 1


def test_non_finite_loss_exit_2_with_the_epoch(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train = files
    # seeded: most seeds of this run diverge, but not all (seed 594 keeps a finite loss: the next test)
    args = ["--epochs", "3", "--alpha", "0.3", "--sigma", "100", "--eta", "10", "--quiet", "--seed", "0"]
    code = main(["finetune", str(model), "--train", str(train), *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "(training-diverged) sigma:" in err and "at epoch" in err, err
    assert not (tmp_path / "o").exists()  # no model is written from a diverged run


def test_a_noise_arm_whose_weights_outgrow_float32_squares_is_measured(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same run, seed 594: the loss stays finite, so it has not diverged, but noise left weights
    near 1e27 (dead ReLU units keep the logits finite). The diagnostics squared them in float32 (inf):
    an "overflow encountered in square" crash (exit 4) under warnings-as-errors, a wrong q(ε) without."""
    model, train = files
    args = ["--epochs", "3", "--alpha", "0.3", "--sigma", "100", "--eta", "10", "--quiet", "--seed", "594"]
    out = tmp_path / "o"
    assert main(["finetune", str(model), "--train", str(train), *args, "--out", str(out)]) == 0
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(out / "model.onnx")).graph.initializer]
    assert max(float(np.abs(w).max()) for w in weights) > 1.9e19  # the case this test is about
    text = (out / "report.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    layers = json.loads(text)["finetune"]["arms"]["noise"]["layers"]
    # inf squares made the total inf and q(ε) exactly 1 in every layer holding a huge weight
    assert all(0.0 < layer["q"]["magnitude"]["eps_0.1"] < 1.0 for layer in layers), layers
