"""``netshrink compress`` / ``netshrink analyze``: the local CI step, exit codes per docs/api.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from netshrink.cli.main import main
from tests import factories


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.write_bytes(factories.mlp_onnx(), tmp_path_factory.mktemp("cli") / "mlp.onnx")


def test_compress_writes_artifacts_and_report(mlp_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "compress",
            str(mlp_path),
            "--prune-keep",
            "0.5",
            "--granularity",
            "neuron",
            "--bits",
            "4",
            "--seed",
            "3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"model.onnx", "report.json", "report.html"}
    report = json.loads((out / "report.json").read_text())
    assert report["reproducibility"]["seed"] == 3
    assert report["reproducibility"]["spec"]["prune"]["granularity"] == "neuron"
    listed = {a["name"] for a in report["artifacts"]}
    assert listed == {"model.onnx", "report.html"}
    ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    html = (out / "report.html").read_text()
    assert "<svg" in html


def test_budget_not_met_exits_3(mlp_path: Path, tmp_path: Path) -> None:
    code = main(
        [
            "compress",
            str(mlp_path),
            "--bits",
            "2",
            "--target-error",
            "1e-9",
            "--out",
            str(tmp_path),
            "--quiet",
            "--no-html",
        ]
    )
    assert code == 3
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["budget_met"] is False


@pytest.mark.parametrize(
    "argv",
    [
        ["--bits", "4", "MISSING"],
        ["--bits", "12"],
        ["--granularity", "neuron"],  # a modifier without its stage
        ["--prune-keep", "0.5", "--exclude", "no_such_layer"],
    ],
    ids=["missing-file", "bits-out-of-range", "modifier-without-stage", "unknown-exclude"],
)
def test_bad_input_exits_2(mlp_path: Path, tmp_path: Path, argv: list[str]) -> None:
    model = str(tmp_path / "missing.onnx") if "MISSING" in argv else str(mlp_path)
    argv = [a for a in argv if a != "MISSING"]
    assert main(["compress", model, *argv, "--out", str(tmp_path), "--quiet"]) == 2


def test_garbage_model_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    assert main(["compress", str(bad), "--bits", "8", "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_analyze_writes_diagnostics(mlp_path: Path, tmp_path: Path) -> None:
    assert main(["analyze", str(mlp_path), "--out", str(tmp_path), "--quiet", "--no-html"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kind"] == "analyze"
    assert len(report["diagnostics"]) == 3 and all(d["q"]["magnitude"] for d in report["diagnostics"])
    assert all(
        entry["advice"]["min_bits"] is None or 2 <= entry["advice"]["min_bits"] <= 8
        for entry in report["layers"]
    )


def test_kind_analyze_refuses_a_calibration_file(
    mlp_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was read and then ignored (the report said no calibration); the API refuses the part too."""
    cal = factories.write_calibration(tmp_path / "cal.npz", np.ones((16, 8), np.float32))  # mlp_onnx: 8 in
    argv = ["compress", str(mlp_path), "--kind", "analyze", "--calibration", str(cal), "--out", str(tmp_path)]
    assert main([*argv, "--quiet", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "kind analyze takes no calibration" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report.json").exists()


def test_console_script_prints_summary(mlp_path: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("netshrink")
    proc = subprocess.run(
        [str(exe), "compress", str(mlp_path), "--bits", "8", "--out", str(tmp_path), "--no-html"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "relative output error" in proc.stdout


def test_console_script_times_its_startup_and_report_html(mlp_path: Path, tmp_path: Path) -> None:
    """Issue 10: the time outside the pipeline is a stage too (interpreter + imports, report.html)."""
    exe = Path(sys.executable).with_name("netshrink")
    cmd = [str(exe), "compress", str(mlp_path), "--bits", "8", "--out", str(tmp_path), "--verbose"]
    proc = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    timings = json.loads((tmp_path / "report.json").read_text())["timings"]
    stages = timings["stages"]
    assert stages["startup"] > 0.05  # the interpreter and torch's import take well over 50 ms
    assert stages["report_html"] > 0 and (tmp_path / "report.html").is_file()
    # the total runs from the process's start to report.json: every stage lies inside it
    assert sum(stages.values()) <= timings["total"] + 1e-3
    assert "startup" in proc.stderr and "report_html" in proc.stderr


def test_console_script_ends_without_teardown_but_keeps_exit_code_and_output(
    mlp_path: Path, tmp_path: Path
) -> None:
    """compress/analyze end with os._exit once the files are written: the exit code (3, budget not
    met), the last stderr line and the summary on stdout still come out."""
    exe = Path(sys.executable).with_name("netshrink")
    cmd = [str(exe), "compress", str(mlp_path), "--bits", "2", "--target-error", "1e-9", "--no-html"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("wrote model.onnx, report.json")
    assert "relative output error" in proc.stdout
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["budget_met"] is False


def test_process_age_counts_from_the_process_start() -> None:
    from netshrink.cli.local_run import process_age

    code = "import time; time.sleep(0.6)\nfrom netshrink.cli.local_run import process_age as a; print(a())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert 0.6 <= float(out.stdout) < 30.0
    age = process_age()
    assert age is not None and age > 0


def test_analyze_prints_what_it_found_per_layer(
    mlp_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not just "bytes before → after": per layer α̂, q(ε) against the Gaussian reference, the advice."""
    import re

    assert main(["analyze", str(mlp_path), "--out", str(tmp_path), "--no-html"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert "per layer: what analyze found" in out
    for layer, diag in zip(report["layers"], report["diagnostics"], strict=True):
        assert layer["name"] in out
        assert f"{diag['alpha']['multivariate']:.2f}" in out
        q, ref = diag["q"]["magnitude"]["eps_0.1"], diag["gaussian_reference"]["magnitude"]["eps_0.1"]
        assert f"{q:.3f} vs {ref:.3f}" in out
    assert re.search(r"min bits", out)


def test_verbose_prints_stage_timings_and_the_report_keeps_them(
    mlp_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: seconds per stage in report.json and on stderr; each σ says how it was certified."""
    import re

    import torch

    from netshrink.compression.diagnostics import background

    before = torch.get_num_threads()
    monkeypatch.setenv("NETSHRINK_TORCH_THREADS", "1")
    monkeypatch.setattr(background, "OVERLAP_MIN_ENTRIES", 0)  # the worker's line, for this small model too
    out = tmp_path / "out"
    try:
        code = main(["compress", str(mlp_path), "--bits", "4", "--seed", "1", "--out", str(out), "--verbose"])
        assert torch.get_num_threads() == 1  # the CLI used the cores it was given
    finally:
        torch.set_num_threads(before)
    assert code == 0
    err = capsys.readouterr().err
    assert "stage timings" in err and "measure_and_bounds" in err and "report_html" in err and "write" in err
    assert re.search(r"diagnostics +[0-9.]+ s  on a worker thread, beside compress, measure_and_bounds", err)
    report = json.loads((out / "report.json").read_text())
    stages = report["timings"]["stages"]
    assert {"load", "prepare", "compress", "measure_and_bounds", "diagnostics", "report_html"} <= set(stages)
    assert "startup" not in stages  # main([...]) inside this process: its start is pytest's, not the job's
    assert all(v >= 0 for v in stages.values()) and report["timings"]["torch_threads"] == 1
    for layer in report["layers"]:
        cert = layer["inputs"]["sigma_bound"]
        assert cert["holds"] in ("exact", "deterministic", "probabilistic")
        assert cert["value"] == pytest.approx(layer["inputs"]["sigma"]) and cert["value"] >= cert["estimate"]
    sigma = report["summary"]["sigma"]
    assert sigma["failure_probability"] >= 0 and "statement" in sigma


def test_bad_thread_count_is_a_one_line_error(
    mlp_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compress", str(mlp_path), "--bits", "4", "--threads", "0", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "at least 1" in capsys.readouterr().err
