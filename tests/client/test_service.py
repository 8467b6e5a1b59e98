"""The SDK and ``netshrink submit`` against the REAL service: ``service.main.create_app`` on uvicorn,
embedded mode (SQLite store + in-process Celery worker), one real compression job end to end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from netshrink.cli import submit_cmd
from netshrink.client import ApiError, Job, NetshrinkClient, RetryPolicy
from netshrink.client._protocol import content_digest_sha256
from tests import factories
from tests.threaded_server import embedded_service

pytestmark = pytest.mark.slow
SPEC = {"prune": {"keep": 0.5}, "quantize": {"bits": 8}, "seed": 7}


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_service(tmp_path_factory.mktemp("data")) as url:
        yield url


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return factories.write_bytes(factories.mlp_onnx(), tmp_path / "mlp.onnx")


def test_sdk_runs_a_real_job(real_server: str, onnx_file: Path, tmp_path: Path) -> None:
    seen: list[Job] = []
    with NetshrinkClient(real_server, retry=RetryPolicy(max_retries=2, backoff_s=0.1)) as ns:
        assert "onnx" in json.dumps(ns.capabilities()["formats"])
        job = ns.submit(onnx_file, SPEC)
        assert job.status == "queued" and job.spec["seed"] == 7
        assert job.retry_after_s is not None  # non-terminal jobs carry Retry-After
        done = ns.wait(job.id, timeout_s=60, on_progress=seen.append)
        assert done.status == "succeeded", done.error
        paths = ns.download(done.id, tmp_path / "out")
        report = ns.report(done.id)
        assert [j.id for j in ns.list(status="succeeded").items] == [done.id]
        with pytest.raises(ApiError) as missing:
            ns.get("no-such-job")
    assert missing.value.status == 404 and missing.value.problem["title"]
    assert seen[-1].status == "succeeded"
    assert "model.onnx" in paths and all(p.is_file() for p in paths.values())
    head = httpx.get(f"{real_server}/v1/jobs/{done.id}/artifacts/model.onnx")
    on_disk = hashlib.sha256(paths["model.onnx"].read_bytes()).hexdigest()
    assert (
        content_digest_sha256(head.headers["Content-Digest"]) == on_disk == done.artifact("model.onnx").sha256
    )
    session = ort.InferenceSession(str(paths["model.onnx"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    assert np.all(np.isfinite(session.run(None, {session.get_inputs()[0].name: x})[0]))
    if "report.json" in paths:
        assert json.loads(paths["report.json"].read_text())["summary"] == report["summary"]
    assert report["summary"]["bytes"]["after"]["total"] < report["summary"]["bytes"]["before"]["total"]


def test_submit_command_against_the_real_service(
    real_server: str, onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    submit_cmd.add_arguments(parser)
    argv = [str(onnx_file), "--server", real_server, "--prune-keep", "0.5", "--bits", "4", "--seed", "1",
            "--target-error", "10", "--json", "--out", str(tmp_path / "out")]  # fmt: skip
    assert submit_cmd.run(parser.parse_args(argv)) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "succeeded" and body["summary"]["budget_met"] is True
    bad = parser.parse_args([str(onnx_file), "--server", real_server, "--prune-keep", "1.5"])
    assert submit_cmd.run(bad) == 2
    assert "prune" in capsys.readouterr().err


def _train_file(path: Path, n: int = 160) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    np.savez(path, inputs=X, labels=np.argmax(X[:, :4], axis=1).astype(np.int64))
    return path


def test_sdk_and_submit_run_a_finetune_job(
    real_server: str, onnx_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _train_file(tmp_path / "train.npz")
    spec = {"kind": "finetune", "finetune": {"epochs": 2, "batch_size": 32}, "seed": 2}
    with NetshrinkClient(real_server, retry=RetryPolicy(max_retries=2, backoff_s=0.1)) as ns:
        job = ns.submit(onnx_file, spec, train=train)
        assert job.kind == "finetune"
        done = ns.wait(job.id, timeout_s=120)
        assert done.status == "succeeded", done.error
        report = ns.report(done.id)
    assert set(report["finetune"]["arms"]) == {"plain", "noise"}
    parser = argparse.ArgumentParser()
    submit_cmd.add_arguments(parser)
    (tmp_path / "ft.json").write_text(json.dumps({"finetune": {"epochs": 2, "batch_size": 32}}))
    argv = [str(onnx_file), "--server", real_server, "--kind", "finetune", "--train", str(train),
            "--spec", str(tmp_path / "ft.json"), "--seed", "2", "--json"]  # fmt: skip
    argv += ["--out", str(tmp_path / "out")]
    assert submit_cmd.run(parser.parse_args(argv)) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "succeeded" and set(body["summary"]) >= {"original", "plain", "noise", "sigma"}
    assert (tmp_path / "out" / "model.onnx").is_file()
