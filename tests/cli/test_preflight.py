"""The files a command line names are read once (cli/preflight.py): a JSON argument is parsed at once,
a binary one (model, calibration, train, validation) that is a pipe is copied to a temporary file.

A pipe can be read only once: ``--spec <(...)`` or ``--spec /dev/stdin`` is empty the second time.
The pre-check used to read each file and the command to read it again, so a piped spec failed with
"Expecting value: line 1 column 1" where the same JSON in a regular file worked. Each command that
takes one of these flags is run here on a real pipe (``/dev/fd/N``), through the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from netshrink.cli.main import main
from tests import factories
from tests.threaded_server import embedded_service

torch.set_num_threads(1)

Pipe = Callable[[str], str]
BytesPipe = Callable[[Path], str]


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    """``pipe(text)``: the path of a pipe holding ``text`` (its writer closed), as bash's ``<(...)`` gives."""
    ends: list[int] = []

    def make(text: str) -> str:
        r, w = os.pipe()
        os.write(w, text.encode())
        os.close(w)
        ends.append(r)
        return f"/dev/fd/{r}"

    yield make
    for fd in ends:
        os.close(fd)


@pytest.fixture
def bytes_pipe() -> Iterator[BytesPipe]:
    """``bytes_pipe(path)``: a pipe that a thread fills with the file's bytes (any size), as
    ``<(cat path)`` gives."""
    ends: list[int] = []
    writers: list[threading.Thread] = []

    def make(path: Path) -> str:
        r, w = os.pipe()

        def feed() -> None:
            with os.fdopen(w, "wb") as fh:
                fh.write(path.read_bytes())

        writers.append(threading.Thread(target=feed, daemon=True))
        writers[-1].start()
        ends.append(r)
        return f"/dev/fd/{r}"

    yield make
    for t in writers:
        t.join(10)
    for fd in ends:
        os.close(fd)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("piped")
    X, y = factories.digits_inputs(120)
    np.savez(d / "train.npz", inputs=X, labels=y)
    return {
        "mlp": factories.write_bytes(factories.mlp_onnx(), d / "mlp.onnx"),
        "digits": factories.write_bytes(factories.mlp_onnx((64, 24, 10)), d / "digits.onnx"),
        "train": d / "train.npz",
        "cnn": factories.write_pt(factories.tiny_cnn(), d / "cnn.pt"),  # needs its architecture
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app on a real port; no worker: a submission is validated and stored, then stays queued."""
    with embedded_service(tmp_path_factory.mktemp("piped-service"), embedded_worker=False) as url:
        yield url


def _report(out: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report


def test_compress_reads_a_piped_spec_once(inputs: dict[str, Path], pipe: Pipe, tmp_path: Path) -> None:
    spec = pipe(json.dumps({"quantize": {"bits": 4}, "seed": 5}))
    argv = ["compress", str(inputs["mlp"]), "--spec", spec, "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--no-html"]) == 0
    repro = _report(tmp_path)["reproducibility"]
    assert isinstance(repro, dict) and repro["seed"] == 5 and repro["spec"]["quantize"]["bits"] == 4


@pytest.mark.parametrize("command", [["compress", "--bits", "8"], ["analyze"]])
def test_a_piped_architecture_is_read_once(
    inputs: dict[str, Path], pipe: Pipe, tmp_path: Path, command: list[str]
) -> None:
    arch = pipe(json.dumps(factories.cnn_architecture()))
    name, *flags = command
    argv = [name, str(inputs["cnn"]), "--architecture", arch, *flags, "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--no-html"]) == 0
    assert _report(tmp_path)["kind"] == name


def test_finetune_reads_a_piped_spec_once(inputs: dict[str, Path], pipe: Pipe, tmp_path: Path) -> None:
    spec = pipe(json.dumps({"epochs": 1, "batch_size": 32, "optimizer": "adam", "eta": 0.001}))
    argv = ["finetune", str(inputs["digits"]), "--train", str(inputs["train"]), "--spec", spec, "--seed", "1"]
    assert main([*argv, "--threads", "1", "--out", str(tmp_path), "--quiet", "--no-html"]) == 0
    repro = _report(tmp_path)["reproducibility"]
    assert isinstance(repro, dict) and repro["spec"]["optimizer"] == "adam" and repro["spec"]["epochs"] == 1


def test_submit_reads_a_piped_spec_and_architecture_once(
    inputs: dict[str, Path], pipe: Pipe, service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = pipe(json.dumps({"quantize": {"bits": 4}, "seed": 9}))
    arch = pipe(json.dumps(factories.cnn_architecture()))
    argv = ["submit", str(inputs["cnn"]), "--spec", spec, "--architecture", arch, "--server", service]
    assert main(argv) == 0, capsys.readouterr().err
    job_id = capsys.readouterr().out.strip()
    job = httpx.get(f"{service}/v1/jobs/{job_id}").json()
    assert job["spec"]["quantize"]["bits"] == 4 and job["spec"]["seed"] == 9  # the server has both


def test_submit_spec_from_stdin_in_a_real_process(inputs: dict[str, Path], service: str) -> None:
    exe = Path(sys.executable).with_name("netshrink")
    proc = subprocess.run(
        [str(exe), "submit", str(inputs["mlp"]), "--spec", "/dev/stdin", "--server", service],
        input=json.dumps({"quantize": {"bits": 3}, "seed": 4}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    job = httpx.get(f"{service}/v1/jobs/{proc.stdout.strip()}").json()
    assert job["spec"]["quantize"]["bits"] == 3 and job["spec"]["seed"] == 4


def test_a_malformed_piped_spec_is_still_one_line_exit_2(
    inputs: dict[str, Path], pipe: Pipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = pipe('{"quantize": ')
    assert main(["compress", str(inputs["mlp"]), "--spec", spec, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--spec" in err and "not valid JSON" in err and len(err.splitlines()) == 1


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compress_reads_a_piped_model_and_calibration_whole(
    inputs: dict[str, Path], bytes_pipe: BytesPipe, tmp_path: Path
) -> None:
    """Before 2026-12-05 the pre-check's 16-byte sniff consumed the pipe's head, and the loader got the
    rest: "the model file could not be read" for a model that loads from a regular file."""
    cal = tmp_path / "cal.npz"
    np.savez(cal, inputs=np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    out = tmp_path / "out"
    argv = ["compress", bytes_pipe(inputs["mlp"]), "--calibration", bytes_pipe(cal), "--bits", "4"]
    assert main([*argv, "--out", str(out), "--quiet", "--no-html"]) == 0
    report = _report(out)
    model = report["model"]
    assert isinstance(model, dict) and model["sha256"] == _sha256(inputs["mlp"])
    repro = report["reproducibility"]
    assert isinstance(repro, dict) and repro["calibration_sha256"] == _sha256(cal)


def test_finetune_reads_a_piped_model_and_train_set(
    inputs: dict[str, Path], bytes_pipe: BytesPipe, tmp_path: Path
) -> None:
    argv = ["finetune", bytes_pipe(inputs["digits"]), "--train", bytes_pipe(inputs["train"]), "--seed", "1"]
    spec = ["--spec", json.dumps({"epochs": 1, "batch_size": 32})]
    assert main([*argv, *spec, "--threads", "1", "--out", str(tmp_path), "--quiet", "--no-html"]) == 0
    repro = _report(tmp_path)["reproducibility"]
    assert isinstance(repro, dict) and repro["input_sha256"] == _sha256(inputs["digits"])


def test_submit_uploads_a_piped_model_whole(
    inputs: dict[str, Path], bytes_pipe: BytesPipe, service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``submit`` used to say "no such file" for a pipe (not a regular file)."""
    assert main(["submit", bytes_pipe(inputs["mlp"]), "--bits", "4", "--server", service]) == 0
    job_id = capsys.readouterr().out.strip()
    job = httpx.get(f"{service}/v1/jobs/{job_id}").json()
    assert job["input"]["sha256"] == _sha256(inputs["mlp"])
    assert job["input"]["size_bytes"] == inputs["mlp"].stat().st_size


def test_a_piped_model_in_a_real_process_leaves_no_spool(inputs: dict[str, Path], tmp_path: Path) -> None:
    """``netshrink compress /dev/stdin`` from a shell pipe; the temporary copy is gone at exit."""
    exe = Path(sys.executable).with_name("netshrink")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(exe), "compress", "/dev/stdin", "--bits", "8", "--out", str(out), "--quiet", "--no-html"],
        input=inputs["mlp"].read_bytes(),
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    model = _report(out)["model"]
    assert isinstance(model, dict) and model["sha256"] == _sha256(inputs["mlp"])
    assert not list(tmp_path.glob("netshrink-spool-*"))
