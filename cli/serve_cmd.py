"""``netshrink serve``: run the HTTP API with uvicorn.

Without ``NETSHRINK_REDIS_URL`` this is the embedded single-machine mode: the API process also
runs the Celery worker thread (``service.main.lifespan``) and, here, the housekeeper thread
(heartbeat for ``GET /v1/workers`` + retention cleanup). Flags override the environment.
Ref: docs/api.md "Auth and limits" (dev mode on loopback), README quick start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netshrink.cli.threads import limit_threads

log = logging.getLogger("netshrink.serve")
HEALTHCHECK_TIMEOUT_S = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default NETSHRINK_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default NETSHRINK_PORT or 8000)")
    parser.add_argument("--data-dir", type=Path, default=None, help="uploads, artifacts, SQLite store")
    parser.add_argument("--redis-url", default=None, help="use Redis + separate workers (no embedded worker)")
    parser.add_argument("--no-embedded-worker", action="store_true", help="embedded mode without the worker")
    parser.add_argument("--auth-disabled", action="store_true", help="allow a non-loopback bind without keys")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes (uvicorn's supervisor starts them; embedded, each runs its own worker thread)",
    )


def serve(
    host: str | None = None,
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    redis_url: str | None = None,
    embedded_worker: bool = True,
    auth_disabled: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> int:
    """Serve until interrupted; return the exit code.

    ``workers`` > 1 runs that many API processes, each on its own ``SO_REUSEPORT`` socket
    (``cli/serve_workers.py``: uvicorn's supervisor; each builds its app from the environment, so
    the flags are exported to it first). In embedded mode each process also runs its own worker
    thread on its own memory:// broker and runs the jobs it admitted; they share the SQLite store
    and the data directory (the lock, start-up recovery and hand-back: ``workers/reaper.py``), and
    each enforces the rate limit on its own.
    """
    import uvicorn

    from netshrink.service.main import create_app
    from netshrink.service.settings import ServiceSettings

    overrides: dict[str, Any] = {"embedded_worker": embedded_worker}
    for key, value in (("host", host), ("port", port), ("data_dir", data_dir), ("redis_url", redis_url)):
        if value is not None:
            overrides[key] = value
    if auth_disabled:
        overrides["auth_disabled"] = True
    settings = ServiceSettings(**overrides)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runs_jobs = settings.embedded and settings.embedded_worker
    if runs_jobs:
        limit_threads(settings.torch_threads)
        log.info("embedded mode: SQLite store and worker thread under %s", settings.data_dir)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler that
    # was installed before it; a no-op one lets us finish cleanup and exit 0 like a normal stop.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        if workers > 1:
            from netshrink.cli.serve_workers import run_workers

            os.environ.update({f"NETSHRINK_{k.upper()}": str(v) for k, v in overrides.items()})
            config = uvicorn.Config(
                "netshrink.service.main:create_app",
                factory=True,
                workers=workers,
                host=settings.host,
                port=settings.port,
                log_level=log_level,
                # uvicorn's 5 s: a process still being spawned on a loaded machine missed it and was
                # killed and replaced (cli/serve_workers.py). A hung one is replaced after 30 s.
                timeout_worker_healthcheck=HEALTHCHECK_TIMEOUT_S,
            )
            try:
                run_workers(config, threads=settings.torch_threads if runs_jobs else None)
            except OSError as exc:  # the port is taken
                log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
                return 1
        else:
            from netshrink.cli.serve_workers import check_port_free

            try:  # before the app loads: a taken port exited 3 after start-up (found by probing)
                check_port_free(settings.host, settings.port)
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
                return 1
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def run(args: argparse.Namespace) -> int:
    return serve(
        args.host,
        args.port,
        data_dir=args.data_dir,
        redis_url=args.redis_url,
        embedded_worker=not args.no_embedded_worker,
        auth_disabled=args.auth_disabled,
        log_level=args.log_level,
        workers=args.workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netshrink serve")
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["add_arguments", "main", "run", "serve"]
