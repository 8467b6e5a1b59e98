"""SIGKILL a private redis-server mid-job, restart it (append-only file, ``appendfsync always``).

Before issue 13 the progress write failed, ``mark_failed`` failed too, the message was consumed,
and the job stayed `running` forever. Now the worker's store calls retry through the outage for
``store_retry_s``; an outage longer than that ends the execution without a result (never as a
failed job), its lease runs out, and the reaper requeues it once Redis is back. Both cases end
succeeded with exactly one artifact set.
"""

from __future__ import annotations

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
    running_again,
    spawn,
    stop,
    wait_for,
)
from tests.private_redis import PrivateRedis

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]
RECONNECT_SLACK_S = 10.0  # Celery's consumer retries the broker connection with a 2 s step


@pytest.mark.parametrize(
    ("store_retry_s", "outage_s"),
    [pytest.param(30.0, 5.0, id="ridden-out"), pytest.param(1.0, 5.0, id="reaped")],
)
def test_sigkill_of_redis_mid_job_then_restart(tmp_path: Path, store_retry_s: float, outage_s: float) -> None:
    data = tmp_path / "data"
    log = tmp_path / "worker.log"
    server = PrivateRedis(tmp_path / "redis").start()
    settings = WorkerSettings(_env_file=None, redis_url=server.url, data_dir=data)  # type: ignore[call-arg]
    store = RedisJobStore(server.url, retention_s=3600, retry_s=60.0)  # the test's own view rides it out
    environ = env(data, NETSHRINK_REDIS_URL=server.url, NETSHRINK_STORE_RETRY_S=str(store_retry_s))
    worker = spawn("worker_cmd", ["-c", "1", "-l", "WARNING"], environ, log)
    try:
        wait_for(lambda: store.list_workers(max_age_s=30), 120, "the worker's heartbeat", log)
        job = Job(
            spec=SLOW_SPEC, input=InputInfo(filename="m.onnx", format="onnx", sha256="0" * 64, size_bytes=1)
        )
        store.create(job)
        ArtifactStore(settings.artifacts_dir).save_input(job.id, "model.onnx", mlp_onnx())
        enqueue_job(create_celery_app(settings), job)
        wait_for(
            lambda: store.get(job.id).progress.stage not in ("queued", "loading"), 120, "the job to run", log
        )
        server.kill()
        time.sleep(outage_s)
        server.start()
        back = time.monotonic()
        attempts = 1 if store_retry_s > outage_s else 2  # ridden out, or reaped and run again
        again = wait_for(lambda: running_again(store, job.id, attempts), 120, "the job to run again", log)
        recovered_s = time.monotonic() - back
        done = wait_for(lambda: (j := store.get(job.id)).status.is_terminal and j, 240, "the job to end", log)
        total_s = time.monotonic() - back
    finally:
        stop(worker)
        store.close()
        server.kill()
    print(
        f"\nredis SIGKILL ({outage_s:g} s outage, store_retry_s={store_retry_s:g}): running again "
        f"{recovered_s:.1f} s and terminal {total_s:.1f} s after Redis came back, attempts={done.attempts}"
    )
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert_one_artifact_set(done, ArtifactStore(settings.artifacts_dir))
    assert done.attempts == attempts
    # Redis back -> the lease expires, the reaper (every reaper_interval_s) requeues, Celery's
    # consumer reconnects and takes the message: within the bound plus the reconnection.
    assert again.status is not JobStatus.QUEUED and recovered_s <= BOUND_S + RECONNECT_SLACK_S
