"""kind finetune through the real app: train upload, validation on submit, the job run end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi.testclient import TestClient

from netshrink.service.main import create_app
from tests.service.conftest import assert_problem, make_settings, submit


def _npz(n: int = 160, n_in: int = 8, classes: int = 4, shift: int = 0, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)).astype(np.float32)
    y = (np.argmax(X[:, :classes], axis=1) + shift).astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, inputs=X, labels=y)
    return buf.getvalue()


FT = {"kind": "finetune", "finetune": {"epochs": 2, "batch_size": 32}, "seed": 5}


def test_finetune_job_runs_end_to_end(tmp_path: Path, onnx_model: bytes) -> None:
    settings = make_settings(tmp_path, embedded_worker=True, prefer_wait_max_s=60.0)
    with TestClient(create_app(settings)) as client:
        spec = {**FT, "quantize": {"bits": 8}}  # a compress field: compress the fine-tuned model too
        r = submit(client, onnx_model, spec, train=_npz(), headers={"Prefer": "wait=60"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "succeeded", json.dumps(job.get("error"))
        assert job["kind"] == "finetune" and job["spec"]["kind"] == "finetune"
        assert job["spec"]["epochs"] == 2 and job["spec"]["seed"] == 5
        assert job["spec"]["compress"]["quantize"]["bits"] == 8
        names = {a["name"] for a in job["artifacts"]}
        assert {"model.onnx", "compressed_model.onnx", "report.json", "report.html"} <= names
        model = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx").content
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        assert sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, 8), np.float32)})[0].shape == (3, 4)
        report = client.get(job["report_url"]).json()
        assert report["kind"] == "finetune" and set(report["finetune"]["arms"]) == {"plain", "noise"}
        assert report["compress"]["kind"] == "compress"
        html = client.get(f"/v1/jobs/{job['id']}/artifacts/report.html").text
        assert 'id="chart-finetune"' in html


def test_non_finite_loss_fails_the_job_with_the_epoch(tmp_path: Path, onnx_model: bytes) -> None:
    settings = make_settings(tmp_path, embedded_worker=True, prefer_wait_max_s=60.0)
    with TestClient(create_app(settings)) as client:
        spec = {**FT, "finetune": {"epochs": 4, "alpha": 0.3, "sigma": 100.0, "eta": 10.0, "batch_size": 32}}
        r = submit(client, onnx_model, spec, train=_npz(), headers={"Prefer": "wait=60"})
        job = r.json()
        assert job["status"] == "failed", r.text
        assert job["error"]["type"].endswith("/training-diverged")
        assert "non-finite" in job["error"]["detail"] and "at epoch" in job["error"]["detail"]


def test_labels_out_of_range_are_422_naming_the_field(client: TestClient, onnx_model: bytes) -> None:
    r = submit(client, onnx_model, FT, train=_npz(shift=3))
    body = assert_problem(r, 422, "invalid-calibration")
    assert body["errors"][0]["field"] == "train.labels" and body["errors"][0]["pointer"] == "/train/labels"


def test_inputs_that_do_not_fit_are_422(client: TestClient, onnx_model: bytes) -> None:
    body = assert_problem(submit(client, onnx_model, FT, train=_npz(n_in=5)), 422, "invalid-calibration")
    assert body["errors"][0]["field"] == "train.inputs"
    body = assert_problem(
        submit(client, onnx_model, FT, train=_npz(), validation=_npz(n_in=5)), 422, "invalid-calibration"
    )
    assert body["errors"][0]["field"] == "validation.inputs"


def test_training_upload_over_its_limit_is_413(tmp_path: Path, onnx_model: bytes) -> None:
    with TestClient(create_app(make_settings(tmp_path, max_calibration_bytes=4096))) as client:
        assert_problem(submit(client, onnx_model, FT, train=_npz(n=400)), 413, "limit-exceeded")


def test_train_and_kind_must_go_together(client: TestClient, onnx_model: bytes) -> None:
    assert_problem(submit(client, onnx_model, FT), 422)  # finetune without train
    assert_problem(submit(client, onnx_model, {"prune": {"keep": 0.5}}, train=_npz()), 422)
    assert_problem(submit(client, onnx_model, FT, train=_npz(), calibration=_npz()), 422)
    r = submit(client, onnx_model, {**FT, "finetune": {"alpha": 3}}, train=_npz())
    assert_problem(r, 422, "invalid-spec")
    r = submit(client, onnx_model, {"finetune": {"epochs": 2}}, train=_npz())
    assert_problem(r, 422)


def test_accepted_job_is_queued_with_its_inputs(client: TestClient, onnx_model: bytes) -> None:
    r = submit(client, onnx_model, FT, train=_npz(), validation=_npz(seed=1))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "finetune" and job["spec"]["sigma"] == 0.003
    state = client.app.state.netshrink  # type: ignore[attr-defined]
    assert state.artifacts.input_path(job["id"], "train.npz").is_file()
    assert state.artifacts.input_path(job["id"], "validation.npz").is_file()
