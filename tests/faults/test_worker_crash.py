"""SIGKILL a `netshrink worker`'s whole process group mid-job (Redis mode, a private redis-server).

Two workers listen; the whole process group of the one that runs the job (main process and pool
child) is SIGKILLed. Before issue 13 the job stayed `running` for the broker's whole visibility
timeout (an hour). Now its lease runs out and the reaper of the surviving worker requeues it within
the documented bound, 2 × lease_heartbeat_s + reaper_interval_s, and it ends with exactly one
artifact set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.celery_app import create_celery_app, enqueue_job
from netshrink.workers.jobs import InputInfo, Job, JobStatus
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_redis import RedisJobStore
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
from tests.private_redis import PrivateRedis

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]
PICKUP_SLACK_S = 5.0  # a free worker takes the requeued message (BRPOP wake-up, claim) on 2 busy cores


def test_sigkill_of_the_whole_worker_process_group_mid_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with PrivateRedis(tmp_path / "redis") as server:
        settings = WorkerSettings(_env_file=None, redis_url=server.url, data_dir=data)  # type: ignore[call-arg]
        store = RedisJobStore(server.url, retention_s=3600)
        artifacts = ArtifactStore(settings.artifacts_dir)
        job = Job(
            spec=SLOW_SPEC, input=InputInfo(filename="m.onnx", format="onnx", sha256="0" * 64, size_bytes=1)
        )
        store.create(job)
        artifacts.save_input(job.id, "model.onnx", mlp_onnx())
        environ = env(data, NETSHRINK_REDIS_URL=server.url)
        argv = ["-c", "1", "-l", "WARNING"]
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        workers = [spawn("worker_cmd", argv, environ, log) for log in logs]
        try:
            wait_for(lambda: len(store.list_workers(max_age_s=30)) == 2, 120, "both heartbeats", logs[1])
            time.sleep(3.0)  # both consumers are listening
            enqueue_job(create_celery_app(settings), job)
            running = wait_for(
                lambda: (j := store.get(job.id)).status is JobStatus.RUNNING and j,
                120,
                "a worker to start the job",
            )
            pid = int(str(running.lease_token).split(":")[1])  # the pool child holding the lease
            victim = next(w for w in workers if os.getpgid(pid) == w.pid)
            kill_group(victim)
            killed = time.monotonic()
            survivor_log = logs[1 - workers.index(victim)]
            back = wait_for(lambda: running_again(store, job.id, 2), 60, "the job to run again", survivor_log)
            recovered_s = time.monotonic() - killed
            done = wait_for(
                lambda: (j := store.get(job.id)).status.is_terminal and j, 180, "the job to end", survivor_log
            )
            total_s = time.monotonic() - killed
        finally:
            for proc in workers:
                stop(proc)
            store.close()
    print(
        f"\nworker group SIGKILL: running again after {recovered_s:.1f} s (bound {BOUND_S:g} s), "
        f"terminal after {total_s:.1f} s"
    )
    assert back.attempts == 2
    assert recovered_s <= BOUND_S + PICKUP_SLACK_S
    assert done.attempts == 2
    assert_one_artifact_set(done, artifacts)
