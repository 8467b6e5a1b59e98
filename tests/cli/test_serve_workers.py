"""``cli/serve_workers.py``: uvicorn's supervisor health-checks each API process, and a process whose
app takes longer to build than the health check waits must still be kept, not killed and replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serve_process import api_processes, free_port

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK_S = 2  # the supervisor kills a process that does not answer a ping within this
SLOW_START_S = 6  # the app factory's time: three health-check timeouts
SERVE = """
import uvicorn
from netshrink.cli.serve_workers import run_workers
config = uvicorn.Config(
    "tests.cli.slow_start_app:create_app", factory=True, workers=2, host="127.0.0.1", port={port},
    timeout_worker_healthcheck={healthcheck}, log_level="info",
)
run_workers(config)
"""


@pytest.mark.slow
def test_a_process_slower_to_start_than_the_health_check_is_kept(tmp_path: Path) -> None:
    """Each API process answers the supervisor's pings from its first moment, before its app is built
    (714975c): with the app taking three health-check timeouts to build, the two first processes
    serve, and none was killed and replaced. When the answers began only after the app was built,
    every process was killed during its start-up and replaced, again and again, none ever serving."""
    port, log = free_port(), tmp_path / "serve.log"
    env = os.environ | {"NETSHRINK_TEST_SLOW_START_S": str(SLOW_START_S), "PYTHONPATH": str(ROOT)}
    code = SERVE.format(port=port, healthcheck=HEALTHCHECK_S)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while len(first := api_processes(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        answered: set[int] = set()
        close = {"Connection": "close"}  # a new connection each time: SO_REUSEPORT spreads them
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while len(answered) < 2:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                try:
                    answered.add(int(client.get("/", headers=close).text))
                except httpx.TransportError:
                    time.sleep(0.2)
        now = api_processes(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert "died" not in text, text
    assert sorted(answered) == sorted(first) == sorted(now), (first, answered, now, text)
