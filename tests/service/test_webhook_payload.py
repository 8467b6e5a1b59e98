"""A webhook event's ``data`` is the job as ``GET /v1/jobs/{id}`` shows it (docs/api.md "Webhooks":
JobPublic), in every state. The worker builds it (``workers/webhooks.build_event``) without the
service's schemas, so this test holds the two equal (2026-12-05, found by probing: ``spec`` and the
URLs were missing, and ``owner`` (the API key id) and three internal fields were sent)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from netshrink.service.schemas import WebhookEvent, to_public
from netshrink.workers.webhooks import build_event
from tests.service.conftest import SPEC, app_state, finish_job, submit


def _same(client: TestClient, job_id: str) -> None:
    job = app_state(client).store.get(job_id)
    event = build_event("job.progress", job)
    data = event["data"]
    assert data == to_public(job).model_dump(mode="json")
    WebhookEvent.model_validate(event)  # the document's schema of the body (data: JobPublic)
    assert "owner" not in data and "cancel_requested" not in data


def test_the_event_data_is_the_public_job(client: TestClient, onnx_model: bytes) -> None:
    job_id = submit(client, onnx_model, SPEC).json()["id"]
    _same(client, job_id)  # queued
    finish_job(client, job_id, {"model.onnx": b"onnx", "report.json": b"{}"})
    _same(client, job_id)  # succeeded: artifacts with their URLs, report_url
