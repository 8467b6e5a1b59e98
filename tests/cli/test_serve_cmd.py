"""``netshrink serve --workers N``: several API processes in Redis mode; refused in embedded mode."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from netshrink.cli.serve_cmd import main
from tests.conftest import REDIS_URL
from tests.factories import mlp_onnx
from tests.serve_process import embedded_serve, free_port


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def test_workers_are_refused_in_embedded_mode(tmp_path: Path) -> None:
    assert main(["--workers", "2", "--data-dir", str(tmp_path), "--port", str(free_port())]) == 2


@pytest.mark.slow
@pytest.mark.redis
def test_workers_serve_one_port_from_several_processes(tmp_path: Path, redis_prefix: str) -> None:
    args = ["--redis-url", REDIS_URL, "--workers", "2"]
    env = {"NETSHRINK_REDIS_KEY_PREFIX": redis_prefix}
    with embedded_serve(tmp_path / "data", args=args, env=env, up_within_s=120) as (base, proc):
        serving = [p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(serving) == 2, serving
        spec = json.dumps({"prune": {"keep": 0.5}, "seed": 1})
        files = {"model": ("m.onnx", mlp_onnx(), "application/octet-stream")}
        with httpx.Client(base_url=base, timeout=30) as client:
            created = client.post("/v1/jobs", files=files, data={"spec": spec})
            assert created.status_code == 202, created.text
            for _ in range(20):  # new connections land on either process; each reads the shared store
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    assert fresh.get(created.headers["location"]).json()["status"] == "queued"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not any(Path(f"/proc/{p}").exists() for p in serving)
