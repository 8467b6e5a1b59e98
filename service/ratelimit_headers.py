"""``RateLimit-*`` headers on every authenticated response (docs/api.md "Limits").

``deps.get_principal`` admits a request and leaves its headers in the request's state; FastAPI
merges a dependency's headers only into responses it builds itself, so a route that returns its own
``Response`` (a job with ``Location``, an artifact file, a 204) and every problem raised after the
admission went without them (found by probing, 2026-12-05: submit, report, artifacts, cancel, DELETE
and 404/409/422 answers, all counted against the limit). This pure ASGI wrapper adds them at
``http.response.start`` unless the response carries its own (a 429 states the window it refused)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE_KEY = "ratelimit_headers"


class RateLimitHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get(STATE_KEY)
                if extra:
                    headers = list(message.get("headers", []))
                    present = {name.lower() for name, _ in headers}
                    for name, value in extra.items():
                        key = name.lower().encode("latin-1")
                        if key not in present:
                            headers.append((key, value.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_limits)


__all__ = ["STATE_KEY", "RateLimitHeaders"]
