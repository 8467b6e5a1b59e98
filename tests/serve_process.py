"""A real ``netshrink serve`` (embedded mode) in a child process, for tests that need the whole
service over HTTP: free port, private data dir, no inherited ``NETSHRINK_*`` settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def embedded_serve(
    data_dir: Path, *, up_within_s: float = 90, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base URL, process) once ``/healthz`` answers 200; SIGTERM and wait on the way out.
    ``args`` and ``env`` add flags and ``NETSHRINK_*`` settings (e.g. Redis mode).

    The caller may assert on ``proc.wait`` itself (after the block, ``proc.returncode`` is set)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")} | dict(env or {})
    env["PYTHONPATH"] = str(ROOT)
    argv = ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning", *args]
    code = f"import sys; from netshrink.cli.serve_cmd import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + up_within_s
        while True:
            assert proc.poll() is None, "serve exited early"
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
