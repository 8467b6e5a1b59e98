"""SIGKILL `netshrink serve` (embedded mode) mid-job with three jobs queued behind, and restart it;
and SIGKILL it between a job's store write and its enqueue.

Before issue 13 the running job stayed `running` and the queued ones `queued` forever: the
in-memory broker died with the process. Now the restarted process holds the data directory's lock,
so before its worker starts it takes the running job back and enqueues the queued ones again; all
four end succeeded with exactly one artifact set each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobStatus
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
from tests.serve_process import api_processes, connections_to_each, submit_over

pytestmark = [pytest.mark.faults, pytest.mark.slow]
PICKUP_SLACK_S = 5.0  # the sibling takes the message and claims it, on 2 busy cores
QUICK_SPEC = {"prune": {"keep": 0.5}, "seed": 2, "evaluation": {"inputs": "gaussian", "samples": 64}}


def _ended(store: SQLiteJobStore, ids: list[str], log: Path) -> list[Job]:
    """Each job once it is terminal (waiting up to 240 s for each)."""
    return [
        wait_for(lambda i=i: (j := store.get(i)).status.is_terminal and j, 240, f"{i} to end", log)
        for i in ids
    ]


def _assert_one_running_three_queued(store: SQLiteJobStore, first: str, queued: list[str]) -> None:
    assert store.get(first).status is JobStatus.RUNNING
    assert [store.get(i).status for i in queued] == [JobStatus.QUEUED] * 3


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
        _assert_one_running_three_queued(store, first, queued)
        proc, base = _serve(tmp_path, data, log)
        up_s = time.monotonic() - killed
        back = wait_for(lambda: running_again(store, first, 2), 60, "job 1 to run again", log)
        recovered_s = time.monotonic() - killed
        done = _ended(store, ids, log)
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


def _serve_workers(
    data: Path, log: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Embedded ``serve --workers 2``, up once both API processes' workers have a heartbeat."""
    port = free_port()
    argv = ["--port", str(port), "--data-dir", str(data), "--log-level", "warning", "--workers", "2"]
    proc = spawn("serve_cmd", argv, {**env(data), **(extra_env or {})}, log)
    base = f"http://127.0.0.1:{port}"

    def both_up() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        return bool(httpx.get(f"{base}/v1/workers", timeout=2).json()["alive"] == 2)

    wait_for(both_up, 120, "both API processes' workers", log)
    return proc, port


def test_sigkill_of_one_of_two_embedded_api_processes_mid_job(tmp_path: Path) -> None:
    """Embedded ``serve --workers 2``: one process admits four jobs and runs the first; SIGKILL it.
    Its sibling's reaper takes the running job back once its lease expires, the supervisor's
    replacement enqueues the three queued ones at its start (its memory:// broker held their
    messages), and all four end succeeded with exactly one artifact set each."""
    data, log = tmp_path / "data", tmp_path / "serve.log"
    proc, port = _serve_workers(data, log)
    store = SQLiteJobStore(data / "jobs.sqlite3", retention_s=3600)
    try:
        model = mlp_onnx()
        serving = api_processes(proc.pid)
        held = connections_to_each(port, serving)
        admitting, conn = next(iter(held.items()))
        ids = [submit_over(conn, model, spec) for spec in (SLOW_SPEC, QUICK_SPEC, QUICK_SPEC, QUICK_SPEC)]
        for c in held.values():
            c.close()
        first, queued = ids[0], ids[1:]
        running = wait_for(
            lambda: (j := store.get(first)).progress.stage not in ("queued", "loading") and j,
            120,
            "job 1",
            log,
        )
        victim = int(str(running.lease_token).split(":")[1])  # the process holding the lease
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _assert_one_running_three_queued(store, first, queued)
        back = wait_for(lambda: running_again(store, first, 2), 60, "job 1 to run again", log)
        recovered_s = time.monotonic() - killed
        done = _ended(store, ids, log)
        total_s = time.monotonic() - killed
        now_serving = wait_for(lambda: len(p := api_processes(proc.pid)) == 2 and p, 60, "a replacement", log)
    finally:
        stop(proc)
    print(
        f"\none of two embedded API processes SIGKILLed: job 1 running again after {recovered_s:.1f} s "
        f"(bound {BOUND_S:g} s), all 4 terminal after {total_s:.1f} s"
    )
    assert victim == admitting  # the process that admitted the jobs ran them
    assert victim not in now_serving
    assert back.attempts == 2 and recovered_s <= BOUND_S + PICKUP_SLACK_S
    assert [j.attempts for j in done] == [2, 1, 1, 1]
    artifacts = ArtifactStore(data / "jobs")
    for job in done:
        assert_one_artifact_set(job, artifacts)


def test_scaling_embedded_api_processes_down_hands_the_queued_jobs_over(tmp_path: Path) -> None:
    """SIGTTOU makes the supervisor stop one of two embedded API processes gracefully. Each process
    admitted three jobs; the stopping one finishes its running job and hands its queued ones back
    (``reaper.hand_back_queued``), and its sibling's reaper sends them again: all six succeed, once
    each. Without the hand-back its queued jobs would wait for the next start of the service."""
    data, log = tmp_path / "data", tmp_path / "serve.log"
    proc, port = _serve_workers(data, log, {"NETSHRINK_DISPATCH_GRACE_S": "1"})
    store = SQLiteJobStore(data / "jobs.sqlite3", retention_s=3600)
    try:
        model = mlp_onnx()
        held = connections_to_each(port, api_processes(proc.pid))
        ids = [submit_over(c, model, s) for c in held.values() for s in (SLOW_SPEC, QUICK_SPEC, QUICK_SPEC)]
        for c in held.values():
            c.close()
        proc.send_signal(signal.SIGTTOU)
        stopped = time.monotonic()
        wait_for(lambda: len(api_processes(proc.pid)) == 1, 120, "one process to stop", log)
        done = _ended(store, ids, log)
        total_s = time.monotonic() - stopped
    finally:
        stop(proc)
    print(f"\nscaled down from two embedded API processes to one: all 6 terminal after {total_s:.1f} s")
    artifacts = ArtifactStore(data / "jobs")
    for job in done:
        assert_one_artifact_set(job, artifacts)
        assert job.attempts == 1
