"""POST -> queue -> worker -> download, over HTTP, on the REAL Redis with a REAL Celery worker.

The API runs in-process (``TestClient(create_app(...))``, real routes and middleware); the worker is
``celery.contrib.testing.worker.start_worker`` (solo pool, in a thread) consuming the real Redis
broker at 127.0.0.1:6379 — never eager mode. Every test uses its own Redis key prefix, which kombu
applies to the broker keys too, so nothing leaks into other queues. The artifacts are checked in
onnxruntime and the report is compared with what the core says when run directly on the same
inputs and seed (same bytes, same numbers).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from netshrink.compression.evaluation.ort_eval import session
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings
from netshrink.workers.celery_app import create_celery_app
from tests import factories

pytestmark = [
    pytest.mark.redis,
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]
REDIS_URL = "redis://127.0.0.1:6379/0"
SPEC = {
    "prune": {"keep": 0.5, "granularity": "neuron"},
    "quantize": {"bits": 4},
    "seed": 11,
    "evaluation": {"samples": 64},
}


@pytest.fixture
def settings(tmp_path: Path, redis_prefix: str) -> ServiceSettings:
    return ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=REDIS_URL,
        redis_key_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        job_time_limit_s=120,
        job_soft_time_limit_s=100,
        visibility_timeout_s=300,
        rate_limit_requests=1000,
    )


@pytest.fixture
def stack(settings: ServiceSettings) -> Iterator[TestClient]:
    """The API and one real Celery worker sharing the Redis broker and the artifact directory."""
    torch.set_num_threads(1)
    worker_app = create_celery_app(settings)
    with (
        TestClient(create_app(settings)) as client,
        start_worker(
            worker_app, pool="solo", perform_ping_check=False, queues=["cpu", "webhooks"], shutdown_timeout=60
        ),
    ):
        yield client


def post(client: TestClient, model: bytes, spec: dict[str, Any], filename: str, **parts: Any) -> Any:
    files: dict[str, Any] = {"model": (filename, model, "application/octet-stream")}
    data = {"spec": json.dumps(spec)}
    for name, value in parts.items():
        if isinstance(value, bytes):
            files[name] = (f"{name}.npz", value, "application/octet-stream")
        else:
            data[name] = json.dumps(value)
    return client.post("/v1/jobs", files=files, data=data)


def wait(client: TestClient, location: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = client.get(location)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert "retry-after" in {k.lower() for k in r.headers}
        time.sleep(0.1)
    raise AssertionError(f"{location} not finished after {timeout_s}s")


def download(client: TestClient, job: dict[str, Any], name: str) -> bytes:
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert r.status_code == 200, r.text
    listed = next(a for a in job["artifacts"] if a["name"] == name)
    assert hashlib.sha256(r.content).hexdigest() == listed["sha256"]
    assert r.headers["etag"].strip('"') == listed["sha256"]
    assert name in r.headers["content-disposition"]
    return r.content


def test_onnx_job_over_redis_matches_the_core(stack: TestClient, tmp_path: Path) -> None:
    model = factories.mlp_onnx((16, 64, 64, 8))
    r = post(stack, model, SPEC, "mlp.onnx")
    assert r.status_code == 202, r.text
    assert r.headers["location"].endswith(r.json()["id"]) and "retry-after" in r.headers
    job = wait(stack, r.headers["location"])
    assert job["status"] == "succeeded", job.get("error")
    onnx_bytes = download(stack, job, "model.onnx")
    html = download(stack, job, "report.html")
    assert b"<svg" in html
    report = stack.get(f"/v1/jobs/{job['id']}/report").json()
    upload_sha = hashlib.sha256(model).hexdigest()
    assert report["reproducibility"]["input_sha256"] == report["model"]["sha256"] == upload_sha

    # What the core says on the same input and seed, run directly in this process.
    path = factories.write_bytes(model, tmp_path / "mlp.onnx")
    direct = compress(load_model(path), CompressSpec.from_dict(SPEC))
    assert onnx_bytes == direct.artifacts["model.onnx"]  # same seed, device type, versions: same bytes
    for key in ("relative_l2", "mse", "p95", "max"):
        assert report["summary"]["error"][key] == pytest.approx(
            direct.report["summary"]["error"][key], rel=1e-9
        )
    # compensated by default: tier W bounds the artifact, tier E the uncompensated twin (same draw)
    assert report["summary"]["compensated_layers"] == direct.report["summary"]["compensated_layers"] != []
    assert report["summary"]["bounds"]["W"]["value"] == pytest.approx(
        direct.report["summary"]["bounds"]["W"]["value"], rel=1e-9
    )
    assert (
        report["summary"]["bounds"]["E"]["value"] is None is direct.report["summary"]["bounds"]["E"]["value"]
    )
    twin = report["summary"]["compensation"]["uncompensated_same_draw"]["bounds"]["E"]["value"]
    assert twin is not None and twin == pytest.approx(
        direct.report["summary"]["compensation"]["uncompensated_same_draw"]["bounds"]["E"]["value"], rel=1e-9
    )

    # The artifact runs in onnxruntime, smaller, with the same input/output signature.
    m = onnx.load_from_string(onnx_bytes)
    assert [i.name for i in m.graph.input] == [i.name for i in onnx.load_from_string(model).graph.input]
    x = factories.random_inputs((16,), n=4)
    (y,) = session(onnx_bytes).run(None, {m.graph.input[0].name: x})
    assert y.shape == (4, 8) and np.isfinite(y).all()
    assert report["summary"]["bytes"]["after"]["total"] < report["summary"]["bytes"]["before"]["total"]


def test_state_dict_job_with_calibration_over_redis(stack: TestClient, tmp_path: Path) -> None:
    module = factories.tiny_mlp((64, 32, 10))
    pt = factories.write_pt(module, tmp_path / "m.pt").read_bytes()
    X, y = factories.digits_inputs(120)
    cal = factories.write_calibration(tmp_path / "cal.npz", X, y).read_bytes()
    spec = {"quantize": {"bits": 8}, "seed": 2}
    r = post(stack, pt, spec, "m.pt", calibration=cal)
    assert r.status_code == 202, r.text
    job = wait(stack, r.headers["location"])
    assert job["status"] == "succeeded", job.get("error")
    names = {a["name"] for a in job["artifacts"]}
    assert {"model.onnx", "model.pt", "architecture.json", "report.json", "report.html"} <= names
    arch = json.loads(download(stack, job, "architecture.json"))
    from netshrink.compression.export.export_torch import load_compressed_state_dict

    weights = load_compressed_state_dict(download(stack, job, "model.pt"), arch)
    assert set(weights) >= {"0.weight", "2.weight"}
    report = stack.get(job["report_url"]).json()
    assert report["summary"]["evaluation"]["inputs"] == "calibration"
    assert report["summary"]["classification"]["accuracy_before"] is not None
    assert report["reproducibility"]["calibration_sha256"] == hashlib.sha256(cal).hexdigest()


def test_analyze_job_and_bad_input_over_redis(stack: TestClient) -> None:
    r = post(stack, factories.cnn_with_bn_node_onnx(), {"kind": "analyze"}, "cnn.onnx")
    assert r.status_code == 202, r.text
    job = wait(stack, r.headers["location"])
    assert job["status"] == "succeeded", job.get("error")
    report = stack.get(job["report_url"]).json()
    assert report["kind"] == "analyze" and report["diagnostics"]
    bad = post(stack, b"definitely not a model", SPEC, "x.onnx")
    assert bad.status_code in (400, 415, 422)
    assert bad.headers["content-type"] == "application/problem+json"
    assert stack.get("/v1/jobs/does-not-exist").status_code == 404
