"""CPU per status GET through the ASGI app in this process: no uvicorn, no sockets, one request at
a time (issue 13 §8). It isolates what the app itself costs from the HTTP server and the load tool,
against the framework floor (a bare FastAPI route answering the same body) in the same run.

    python -m bench.load_asgi [--requests 3000] [--profile out.prof]

Embedded settings (SQLite store, in-memory limiter), no worker. To measure another checkout, run
it with ``PYTHONPATH=<tree>/build/typecheck`` (after ``.ci/linked-tree true`` in that tree).
``--profile`` writes a cProfile of the netshrink requests (the event-loop thread only).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import netshrink.service
from bench.load import SPEC, _model
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings

Send = Any


async def drive(app: Any, path: str, n: int) -> set[int]:
    """``n`` sequential GETs of ``path`` straight into the ASGI app; the status codes seen."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench"), (b"accept", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    codes: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            codes.add(message["status"])

    for _ in range(n):
        await app(dict(scope), receive, send)
    return codes


async def measure(requests: int, profile: Path | None) -> dict[str, float]:
    out: dict[str, float] = {}
    with TemporaryDirectory(prefix="netshrink-asgi-") as tmp:
        settings = ServiceSettings(data_dir=Path(tmp), embedded_worker=False, rate_limit_requests=10**9)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
                files = {"model": ("m.onnx", _model(), "application/octet-stream")}
                job = (await c.post("/v1/jobs", files=files, data={"spec": SPEC})).json()
                body = (await c.get(f"/v1/jobs/{job['id']}")).json()
            floor = FastAPI()

            @floor.get("/v1/jobs/{job_id}")
            async def status(job_id: str) -> JSONResponse:
                return JSONResponse(body)

            path = f"/v1/jobs/{job['id']}"
            for name, target in (("netshrink", app), ("floor", floor)):
                await drive(target, path, 200)  # warm-up
                profiler = cProfile.Profile() if profile and name == "netshrink" else None
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if profiler:
                    profiler.enable()
                codes = await drive(target, path, requests)
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(str(profile))
                assert codes == {200}, codes
                out[f"{name}_cpu_ms"] = round(1000 * (time.process_time() - cpu0) / requests, 3)
                out[f"{name}_wall_ms"] = round(1000 * (time.perf_counter() - wall0) / requests, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(measure(args.requests, args.profile))
    print(f"code: {Path(netshrink.service.__file__).parent}")
    print(result, f"ratio {result['netshrink_cpu_ms'] / result['floor_cpu_ms']:.2f}x the floor")


if __name__ == "__main__":
    main()
