"""The /v1/jobs resource through the real app: submit, poll, list, idempotency, cancel, delete,
download and report. Ref: docs/api.md "Resources"."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient

from netshrink.service.main import create_app
from netshrink.service.schemas import to_public
from netshrink.service.settings import ServiceSettings
from tests import factories
from tests.service.conftest import SPEC, app_state, assert_problem, finish_job, make_settings, submit


def test_submit_answers_202_with_location_retry_after_and_echoed_seed(
    client: TestClient, onnx_model: bytes
) -> None:
    r = submit(client, onnx_model, {"prune": {"keep": 0.5}})
    assert r.status_code == 202
    body = r.json()
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    assert int(r.headers["retry-after"]) >= 1
    assert body["status"] == "queued" and body["kind"] == "compress"
    assert isinstance(body["spec"]["seed"], int)  # a random seed is drawn and always echoed
    assert body["spec"]["prune"]["keep"] == 0.5
    assert body["input"] == {
        "filename": "model.onnx",
        "format": "onnx",
        "sha256": hashlib.sha256(onnx_model).hexdigest(),
        "size_bytes": len(onnx_model),
        "params": body["input"]["params"],
    }
    assert body["input"]["params"] > 0
    # The upload is where the worker reads it, and the job is in the store.
    state = app_state(client)
    assert state.artifacts.model_input(body["id"]).read_bytes() == onnx_model
    assert [p.name for p in state.artifacts.job_dir(body["id"]).iterdir()] == ["model.onnx"]  # one directory
    assert state.store.get(body["id"]).owner == "dev"


def test_get_job_carries_retry_after_until_terminal(client: TestClient, submitted: Any) -> None:
    job = submitted()
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["id"] == job["id"]
    assert r.headers["retry-after"] == "2"
    finish_job(client, job["id"])
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.json()["status"] == "succeeded"
    assert "retry-after" not in r.headers
    assert r.json()["report_url"] == f"/v1/jobs/{job['id']}/report"


def test_status_read_is_the_public_job_with_rate_limit_headers(client: TestClient, submitted: Any) -> None:
    """Issue 13 §8 made the status route one hop (none in embedded mode) and serialize straight to
    JSON: the body is still ``JobPublic`` exactly, and it now carries the RateLimit-* headers too."""
    job = submitted()
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.headers["content-type"] == "application/json"
    stored = app_state(client).store.get(job["id"])
    assert r.json() == to_public(stored).model_dump(mode="json")
    assert int(r.headers["ratelimit-limit"]) > 0 and "ratelimit-remaining" in r.headers
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"


def test_unknown_job_is_404_problem_never_pending(client: TestClient) -> None:
    for path in ("/v1/jobs/job_0123", "/v1/jobs/job_0123/report", "/v1/jobs/job_0123/artifacts/model.onnx"):
        assert_problem(client.get(path), 404, "not-found")
    assert_problem(client.post("/v1/jobs/job_0123/cancel"), 404)
    assert_problem(client.delete("/v1/jobs/job_0123"), 404)


def test_list_paginates_newest_first_and_filters_by_status(client: TestClient, submitted: Any) -> None:
    ids = [submitted()["id"] for _ in range(3)]
    finish_job(client, ids[0])
    page1 = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = client.get("/v1/jobs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [j["id"] for j in page2["items"]] == [ids[0]] and page2["next_cursor"] is None
    done = client.get("/v1/jobs", params={"status": "succeeded"}).json()
    assert [j["id"] for j in done["items"]] == [ids[0]]
    assert_problem(client.get("/v1/jobs", params={"cursor": "!!not-a-cursor"}), 400, "invalid-cursor")
    # Issue 13 §7: a cursor is a keyset position; any value of the documented form is a page.
    everything = client.get("/v1/jobs", params={"cursor": "9" * 16 + ".z"})
    assert everything.status_code == 200 and [j["id"] for j in everything.json()["items"]] == ids[::-1]
    nothing = client.get("/v1/jobs", params={"cursor": "0" * 16 + ".0"})
    assert nothing.status_code == 200 and nothing.json()["items"] == []
    assert_problem(client.get("/v1/jobs", params={"cursor": "0" * 17 + ".0"}), 400, "invalid-cursor")
    body = assert_problem(client.get("/v1/jobs", params={"status": "pending"}), 422, "validation")
    assert body["errors"][0]["pointer"] == "/status" and body["errors"][0]["location"] == "query"


def test_idempotency_key_replays_the_first_job_and_rejects_a_different_payload(
    client: TestClient, onnx_model: bytes
) -> None:
    headers = {"Idempotency-Key": "k-123"}
    first = submit(client, onnx_model, SPEC, headers=headers)
    again = submit(client, onnx_model, SPEC, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    other = submit(client, onnx_model, {**SPEC, "seed": 8}, headers=headers)
    assert_problem(other, 422, "idempotency-key-reused")
    jobs = client.get("/v1/jobs").json()["items"]
    assert len(jobs) == 1
    # The replayed and the refused uploads left no directory behind.
    assert app_state(client).artifacts.job_ids() == [first.json()["id"]]


def test_invalid_spec_is_422_with_pointers_and_creates_nothing(client: TestClient, onnx_model: bytes) -> None:
    body = assert_problem(submit(client, onnx_model, {"prune": {"keep": 2}}), 422, "invalid-spec")
    assert {e["pointer"] for e in body["errors"]} == {"/spec/prune/keep"}
    body = assert_problem(submit(client, onnx_model, {"quantize": {"bits": 4, "bitz": 1}}), 422)
    assert body["errors"][0]["pointer"] == "/spec/quantize/bitz"
    assert_problem(submit(client, onnx_model, "{not json"), 422, "validation")
    assert_problem(submit(client, onnx_model, None), 422, "validation")
    assert client.get("/v1/jobs").json()["items"] == []
    assert app_state(client).artifacts.job_ids() == []


def test_core_rejections_map_to_4xx_and_create_no_job(client: TestClient, onnx_model: bytes) -> None:
    # Starts like an ONNX ModelProto (so the sniffer passes it) but is not one: the core's loader refuses.
    assert_problem(submit(client, b"\x08\x07" + b"\xff" * 64, SPEC), 400, "model-format")
    # An architecture JSON is only valid with a state dict (ArchitectureError -> 422).
    assert_problem(
        submit(client, onnx_model, SPEC, architecture={"activation": "tanh"}), 422, "invalid-architecture"
    )
    assert client.get("/v1/jobs").json()["items"] == []
    assert app_state(client).artifacts.job_ids() == []


def test_private_callback_url_is_refused_at_submit(client: TestClient, onnx_model: bytes) -> None:
    spec = {**SPEC, "callback": {"url": "http://127.0.0.1:9/hook"}}
    assert_problem(submit(client, onnx_model, spec), 422, "invalid-callback")


def test_cancel_queued_job_then_cancel_is_idempotent_and_finished_jobs_conflict(
    client: TestClient, submitted: Any
) -> None:
    job = submitted()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    done = submitted()
    finish_job(client, done["id"])
    assert_problem(client.post(f"/v1/jobs/{done['id']}/cancel"), 409, "job-finished")


def test_cancel_running_job_requests_a_stop(client: TestClient, submitted: Any) -> None:
    job = submitted()
    app_state(client).store.mark_running(job["id"])
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert "retry-after" in r.headers
    assert app_state(client).store.is_cancel_requested(job["id"])


def test_delete_only_terminal_jobs_and_their_files(client: TestClient, submitted: Any) -> None:
    job = submitted()
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 409, "job-active")
    finish_job(client, job["id"], {"model.onnx": b"bytes"})
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404)
    assert not app_state(client).artifacts.job_dir(job["id"]).exists()


def test_artifact_download_headers_and_conditional_get(client: TestClient, submitted: Any) -> None:
    job = submitted()
    payload = b"onnx-bytes-" * 100
    finish_job(client, job["id"], {"model.onnx": payload, "report.json": b"{}"})
    listed = client.get(f"/v1/jobs/{job['id']}").json()["artifacts"]
    assert {a["name"] for a in listed} == {"model.onnx", "report.json"}
    url = next(a["url"] for a in listed if a["name"] == "model.onnx")
    r = client.get(url)
    digest = hashlib.sha256(payload).digest()
    assert r.status_code == 200 and r.content == payload
    assert r.headers["etag"] == f'"{digest.hex()}"'
    assert r.headers["content-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert r.headers["content-length"] == str(len(payload))
    assert r.headers["content-disposition"] == 'attachment; filename="model.onnx"'
    assert r.headers["content-type"] == "application/onnx"
    not_modified = client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert_problem(client.get(f"/v1/jobs/{job['id']}/artifacts/model.pt"), 404)


def test_artifact_head_sends_the_get_headers_without_the_body(client: TestClient, submitted: Any) -> None:
    """HEAD answered 405 until 2026-12-05; a client checks size and digest before a large download."""
    job = submitted()
    payload = b"onnx-bytes-" * 100
    finish_job(client, job["id"], {"model.onnx": payload, "report.json": b"{}"})
    url = f"/v1/jobs/{job['id']}/artifacts/model.onnx"
    got, head = client.get(url), client.head(url)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-digest", "content-length", "content-type", "content-disposition"):
        assert head.headers[name] == got.headers[name], name
    assert head.headers["content-length"] == str(len(payload))
    assert client.head(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
    missing = client.head(f"/v1/jobs/{job['id']}/artifacts/model.pt")
    assert missing.status_code == 404 and missing.content == b""
    part = client.get(url, headers={"Range": "bytes=0-9"})  # a resumed download (Starlette's FileResponse)
    assert part.status_code == 206 and part.content == payload[:10]


def test_report_is_409_until_finished(client: TestClient, submitted: Any) -> None:
    job = submitted()
    r = client.get(f"/v1/jobs/{job['id']}/report")
    assert_problem(r, 409, "not-ready")
    assert "retry-after" in r.headers
    finish_job(client, job["id"])
    r = client.get(f"/v1/jobs/{job['id']}/report")
    assert r.status_code == 200 and r.json()["reproducibility"] == {"seed": 7}


def test_report_404_names_what_is_missing(client: TestClient, submitted: Any) -> None:
    """docs/api.md: "No such job." for an unknown id, "No such report" for a job that ended without one."""
    assert "No such job." in assert_problem(client.get("/v1/jobs/job_0123/report"), 404)["detail"]
    job = submitted()
    state = app_state(client)
    assert state.store.mark_running(job["id"])
    assert state.store.mark_failed(job["id"], {"type": "about:blank", "title": "Bad model", "status": 422})
    body = assert_problem(client.get(f"/v1/jobs/{job['id']}/report"), 404, "not-found")
    assert body["detail"].startswith("No such report: the job failed")
    assert f"GET /v1/jobs/{job['id']}" in body["detail"] and "error" in body["detail"]


def test_prefer_wait_times_out_to_202_with_preference_applied(client: TestClient, onnx_model: bytes) -> None:
    t0 = time.monotonic()
    r = submit(client, onnx_model, SPEC, headers={"Prefer": "wait=1"})
    assert r.status_code == 202 and r.headers["preference-applied"] == "wait=1"
    assert 1.0 <= time.monotonic() - t0 < 10
    capped = submit(client, onnx_model, SPEC, headers={"Prefer": "respond-async, wait=3600"})
    assert capped.headers["preference-applied"] == "wait=2"  # settings.prefer_wait_max_s


def test_embedded_worker_runs_a_job_to_completion(tmp_path: Any, onnx_model: bytes) -> None:
    """Embedded mode: in-process Celery worker; Prefer: wait returns the finished job (200)."""
    settings: ServiceSettings = make_settings(tmp_path, embedded_worker=True, prefer_wait_max_s=30.0)
    with TestClient(create_app(settings)) as client:
        spec = {"quantize": {"bits": 8}, "seed": 3, "evaluation": {"samples": 16}}
        r = submit(client, onnx_model, spec, headers={"Prefer": "wait=30"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "succeeded", json.dumps(job.get("error"))
        names = {a["name"] for a in job["artifacts"]}
        assert "model.onnx" in names
        model = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
        assert hashlib.sha256(model.content).hexdigest() == next(
            a["sha256"] for a in job["artifacts"] if a["name"] == "model.onnx"
        )
        report = client.get(job["report_url"]).json()
        assert report["reproducibility"]["seed"] == 3


def test_state_dict_upload_is_accepted_and_sniffed(client: TestClient, tmp_path: Any) -> None:
    pt = factories.write_pt(factories.tiny_mlp(), tmp_path / "weights.bin").read_bytes()
    r = submit(client, pt, SPEC, filename="weights.bin", architecture={"activation": "relu"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["input"]["format"] == "pt" and job["input"]["filename"] == "weights.bin"
    state = app_state(client)
    assert state.artifacts.model_input(job["id"]).name == "model.pt"
    stored = state.artifacts.input_path(job["id"], "architecture.json").read_text()
    assert json.loads(stored) == {"activation": "relu"}
    assert state.store.get(job["id"]).has_architecture


def test_calibration_that_does_not_fit_the_model_is_422(client: TestClient, onnx_model: bytes) -> None:
    npz = io.BytesIO()
    np.savez(npz, inputs=np.zeros((4, 3), dtype=np.float32))  # the model takes 8 features
    body = assert_problem(
        submit(client, onnx_model, SPEC, calibration=npz.getvalue()), 422, "invalid-calibration"
    )
    assert body["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_spec_that_cannot_apply_to_the_model_is_refused_at_submit(
    client: TestClient, onnx_model: bytes
) -> None:
    """Checked synchronously against the loaded network: no job is created."""
    r = submit(client, onnx_model, {"quantize": {"bits": 4}, "exclude": ["no_such_layer"]})
    body = assert_problem(r, 422, "invalid-spec")
    assert "no_such_layer" in body["detail"]
    r = submit(client, onnx_model, {"prune": {"keep": 0.01, "granularity": "neuron"}})  # 0.16 of 16 neurons
    body = assert_problem(r, 422, "invalid-spec")
    assert "keeps 0.16 of the 16 unit(s)" in body["detail"]
    r = submit(client, onnx_model, {"quantize": {"bits": 4}, "device": "cuda"})
    if torch.cuda.is_available():
        assert r.status_code == 202, r.text  # this embedded server can run it
    else:
        assert_problem(r, 422, "invalid-spec")
        assert client.get("/v1/jobs").json()["items"] == []


def test_a_job_is_gone_at_its_expires_at(tmp_path: Path, onnx_model: bytes) -> None:
    """Until the retention cleanup runs (hourly by default) an expired job was still served, files
    and all (2026-12-05, found by probing: 35 s past its expires_at); now it is 404 from then on."""
    with TestClient(create_app(make_settings(tmp_path, artifact_retention_s=1))) as client:
        job_id = submit(client, onnx_model, SPEC).json()["id"]
        done = finish_job(client, job_id, {"model.onnx": b"onnx"})
        assert done.expires_at is not None
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        assert client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx").status_code == 200
        time.sleep(max(0.0, (done.expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
        assert_problem(client.get(f"/v1/jobs/{job_id}"), 404, "not-found")
        assert_problem(client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx"), 404)
        assert client.get("/v1/jobs").json()["items"] == []
