"""Progress is real: while a multi-layer job runs, ``GET /v1/jobs/{id}`` shows its stage, the layer
being compressed out of how many, and a fraction strictly between 0 and 1 (docs/api.md
"GET /v1/jobs/{id}"). Observed over HTTP against the embedded worker, as a client would."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from netshrink.service.main import create_app
from tests import factories
from tests.service.conftest import make_settings, submit


def test_a_running_job_reports_stage_layer_and_fraction(tmp_path: Any) -> None:
    model = factories.mlp_onnx((32, 64, 64, 64, 64, 64, 10))  # 6 layers to go through
    spec = {
        "prune": {"keep": 0.5},
        "quantize": {"bits": 4},
        "draws": 4,
        "seed": 0,
        "compare_baselines": True,
        "evaluation": {"inputs": "gaussian", "samples": 2000},
    }
    seen: list[dict[str, Any]] = []
    with TestClient(create_app(make_settings(tmp_path, embedded_worker=True))) as client:
        r = submit(client, model, spec)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 300
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running":
                seen.append(job["progress"])
            if job["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, seen[-3:]
            time.sleep(0.01)
        assert job["status"] == "succeeded", job.get("error")
    assert job["progress"]["fraction"] == 1.0
    middle = [p for p in seen if 0.0 < p["fraction"] < 1.0 and p["layers_total"] > 0]
    assert middle, seen[:5]
    layers = [p for p in middle if p["stage"] == "compressing" and 1 <= p["layer"] <= p["layers_total"] == 6]
    assert layers, middle
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions)  # monotone: a progress bar never goes back


def test_get_with_prefer_wait_is_a_long_poll_on_the_etag(tmp_path: Any) -> None:
    """``GET /v1/jobs/{id}`` with ``Prefer: wait=N``: held while the job equals ``If-None-Match``,
    answered at once when it differs, N capped by ``prefer_wait_max_s`` (2 s in these settings)."""
    with TestClient(create_app(make_settings(tmp_path))) as client:  # no worker: the job stays queued
        r = submit(client, factories.mlp_onnx(), {"quantize": {"bits": 8}})
        url = f"/v1/jobs/{r.json()['id']}"
        plain = client.get(url)
        etag = plain.headers["ETag"]
        assert plain.status_code == 200 and "Preference-Applied" not in plain.headers
        assert etag == r.headers["ETag"]  # the same representation, the same validator

        t0 = time.monotonic()
        held = client.get(url, headers={"Prefer": "wait=1", "If-None-Match": etag})
        assert 1.0 <= time.monotonic() - t0 < 5.0
        assert held.status_code == 200 and held.headers["ETag"] == etag
        assert held.headers["Preference-Applied"] == "wait=1"

        t0 = time.monotonic()
        changed = client.get(url, headers={"Prefer": "wait=1", "If-None-Match": '"something-else"'})
        assert time.monotonic() - t0 < 0.9 and changed.json()["status"] == "queued"

        t0 = time.monotonic()
        capped = client.get(url, headers={"Prefer": "wait=600"})
        assert 2.0 <= time.monotonic() - t0 < 6.0 and capped.headers["Preference-Applied"] == "wait=2"

        client.post(f"{url}/cancel")  # a change ends a poll at once, and so does a terminal job
        t0 = time.monotonic()
        ended = client.get(url, headers={"Prefer": "wait=2", "If-None-Match": etag})
        assert time.monotonic() - t0 < 1.5 and ended.json()["status"] == "cancelled"
        assert ended.headers["ETag"] != etag and "Retry-After" not in ended.headers
