"""A real uvicorn server on a free 127.0.0.1 port, in a thread of the test process (real sockets)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import uvicorn

from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings


@contextmanager
def serve_app(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto", start_timeout_s: float = 60.0
) -> Iterator[str]:
    """Serve ``app`` until the block ends; yield its base URL. Fails if the server does not start."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def embedded_service(data_dir: Path, **overrides: Any) -> Iterator[str]:
    """The real app (embedded Celery worker, SQLite store) in uvicorn on a free port.

    kombu's ``memory://`` queues are process-global: two of these alive at once in one test process
    would take each other's job messages (and not find those jobs in their own store). Keep one alive
    at a time (a module-scoped one ends with its module).
    """
    values: dict[str, Any] = dict(
        data_dir=data_dir,
        redis_url=None,
        embedded_worker=True,
        host="127.0.0.1",
        auth_disabled=False,
        rate_limit_requests=1000,
        prefer_wait_max_s=60.0,
        retry_after_s=1,
    )
    settings = ServiceSettings(**{**values, **overrides})
    with serve_app(create_app(settings)) as url:
        yield url
