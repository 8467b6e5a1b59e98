"""kind finetune through the real app: train upload, validation on submit, the job run end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
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


def _no_jobs(client: TestClient) -> None:
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("extra", "pointer", "match"),
    [
        ({"quantize": {"bits": 4}, "exclude": ["nope"]}, "/spec/exclude", "exclude names unknown layers"),
        ({"prune": {"keep": 0.01, "granularity": "neuron"}}, "/spec/prune/keep", "keeps more than one"),
        ({"quantize": {"bits": {"nope": 4}}}, "/spec/quantize/bits", "unknown layers"),
    ],
)
def test_the_follow_up_compress_is_checked_against_the_model_on_submit(
    client: TestClient, onnx_model: bytes, extra: dict[str, Any], pointer: str, match: str
) -> None:
    """Rules 4 and 8 for a finetune job's compress fields, as for kind compress (which gets the same
    answer). Until 2026-12-05 the finetune job was accepted (202), trained both arms fully and then
    failed at its compress stage with this 422 in job.error (probe G, bug 2)."""
    for spec, parts in (({**FT, **extra}, {"train": _npz()}), ({"seed": 5, **extra}, {})):
        body = assert_problem(submit(client, onnx_model, spec, **parts), 422, "invalid-spec")
        assert body["errors"][0]["pointer"] == pointer and match in body["detail"], body
    _no_jobs(client)
    fine = {**FT, "quantize": {"bits": 4}, "exclude": ["node_linear_2"]}  # a layer the model has
    assert submit(client, onnx_model, fine, train=_npz()).status_code == 202


def test_a_follow_up_compress_needs_two_validation_samples(client: TestClient, onnx_model: bytes) -> None:
    """Rule 3: the follow-up compress measures on the validation split (2 samples or more, as a
    compress job's calibration). Until 2026-12-05 a 1-sample `validation` (or a carved split of one)
    was accepted, trained fully, then failed naming `/calibration` (probe G, bug 3)."""
    follow = {**FT, "quantize": {"bits": 4}}
    one = _npz(n=1, seed=1)
    body = assert_problem(submit(client, onnx_model, follow, train=_npz(), validation=one), 422)
    assert body["type"].endswith("/invalid-calibration") and "at least 2 samples" in body["detail"]
    assert (body["errors"][0]["pointer"], body["errors"][0]["field"]) == ("/validation", "validation")
    five = _npz(n=5)  # validation_fraction 0.2 carves 1 of 5
    body = assert_problem(submit(client, onnx_model, follow, train=five), 422, "invalid-calibration")
    assert body["errors"][0]["pointer"] == "/train" and "carves 1" in body["detail"]
    _no_jobs(client)
    # no follow-up compress, or one measuring on synthetic inputs: nothing is measured on the split
    assert submit(client, onnx_model, FT, train=_npz(), validation=one).status_code == 202
    assert submit(client, onnx_model, FT, train=five).status_code == 202
    gaussian = {**follow, "evaluation": {"inputs": "gaussian"}}
    assert submit(client, onnx_model, gaussian, train=five).status_code == 202
    two = {**follow, "finetune": {**FT["finetune"], "validation_fraction": 0.4}}  # carves 2 of 5
    assert submit(client, onnx_model, two, train=five).status_code == 202
    assert submit(client, onnx_model, follow, train=_npz(), validation=_npz(n=2)).status_code == 202
