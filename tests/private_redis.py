"""A private ``redis-server`` on a free port, started and killed by the test that owns it.

Fault tests SIGKILL it and restart it on the same port and directory (append-only file with
``appendfsync always``, so what Redis acknowledged survives the kill). Never the shared
``127.0.0.1:6379`` that the other Redis tests use.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """``start()``, ``kill()`` (SIGKILL), ``start()`` again: same port, same data directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> PrivateRedis:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (make redis)"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        argv += ["--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (what a crash or the OOM killer does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
