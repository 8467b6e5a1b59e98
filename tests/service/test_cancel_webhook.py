"""The API's own webhook events and refusals (found by probing Redis mode, 2026-12-05): a job the
API cancels at once gets its ``job.cancelled`` webhook (no worker runs it to send one), and a
callback a keyless server could never sign is refused at submit instead of dropped."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from netshrink.service.main import create_app
from netshrink.workers.webhooks import new_webhook_secret
from tests.service.conftest import SPEC, assert_problem, make_settings, submit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from webhook_receiver import webhook_receiver  # noqa: E402


def _train(n: int = 2000) -> bytes:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 8)).astype(np.float32)  # (n, 8): the test MLP's inputs
    buf = io.BytesIO()
    np.savez(buf, inputs=X, labels=np.argmax(X[:, :4], axis=1))
    return buf.getvalue()


def test_a_queued_job_cancelled_by_the_api_gets_its_webhook(tmp_path: Path, onnx_model: bytes) -> None:
    """A long finetune keeps the one embedded worker busy, so the second job stays queued; cancelling
    it is immediate (200). Before, its ``job.cancelled`` event was never sent."""
    secret = new_webhook_secret()
    settings = make_settings(
        tmp_path,
        embedded_worker=True,
        webhook_dev_secret=secret,
        webhook_allow_hosts=["127.0.0.1"],
        webhook_backoff_base_s=0.05,
    )
    with webhook_receiver() as rx, TestClient(create_app(settings)) as client:
        long = {"kind": "finetune", "finetune": {"epochs": 1000, "batch_size": 8}, "seed": 0}
        busy = submit(client, onnx_model, long, train=_train())
        assert busy.status_code == 202, busy.text
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{busy.json()['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        callback = {"url": rx.url, "events": ["job.cancelled"]}
        queued = submit(client, onnx_model, {**SPEC, "callback": callback}).json()
        r = client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 200  # again: no second event
        assert client.post(f"/v1/jobs/{busy.json()['id']}/cancel").status_code == 202  # frees the worker
        received = rx.wait_for(1, timeout_s=60)
        time.sleep(0.5)  # a duplicate would arrive now
    assert len(rx.requests) == 1, [q.body for q in rx.requests]
    body = Webhook(secret).verify(received[0].body, received[0].headers)
    assert body["type"] == "job.cancelled" and body["data"]["id"] == queued["id"]


def test_a_callback_a_keyless_server_cannot_sign_is_refused(tmp_path: Path, onnx_model: bytes) -> None:
    """Dev mode without NETSHRINK_WEBHOOK_DEV_SECRET: the worker drops every event unsigned, so the
    callback is refused at submit (it was accepted and silently never called)."""
    settings = make_settings(tmp_path, webhook_allow_hosts=["127.0.0.1"])
    with TestClient(create_app(settings)) as client:
        spec = {**SPEC, "callback": {"url": "http://127.0.0.1:9/hook"}}
        body = assert_problem(submit(client, onnx_model, spec), 422, "invalid-callback")
        assert "NETSHRINK_WEBHOOK_DEV_SECRET" in body["detail"]
        assert client.get("/v1/jobs").json()["items"] == []
