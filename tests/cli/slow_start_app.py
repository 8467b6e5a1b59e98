"""An ASGI app factory that takes ``NETSHRINK_TEST_SLOW_START_S`` seconds to build: an API process
whose app import is slow (torch on a loaded machine), for ``test_serve_workers.py``."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
Asgi = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


def create_app() -> Asgi:
    time.sleep(float(os.environ["NETSHRINK_TEST_SLOW_START_S"]))

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})

    return app
