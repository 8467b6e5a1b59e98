"""Operations endpoints: probes, worker liveness, Prometheus metrics from the store, capabilities.
One test runs the whole app in Redis mode against the REAL Redis (unique key prefix)."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from netshrink.compression.spec import MAX_BITS, MIN_BITS
from netshrink.service.main import create_app
from netshrink.workers.jobs import InputInfo, Job, WorkerHeartbeat, utcnow
from tests.service.conftest import app_state, assert_problem, finish_job, make_settings


def _metrics(client: TestClient) -> dict[str, Any]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
    return out


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"store": "ok", "broker": "ok (embedded)", "storage": "ok"}


def test_readyz_is_503_when_storage_is_not_writable(client: TestClient) -> None:
    root = app_state(client).artifacts.root
    shutil.rmtree(root)
    root.write_bytes(b"not a directory")
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable" and r.json()["checks"]["storage"].startswith("error")
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_metrics_are_computed_from_the_store(client: TestClient, submitted: Any) -> None:
    before = _metrics(client)
    assert before["netshrink_jobs|status=queued"] == 0 and before["netshrink_job_duration_seconds_count"] == 0
    jobs = [submitted() for _ in range(3)]
    finish_job(client, jobs[0]["id"])
    client.post(f"/v1/jobs/{jobs[1]['id']}/cancel")
    m = _metrics(client)
    assert m["netshrink_jobs|status=queued"] == 1
    assert m["netshrink_jobs|status=succeeded"] == 1 and m["netshrink_jobs|status=cancelled"] == 1
    assert m["netshrink_queue_depth"] == 1
    assert m["netshrink_job_duration_seconds_count"] == 1  # the cancelled job never started
    assert m["netshrink_upload_bytes_count"] == 3
    assert m["netshrink_upload_bytes_sum"] == 3 * jobs[0]["input"]["size_bytes"]
    assert m["netshrink_workers_alive"] == 0


def test_workers_endpoint_reports_heartbeats_separately_from_readiness(client: TestClient) -> None:
    assert client.get("/v1/workers").json() == {"alive": 0, "workers": []}
    assert client.get("/readyz").status_code == 200  # no worker does not make the API unready
    now = utcnow()
    store = app_state(client).store
    store.heartbeat(
        WorkerHeartbeat(worker_id="w1", hostname="h", pid=1, queues=["cpu"], device="cpu", started_at=now)
    )
    body = client.get("/v1/workers").json()
    assert body["alive"] == 1 and body["workers"][0]["name"] == "w1" and body["workers"][0]["alive"]
    assert _metrics(client)["netshrink_workers_alive"] == 1


def test_capabilities_report_limits_and_versions(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=12345, rate_limit_requests=77)
    with TestClient(create_app(settings)) as client:
        caps = client.get("/v1/capabilities").json()
    assert caps["limits"]["max_upload_bytes"] == 12345 and caps["limits"]["rate_limit_requests"] == 77
    assert caps["bits"] == {"min": MIN_BITS, "max": MAX_BITS}
    assert {"Gemm", "MatMul", "Conv", "Relu"} <= set(caps["ops"])
    assert caps["formats"] == ["onnx", "pt", "safetensors"]
    assert set(caps["versions"]) >= {"torch", "onnx", "onnxruntime", "numpy", "python"}
    assert caps["webhook_events"][0] == "job.started"


@pytest.mark.redis
def test_redis_mode_probes_metrics_and_rate_limit(tmp_path: Path, redis_prefix: str) -> None:
    """The app against the real Redis: RedisJobStore, Redis broker ping, Redis rate-limit counters.
    Jobs are written straight into the store so no message lands on the shared Celery queues."""
    settings = make_settings(
        tmp_path, redis_url="redis://127.0.0.1:6379/0", redis_key_prefix=redis_prefix, rate_limit_requests=5
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["checks"] == {"store": "ok", "broker": "ok", "storage": "ok"}
        store = app_state(client).store
        job = store.create(
            Job(input=InputInfo(filename="m.onnx", format="onnx", sha256="0" * 64, size_bytes=10))
        ).job
        store.mark_running(job.id)
        assert store.mark_succeeded(job.id, report={}, artifacts=[])
        m = _metrics(client)
        assert m["netshrink_jobs|status=succeeded"] == 1 and m["netshrink_upload_bytes_sum"] == 10
        assert client.get(f"/v1/jobs/{job.id}").json()["status"] == "succeeded"
        statuses = [client.get("/v1/jobs").status_code for _ in range(5)]
        assert statuses == [200] * 4 + [429]  # 5 per window; GET /v1/jobs/{id} above spent one
        counters = list(
            redis.Redis.from_url("redis://127.0.0.1:6379/0").scan_iter(match=redis_prefix + "ratelimit:*")
        )
        assert len(counters) == 1
    assert job.created_at - utcnow() < timedelta(minutes=1)


def test_embedded_app_heartbeats_its_worker_without_the_serve_command(tmp_path: Path) -> None:
    """create_app alone (e.g. under plain uvicorn) runs the embedded worker's heartbeat."""
    settings = make_settings(tmp_path, embedded_worker=True)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 10
        body = client.get("/v1/workers").json()
        while body["alive"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            body = client.get("/v1/workers").json()
    assert body["alive"] == 1 and body["workers"][0]["alive"]


def test_metrics_are_closed_in_keys_mode_and_open_with_the_metrics_token(tmp_path: Path) -> None:
    """Issue 13 §6: /metrics counts every tenant's jobs; in keys mode no API key opens it, only the
    dedicated NETSHRINK_METRICS_TOKEN (a Prometheus bearer token)."""
    from netshrink.service.auth import generate_key
    from netshrink.workers.store import get_store

    for token_setting in (None, "scrape-secret-1"):
        data = tmp_path / str(token_setting)
        settings = make_settings(data, host="0.0.0.0", metrics_token=token_setting)
        store = get_store(settings)
        api_key, record = generate_key("tenant")
        store.create_api_key(record)
        store.close()
        with TestClient(create_app(settings)) as client:
            r = client.get("/metrics")
            assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert_problem(client.get("/metrics", headers={"Authorization": f"Bearer {api_key}"}), 401)
            assert_problem(client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
            if token_setting is not None:
                ok = client.get("/metrics", headers={"Authorization": f"Bearer {token_setting}"})
                assert ok.status_code == 200 and "netshrink_jobs" in ok.text


def test_metrics_token_is_required_when_set_even_in_dev_mode(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, metrics_token="t0k"))) as client:
        assert_problem(client.get("/metrics"), 401)
        assert client.get("/metrics", headers={"Authorization": "Bearer t0k"}).status_code == 200
