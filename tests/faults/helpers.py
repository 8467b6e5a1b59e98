"""Shared pieces of the fault tests: real processes in their own process groups, short recovery
intervals, and the end-state check (terminal, exactly one artifact set)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobStatus, JobStore

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Short intervals so the tests recover in seconds; the documented bound is computed from them.
LEASE_HEARTBEAT_S, REAPER_INTERVAL_S = 1.0, 2.0
BOUND_S = 2 * LEASE_HEARTBEAT_S + REAPER_INTERVAL_S  # 4 s: lease (2 heartbeats) + one reaper period
FAST = {
    "NETSHRINK_LEASE_HEARTBEAT_S": str(LEASE_HEARTBEAT_S),
    "NETSHRINK_REAPER_INTERVAL_S": str(REAPER_INTERVAL_S),
    "NETSHRINK_DEVICE": "cpu",
    "NETSHRINK_WEBHOOK_PROGRESS_INTERVAL_S": "0",
}
# A job of a few seconds on one core (64 best-of draws, 4096 evaluation samples): long enough to
# be killed mid-run.
SLOW_SPEC = {
    "prune": {"keep": 0.5},
    "draws": 64,
    "seed": 1,
    "evaluation": {"inputs": "gaussian", "samples": 4096},
}


def env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no inherited NETSHRINK_*) for a netshrink subprocess."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")}
    return {**base, **FAST, "NETSHRINK_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


def spawn(module: str, argv: list[str], environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -c 'from netshrink.cli.<module> import main; main(argv)'`` in a new process group."""
    code = f"import sys; from netshrink.cli.{module} import main; sys.exit(main({argv!r}))"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env=environ,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches the pool children too
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and every child in its group (no cleanup runs anywhere)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            kill_group(proc)
    else:
        kill_group(proc)  # reap any orphaned pool child


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, log: Path | None = None) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` (and the log tail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:  # the store may be down on purpose; keep polling
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{tail}")
        time.sleep(0.05)


def assert_one_artifact_set(job: Job, artifacts: ArtifactStore) -> None:
    """Succeeded, and the job's output directory holds exactly the listed artifacts, each once,
    each with the listed size and sha256 (no leftover or duplicate file from a crashed attempt)."""
    assert job.status is JobStatus.SUCCEEDED, job
    names = [a.name for a in job.artifacts]
    assert len(names) == len(set(names)) and {"model.onnx", "report.json", "report.html"} <= set(names)
    out = artifacts.job_dir(job.id) / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for info in job.artifacts:
        data = (out / info.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (info.size_bytes, info.sha256)


def running_again(store: JobStore, job_id: str, attempts: int) -> Job | None:
    job = store.get(job_id)
    ok = job.attempts >= attempts and (job.status is JobStatus.RUNNING or job.status.is_terminal)
    return job if ok else None
