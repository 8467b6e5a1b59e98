"""A real HTTP receiver thread for webhook tests: records every request, answers scripted codes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)  # answered in order; 204 once exhausted
    event: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, n: int, timeout_s: float = 20.0) -> list[Received]:
        """Block until ``n`` requests arrived (or time out) and return them."""
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            while len(self.requests) < n and not deadline.is_set():
                self.event.wait(0.05)
                self.event.clear()
        finally:
            timer.cancel()
        return list(self.requests)


@contextmanager
def webhook_receiver(codes: list[int] | None = None) -> Iterator[Receiver]:
    """Serve on 127.0.0.1:<free port> in a daemon thread for the duration of the block."""
    receiver = Receiver(url="", codes=list(codes or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            code = receiver.codes.pop(0) if receiver.codes else 204
            self.send_response(code)
            if code in (301, 302, 307, 308):
                self.send_header("location", "http://169.254.169.254/")
            self.send_header("content-length", "0")
            self.end_headers()
            receiver.event.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
