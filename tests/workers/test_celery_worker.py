"""A REAL Celery worker (solo pool, in a thread) on the REAL Redis broker; never task_always_eager.

Every test gets its own Redis key prefix, which kombu also applies to the broker keys
(``global_keyprefix``), so queues are isolated from other workers on the same server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from standardwebhooks.webhooks import Webhook
from webhook_receiver import webhook_receiver  # tests/workers is on sys.path

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.celery_app import create_celery_app, enqueue_job, queue_for
from netshrink.workers.jobs import ApiKeyRecord, Job, JobStatus, JobStore
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store import get_store
from netshrink.workers.store_redis import RedisJobStore
from netshrink.workers.webhooks import new_webhook_secret
from tests.factories import mlp_onnx
from tests.workers.helpers import wait_terminal

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUES = ["cpu", "gpu", "webhooks"]


@pytest.fixture
def redis_settings(tmp_path: Path, redis_prefix: str) -> WorkerSettings:
    return WorkerSettings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=REDIS_URL,
        redis_key_prefix=redis_prefix,
        data_dir=tmp_path / "data",
        job_time_limit_s=120,
        job_soft_time_limit_s=100,
        visibility_timeout_s=300,
        webhook_allow_hosts=["127.0.0.1"],
        webhook_backoff_base_s=0.05,
        webhook_max_retries=3,
        webhook_progress_interval_s=0.0,
    )


@pytest.fixture
def app(redis_settings: WorkerSettings) -> Celery:
    return create_celery_app(redis_settings)


@pytest.fixture
def rstore(redis_settings: WorkerSettings) -> Iterator[JobStore]:
    store = get_store(redis_settings)
    assert isinstance(store, RedisJobStore)
    yield store
    store.close()


def test_app_configuration(app: Celery, redis_settings: WorkerSettings) -> None:
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.task_ignore_result
    assert conf.result_backend is None and conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert {"netshrink.compress", "netshrink.analyze", "netshrink.deliver_webhook"} <= set(app.tasks)


def test_cuda_jobs_are_routed_to_the_gpu_queue(
    app: Celery, rstore: JobStore, redis_settings: WorkerSettings, make_job: Callable[..., Job]
) -> None:
    gpu = make_job(spec={"device": "cuda", "seed": 1})
    cpu = make_job(spec={"device": "auto", "seed": 1})
    assert (queue_for(gpu), queue_for(cpu)) == ("gpu", "cpu")
    enqueue_job(app, gpu)
    enqueue_job(app, gpu)
    enqueue_job(app, cpu)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        assert r.llen(f"{redis_settings.redis_key_prefix}gpu") == 2
        assert r.llen(f"{redis_settings.redis_key_prefix}cpu") == 1
    finally:
        r.close()


def test_real_worker_runs_jobs_and_delivers_signed_webhooks_with_retries(
    app: Celery, rstore: JobStore, redis_settings: WorkerSettings, make_job: Callable[..., Job]
) -> None:
    secret = new_webhook_secret()
    rstore.create_api_key(ApiKeyRecord(id="key_1", key_hash="f" * 64, webhook_secret=secret))
    artifacts = ArtifactStore(redis_settings.artifacts_dir)
    with webhook_receiver(codes=[503]) as rx:  # the first delivery fails and must be retried
        cb = {"url": rx.url, "events": ["job.started", "job.failed"]}
        bad = rstore.create(make_job(owner="key_1", spec={"prune": {"keep": 9.0}}, callback=cb)).job
        artifacts.save_input(bad.id, "model.onnx", b"x")
        spec = {"kind": "analyze", "seed": 2}  # kind analyze takes no evaluation block (2026-12-05)
        good = rstore.create(make_job(owner="key_1", kind="analyze", spec=spec)).job
        artifacts.save_input(good.id, "model.onnx", mlp_onnx())
        enqueue_job(app, bad)
        enqueue_job(app, good)
        with start_worker(app, pool="solo", perform_ping_check=False, queues=QUEUES, shutdown_timeout=60):
            failed = wait_terminal(rstore, bad.id)
            done = wait_terminal(rstore, good.id)
            received = rx.wait_for(3)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error["type"].endswith("/invalid-spec") and failed.attempts == 1
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert "report.json" in artifacts.list(good.id)
    bodies = [Webhook(secret).verify(r.body, r.headers) for r in received]
    assert sorted(b["type"] for b in bodies) == ["job.failed", "job.started", "job.started"]
    ids = [
        r.headers["webhook-id"] for r, b in zip(received, bodies, strict=True) if b["type"] == "job.started"
    ]
    assert ids[0] == ids[1]  # the retry re-sent the same message id
