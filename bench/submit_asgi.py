"""CPU per submit through the ASGI app in this process: no uvicorn, no sockets, one request at a
time (issue 13 §8). The same small ONNX model and spec as ``bench/load.py``'s submits, in keys mode
(one API key, sent as ``Authorization``), against the framework floor (a bare FastAPI route parsing
the same multipart form and storing nothing) in the same run.

    python -m bench.submit_asgi [--requests 300] [--profile out.prof] [--gc]

Embedded settings (SQLite store, in-memory limiter), no worker: each 202 stores the upload and the
job and sends the broker message, and nothing consumes it. CPU is ``time.process_time`` (user + sys
of every thread of this process), which moves much less than wall time on a shared machine; the
requests run in ``--batches`` and the cheapest batch is reported too (other load only ever adds).
``--gc`` times every garbage collection during the netshrink submits (``gc.callbacks``) and prints,
per generation, how many ran and the longest, with the tracked objects before and after: a
collection is a stall for every request in flight (issue 13 §8). ``--profile`` writes a cProfile of
the netshrink submits with the worker-thread hops (``anyio.to_thread.run_sync``) profiled too,
merged into one file. To measure another checkout, run it with ``PYTHONPATH=<tree>/build/typecheck``
(after ``.ci/linked-tree true`` in that tree).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import netshrink.service
from bench.load import _model, multipart
from bench.load_servers import create_key
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings


async def drive(app: Any, body: bytes, ctype: str, key: str | None, n: int) -> set[int]:
    """``n`` sequential submits of ``body`` straight into the ASGI app; the status codes seen."""
    headers = [
        (b"host", b"bench"),
        (b"accept", b"application/json"),
        (b"content-type", ctype.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    codes: set[int] = set()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            codes.add(message["status"])

    for _ in range(n):
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the app only asks again after the body while it waits for a disconnect
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(dict(scope), receive, send)
    return codes


def floor_app() -> FastAPI:
    """``bench/load_servers.py``'s floor submit: Starlette's multipart parser, nothing stored."""
    floor = FastAPI()

    @floor.post("/v1/jobs")
    async def submit(request: Request) -> JSONResponse:
        async with request.form() as form:
            assert "model" in form and "spec" in form
        return JSONResponse({"id": "job"}, status_code=202)

    return floor


def profile_threads(thread_profiler: cProfile.Profile) -> Callable[[], None]:
    """Profile every function run through ``anyio.to_thread.run_sync`` (one at a time here) with
    ``thread_profiler``; returns the undo."""
    original = anyio.to_thread.run_sync

    async def run_sync(func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        def profiled(*a: Any) -> Any:
            thread_profiler.enable()
            try:
                return func(*a)
            finally:
                thread_profiler.disable()

        return await original(profiled, *args, **kw)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]

    def undo() -> None:
        anyio.to_thread.run_sync = original

    return undo


def _batches(requests: int, batches: int) -> list[int]:
    """``requests`` split into ``batches`` near-equal sizes (each at least 1)."""
    n = max(1, min(batches, requests))
    return [requests // n + (1 if i < requests % n else 0) for i in range(n)]


class GcTimer:
    """Every garbage collection's generation and milliseconds while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, float]] = []  # (generation, ms)
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.runs.append((int(info["generation"]), 1000 * (time.perf_counter() - self._start)))

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for gen in (0, 1, 2):
            ms = [t for g, t in self.runs if g == gen]
            out[f"gc_gen{gen}_runs"] = len(ms)
            out[f"gc_gen{gen}_max_ms"] = round(max(ms, default=0.0), 2)
        return out


async def measure(
    requests: int, profile: Path | None, batches: int = 1, gc_timer: GcTimer | None = None
) -> dict[str, float]:
    out: dict[str, float] = {}
    body, ctype = multipart(_model())
    with TemporaryDirectory(prefix="netshrink-submit-asgi-") as tmp:
        key = create_key(Path(tmp), None)
        settings = ServiceSettings(data_dir=Path(tmp), embedded_worker=False, rate_limit_requests=10**9)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            for name, target, token in (("netshrink", app, key), ("floor", floor_app(), None)):
                await drive(target, body, ctype, token, 30)  # warm-up
                main_prof = cProfile.Profile(time.thread_time) if profile and name == "netshrink" else None
                thread_prof = cProfile.Profile(time.thread_time) if main_prof else None
                undo = profile_threads(thread_prof) if thread_prof else None
                timed = gc_timer is not None and name == "netshrink"
                if timed:
                    out["gc_tracked_before"] = len(gc.get_objects())
                    gc.callbacks.append(gc_timer)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if main_prof:
                    main_prof.enable()
                codes, batch_ms = set(), []
                for size in _batches(requests, batches):
                    c0 = time.process_time()
                    codes |= await drive(target, body, ctype, token, size)
                    batch_ms.append(1000 * (time.process_time() - c0) / size)
                if main_prof and thread_prof and undo and profile:
                    main_prof.disable()
                    undo()
                    stats = pstats.Stats(main_prof)
                    stats.add(thread_prof)
                    stats.dump_stats(str(profile))
                if timed:
                    gc.callbacks.remove(gc_timer)
                    out |= gc_timer.summary()
                    out["gc_tracked_after"] = len(gc.get_objects())
                assert codes == {202}, codes
                out[f"{name}_cpu_ms"] = round(1000 * (time.process_time() - cpu0) / requests, 3)
                out[f"{name}_cpu_ms_min_batch"] = round(min(batch_ms), 3)
                out[f"{name}_wall_ms"] = round(1000 * (time.perf_counter() - wall0) / requests, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10, help="also report the cheapest batch")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--gc", action="store_true", help="time the garbage collections (gc.callbacks)")
    args = parser.parse_args()
    timer = GcTimer() if args.gc else None
    result = asyncio.run(measure(args.requests, args.profile, args.batches, timer))
    print(f"code: {Path(netshrink.service.__file__).parent}")
    print(result, f"ratio {result['netshrink_cpu_ms'] / result['floor_cpu_ms']:.2f}x the floor")


if __name__ == "__main__":
    main()
