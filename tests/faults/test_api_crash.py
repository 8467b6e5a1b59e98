"""The API process dies between storing a job and enqueueing it (Redis mode, a private redis-server).

Injection point: ``NETSHRINK_FAULT_KILL_AFTER_STORE_WRITE=1`` makes a real ``netshrink serve``
process SIGKILL itself right after ``store.create`` of a new job and before its Celery message is
sent (``service/routes/submit.py``); the timing is deterministic, the kill is a real SIGKILL of the
whole API process. Before this fix the job stayed ``queued`` forever: nothing had been enqueued and
the reaper only looked at running jobs. Now the stored job says ``enqueued=False``, and a real
``netshrink worker``'s reaper enqueues it within ``dispatch_grace_s + reaper_interval_s`` of its
creation; it runs once (attempts 1) and ends succeeded with exactly one artifact set.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import JobStatus
from netshrink.workers.store_redis import RedisJobStore
from tests.factories import mlp_onnx
from tests.faults.helpers import REAPER_INTERVAL_S, assert_one_artifact_set, env, spawn, stop, wait_for
from tests.private_redis import PrivateRedis, free_port

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]
DISPATCH_GRACE_S = 1.0
BOUND_S = DISPATCH_GRACE_S + REAPER_INTERVAL_S  # documented: dispatch_grace_s + reaper_interval_s
PICKUP_SLACK_S = 5.0  # the worker takes the message (BRPOP wake-up, claim) on 2 busy cores
QUICK_SPEC = {"prune": {"keep": 0.5}, "seed": 2, "evaluation": {"inputs": "gaussian", "samples": 64}}


def test_api_killed_between_store_write_and_enqueue(tmp_path: Path) -> None:
    data = tmp_path / "data"
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with PrivateRedis(tmp_path / "redis") as server:
        store = RedisJobStore(server.url, retention_s=3600)
        common = env(data, NETSHRINK_REDIS_URL=server.url, NETSHRINK_DISPATCH_GRACE_S=str(DISPATCH_GRACE_S))
        worker = spawn("worker_cmd", ["-c", "1", "-l", "WARNING"], common, worker_log)
        port = free_port()
        argv = ["--port", str(port), "--log-level", "warning"]
        api = spawn("serve_cmd", argv, {**common, "NETSHRINK_FAULT_KILL_AFTER_STORE_WRITE": "1"}, api_log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200, 120, "the API", api_log
            )
            wait_for(lambda: store.list_workers(max_age_s=30), 120, "the worker's heartbeat", worker_log)
            files = {"model": ("m.onnx", mlp_onnx()), "spec": (None, json.dumps(QUICK_SPEC))}
            with pytest.raises(httpx.TransportError):  # the API died mid-request: no answer at all
                httpx.post(f"{base}/v1/jobs", files=files, timeout=60)
            assert api.wait(30) == -9, api_log.read_text(errors="replace")[-3000:]  # SIGKILL
            (job,) = store.list(None).items
            assert job.status is JobStatus.QUEUED and not job.enqueued  # stored, never enqueued
            started = wait_for(
                lambda: (j := store.get(job.id)).status is not JobStatus.QUEUED and j,
                60,
                "the reaper to enqueue the stranded job",
                worker_log,
            )
            picked_s = (started.started_at - job.created_at).total_seconds()
            done = wait_for(
                lambda: (j := store.get(job.id)).status.is_terminal and j, 180, "the job to end", worker_log
            )
        finally:
            stop(worker)
            stop(api)
            store.close()
    print(
        f"\nAPI SIGKILL before the enqueue: job started {picked_s:.1f} s after creation (bound {BOUND_S:g} s)"
    )
    assert started.enqueued and picked_s <= BOUND_S + PICKUP_SLACK_S
    assert done.attempts == 1  # one message ran it; nothing ran it twice
    assert_one_artifact_set(done, ArtifactStore(data / "jobs"))
