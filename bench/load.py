"""Service overhead under load, loopback only: status GETs/s with p50/p99, and submit latency at N
concurrent clients, for the embedded mode (SQLite) and the Redis mode (issue 13 §8).

    python -m bench.load [--mode embedded|redis|both] [--seconds 10] [--clients 20] [--submits 200]

Each mode starts a real ``netshrink serve`` subprocess on a free loopback port with no worker
(``--no-embedded-worker``; in Redis mode nothing consumes the queue), so no job runs while it is
measured: the figures are the API's own overhead. The Redis mode uses a private key prefix and
queue on the local Redis. Latencies are per request, client side (httpx, HTTP/1.1, one connection
per client). The client runs on the same machine, so it competes with the server for the CPUs.

Targets from the issue: >= 1,000 status GETs/s with p99 < 50 ms; submit p99 < 100 ms at 20 clients.
Results: bench/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
SPEC = json.dumps({"prune": {"keep": 0.5}, "seed": 1})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.factories import mlp_onnx

    return mlp_onnx()


def start_server(mode: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")}
    env |= {"PYTHONPATH": str(ROOT), "NETSHRINK_RATE_LIMIT_REQUESTS": "100000000"}
    argv = ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    if mode == "redis":
        env["NETSHRINK_REDIS_KEY_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}:"
        argv += ["--redis-url", REDIS_URL]
    else:
        argv += ["--no-embedded-worker"]
    code = f"import sys; from netshrink.cli.serve_cmd import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not come up")


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples_s)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "max_ms": round(ms[-1], 2), "n": len(ms)}


async def status_load(base: str, job_id: str, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await c.get(f"/v1/jobs/{job_id}")
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "rps": round(len(latencies) / wall, 1),
        "errors": errors,
        **_percentiles(latencies),
    }


async def submit_load(base: str, model: bytes, clients: int, total: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            while not queue.empty():
                queue.get_nowait()
                files = {"model": ("m.onnx", model, "application/octet-stream")}
                t0 = time.perf_counter()
                r = await c.post("/v1/jobs", files=files, data={"spec": SPEC})
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "rps": round(len(latencies) / wall, 1),
        "statuses": statuses,
        **_percentiles(latencies),
    }


def run_mode(mode: str, args: argparse.Namespace, model: bytes) -> dict[str, Any]:
    with TemporaryDirectory(prefix=f"netshrink-load-{mode}-") as tmp:
        proc, base = start_server(mode, Path(tmp) / "data")
        try:
            files = {"model": ("m.onnx", model, "application/octet-stream")}
            first = httpx.post(base + "/v1/jobs", files=files, data={"spec": SPEC}, timeout=120)
            first.raise_for_status()  # also the warm-up: imports torch/onnx in the API
            job_id = first.json()["id"]
            status = asyncio.run(status_load(base, job_id, args.clients, args.seconds))
            submit = asyncio.run(submit_load(base, model, args.clients, args.submits))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {"status_get": status, "submit": submit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--submits", type=int, default=200)
    args = parser.parse_args()
    model = _model()
    modes = ["embedded", "redis"] if args.mode == "both" else [args.mode]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "args": vars(args)}
    for mode in modes:
        results[mode] = run_mode(mode, args, model)
        print(mode, json.dumps(results[mode]), flush=True)
    out = ROOT / "bench" / "results" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
