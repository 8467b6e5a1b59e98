"""The processes ``bench/load.py`` measures: a real ``netshrink serve`` (embedded or Redis mode), a
real ``netshrink worker`` for the Redis mode, and the framework floor (a minimal FastAPI app under
the same uvicorn that answers a status-shaped body from memory, and a submit by parsing the
multipart form and storing nothing: the cost of HTTP + Starlette + FastAPI alone, measured in the
same run as a peer).

Every process binds 127.0.0.1 on a free port. ``tree`` runs the code of another checkout (a
``.ci/linked-tree`` layout under ``tree/build/typecheck``), so a baseline commit can be measured in
the same run as the working tree.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
_TICK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

_FLOOR = """
import json, sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
body = json.loads(sys.argv[2])
app = FastAPI()

@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})

@app.get("/v1/jobs/{job_id}")
async def status(job_id: str) -> JSONResponse:
    return JSONResponse(body)

@app.post("/v1/jobs")
async def submit(request: Request) -> JSONResponse:  # Starlette's multipart parser, nothing stored
    async with request.form() as form:
        assert "model" in form and "spec" in form
    return JSONResponse(body, status_code=202)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process and its live descendants (all threads), from
    /proc. System time is the kernel's work for it; a submit's includes allocating the inodes of its
    new directory and upload file, which costs more after mass deletions on the development
    machine's journal-less ext4 (``bench/inodes.py``)."""
    stats: dict[int, tuple[int, float, float]] = {}  # pid -> (parent pid, user s, system s)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) / _TICK, int(fields[12]) / _TICK)
    user = system = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        _, u, k = stats.get(current, (0, 0.0, 0.0))
        user, system = user + u, system + k
        todo += [child for child, (parent, _, _) in stats.items() if parent == current]
    return user, system


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process and its live descendants (``cpu_times``)."""
    return sum(cpu_times(pid))


@dataclass
class Service:
    """One measured target: ``api`` answers HTTP at ``base``; ``extra`` are its helpers (a worker)."""

    name: str
    base: str
    api: subprocess.Popen[bytes]
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)
    key: str | None = None  # the bearer key of the service's one API key (keys mode)
    redis_prefix: str | None = None  # Redis mode: every key the service wrote starts with this

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def stop(self) -> None:
        for proc in [self.api, *self.extra]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.api, *self.extra]:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.redis_prefix:  # the bench's own keys only (a unique prefix); never FLUSHALL
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for batch in _batched(client.scan_iter(match=self.redis_prefix + "*", count=1000), 500):
                client.delete(*batch)
            client.close()


def _batched(items: Iterator[T], n: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def create_key(data_dir: Path, redis_prefix: str | None) -> str:
    """A new API key in the store the service will use (so it serves in keys mode); its token."""
    from netshrink.service.auth import generate_key
    from netshrink.workers.settings import WorkerSettings
    from netshrink.workers.store import get_store

    redis = {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix} if redis_prefix else {}
    store = get_store(WorkerSettings(data_dir=data_dir, **redis))  # type: ignore[arg-type]
    try:
        token, record = generate_key("bench-load")
        store.create_api_key(record)
    finally:
        store.close()
    return token


def _env(tree: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")}
    env["PYTHONPATH"] = str(tree / "build" / "typecheck") if tree else str(ROOT)
    env["NETSHRINK_RATE_LIMIT_REQUESTS"] = "100000000"  # the limiter still runs; it never refuses
    return env | extra


def _wait_up(proc: subprocess.Popen[bytes], base: str, what: str, within_s: float = 300) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not come up")


def start_netshrink(
    name: str,
    mode: str,
    data_dir: Path,
    *,
    tree: Path | None = None,
    worker: bool = True,
    keys: bool = True,
    api_workers: int = 1,
) -> Service:
    """``netshrink serve`` in ``mode``; in Redis mode also ``netshrink worker -c 1`` (when ``worker``)
    on a private key prefix (every job-store and broker key under it), sharing ``data_dir``. With
    ``keys`` an API key is created first, so the server runs in keys mode (as deployed), else in
    dev mode (no key, loopback). ``api_workers`` > 1: ``serve --workers``."""
    port = free_port()
    cwd = tree or ROOT
    argv = ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    env = _env(tree)
    prefix = f"bench-load-{os.getpid()}-{port}:" if mode == "redis" else None
    argv += ["--workers", str(api_workers)] if api_workers > 1 else []
    if prefix:
        env |= {"NETSHRINK_REDIS_KEY_PREFIX": prefix}
        argv += ["--redis-url", REDIS_URL]
    elif not worker:
        argv += ["--no-embedded-worker"]
    data_dir.mkdir(parents=True, exist_ok=True)
    key = create_key(data_dir, prefix) if keys else None
    code = f"import sys; from netshrink.cli.serve_cmd import main; sys.exit(main({argv!r}))"
    api = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd)
    service = Service(name, f"http://127.0.0.1:{port}", api, key=key, redis_prefix=prefix)
    if mode == "redis" and worker:
        wenv = env | {"NETSHRINK_REDIS_URL": REDIS_URL, "NETSHRINK_DATA_DIR": str(data_dir)}
        wargv = ["-c", "1", "--loglevel", "WARNING"]
        wcode = f"import sys; from netshrink.cli.worker_cmd import main; sys.exit(main({wargv!r}))"
        service.extra.append(subprocess.Popen([sys.executable, "-c", wcode], env=wenv, cwd=cwd))
    try:
        _wait_up(api, service.base, f"{name} serve")
    except BaseException:
        service.stop()
        raise
    return service


def start_floor(status_body: str) -> Service:
    """The framework floor: FastAPI + uvicorn answering ``status_body`` with no store, auth or limit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR, str(port), status_body], env=_env(None), cwd=ROOT)
    service = Service("floor", f"http://127.0.0.1:{port}", proc)
    _wait_up(proc, service.base, "floor app")
    return service


__all__ = [
    "REDIS_URL",
    "ROOT",
    "Service",
    "cpu_s",
    "cpu_times",
    "create_key",
    "free_port",
    "start_floor",
    "start_netshrink",
]
