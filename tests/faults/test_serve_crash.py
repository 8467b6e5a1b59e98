"""SIGKILL `netshrink serve` (embedded mode) mid-job with three jobs queued behind, and restart it;
and SIGKILL it between a job's store write and its enqueue.

Before issue 13 the running job stayed `running` and the queued ones `queued` forever: the
in-memory broker died with the process. Now the restarted process holds the data directory's lock,
so before its worker starts it takes the running job back and enqueues the queued ones again; all
four end succeeded with exactly one artifact set each.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import JobStatus
from netshrink.workers.store_sqlite import SQLiteJobStore
from tests.factories import mlp_onnx
from tests.faults.helpers import (
    BOUND_S,
    SLOW_SPEC,
    assert_one_artifact_set,
    env,
    kill_group,
    running_again,
    spawn,
    stop,
    wait_for,
)
from tests.private_redis import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]
QUICK_SPEC = {"prune": {"keep": 0.5}, "seed": 2, "evaluation": {"inputs": "gaussian", "samples": 64}}


def _serve(tmp_path: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = ["--port", str(port), "--data-dir", str(data), "--log-level", "warning"]
    proc = spawn("serve_cmd", argv, env(data), log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200

    wait_for(healthy, 120, "netshrink serve to answer /healthz", log)
    return proc, base


def test_sigkill_of_embedded_serve_with_jobs_queued_then_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    proc, base = _serve(tmp_path, data, log)
    store = SQLiteJobStore(data / "jobs.sqlite3", retention_s=3600)
    try:
        ids = []
        for spec in (SLOW_SPEC, QUICK_SPEC, QUICK_SPEC, QUICK_SPEC):
            r = httpx.post(
                f"{base}/v1/jobs",
                files={"model": ("m.onnx", mlp_onnx())},
                data={"spec": json.dumps(spec)},
                timeout=60,
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        first, queued = ids[0], ids[1:]
        wait_for(
            lambda: store.get(first).progress.stage not in ("queued", "loading"), 120, "job 1 to run", log
        )
        kill_group(proc)
        killed = time.monotonic()
        assert store.get(first).status is JobStatus.RUNNING
        assert [store.get(i).status for i in queued] == [JobStatus.QUEUED] * 3
        proc, base = _serve(tmp_path, data, log)
        up_s = time.monotonic() - killed
        back = wait_for(lambda: running_again(store, first, 2), 60, "job 1 to run again", log)
        recovered_s = time.monotonic() - killed
        done = [
            wait_for(lambda i=i: (j := store.get(i)).status.is_terminal and j, 240, f"{i} to end", log)
            for i in ids
        ]
        total_s = time.monotonic() - killed
    finally:
        stop(proc)
    print(
        f"\nserve SIGKILL: restarted process up after {up_s:.1f} s, job 1 running again after "
        f"{recovered_s:.1f} s ({recovered_s - up_s:.1f} s after start-up), "
        f"all 4 terminal after {total_s:.1f} s"
    )
    assert back.attempts == 2
    assert recovered_s - up_s <= BOUND_S  # start-up recovery is immediate; the bound holds with room
    artifacts = ArtifactStore(data / "jobs")
    assert [j.attempts for j in done] == [2, 1, 1, 1]
    for job in done:
        assert_one_artifact_set(job, artifacts)


def test_embedded_serve_killed_between_store_write_and_enqueue(tmp_path: Path) -> None:
    """Embedded mode stores a job already marked enqueued (its message goes to this process's
    memory:// broker, which dies with it). SIGKILLed right after that write, before the message is
    sent, the job is run by the next start's recovery, once, with one artifact set."""
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    port = free_port()
    argv = ["--port", str(port), "--data-dir", str(data), "--log-level", "warning"]
    proc = spawn("serve_cmd", argv, {**env(data), "NETSHRINK_FAULT_KILL_AFTER_STORE_WRITE": "1"}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200, 120, "serve", log)
        files = {"model": ("m.onnx", mlp_onnx())}
        with pytest.raises(httpx.TransportError):  # the process died mid-request: no answer at all
            httpx.post(f"{base}/v1/jobs", files=files, data={"spec": json.dumps(QUICK_SPEC)}, timeout=60)
        assert proc.wait(30) == -9, log.read_text(errors="replace")[-3000:]  # SIGKILL
        store = SQLiteJobStore(data / "jobs.sqlite3", retention_s=3600)
        (job,) = store.list(None).items
        assert job.status is JobStatus.QUEUED and job.enqueued  # one write, the flag set in it
        proc, base = _serve(tmp_path, data, log)
        done = wait_for(lambda: (j := store.get(job.id)).status.is_terminal and j, 180, "the job", log)
    finally:
        stop(proc)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert_one_artifact_set(done, ArtifactStore(data / "jobs"))
