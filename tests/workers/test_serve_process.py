"""``netshrink serve`` in embedded mode as a real process: health, the embedded worker's heartbeat
on ``GET /v1/workers``, a job run to completion by the in-process worker, and a clean SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.serve_process import embedded_serve


@pytest.mark.slow
def test_serve_embedded_mode(tmp_path: Path) -> None:
    with embedded_serve(tmp_path / "data", up_within_s=60) as (base, proc):
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 60
            workers = client.get("/v1/workers").json()
            assert workers["alive"] >= 1, workers
            spec = {"prune": {"keep": 0.5}, "seed": 1, "evaluation": {"inputs": "gaussian", "samples": 16}}
            from tests.factories import mlp_onnx

            files = {"model": ("m.onnx", mlp_onnx(), "application/octet-stream")}
            created = client.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline + 60, job
                time.sleep(0.2)
            assert job["status"] == "succeeded", job
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0  # a clean shutdown on SIGTERM
