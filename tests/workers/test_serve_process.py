"""``netshrink serve`` in embedded mode as a real process: health, the embedded worker's heartbeat
on ``GET /v1/workers``, a job run to completion by the in-process worker, and a clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_embedded_mode(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = ["--port", str(port), "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    code = f"import sys; from netshrink.cli.serve_cmd import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, "serve exited early"
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
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
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
