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
