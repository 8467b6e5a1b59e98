"""Embedded single-machine mode: SQLite store + kombu memory:// broker + in-process worker thread,
running the same task code path as a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable

from standardwebhooks.webhooks import Webhook
from webhook_receiver import webhook_receiver  # tests/workers is on sys.path

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.celery_app import MEMORY_BROKER, EmbeddedWorker, create_celery_app, enqueue_job
from netshrink.workers.jobs import Job, JobStatus
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store import get_store
from netshrink.workers.store_sqlite import SQLiteJobStore
from netshrink.workers.webhooks import new_webhook_secret
from tests.workers.helpers import wait_terminal


def test_embedded_mode_runs_jobs_in_process(settings: WorkerSettings, make_job: Callable[..., Job]) -> None:
    secret = new_webhook_secret()
    settings = settings.model_copy(
        update={
            "webhook_dev_secret": secret,
            "webhook_allow_hosts": ["127.0.0.1"],
            "webhook_backoff_base_s": 0.05,
        }
    )
    assert settings.embedded
    app = create_celery_app(settings)
    assert app.conf.broker_url == MEMORY_BROKER
    store = get_store(settings)
    assert isinstance(store, SQLiteJobStore)
    artifacts = ArtifactStore(settings.artifacts_dir)
    with webhook_receiver(codes=[500]) as rx:
        cb = {"url": rx.url, "events": ["job.failed"]}
        first = store.create(make_job(spec={"prune": {"keep": -1.0}}, callback=cb)).job
        second = store.create(make_job(spec={"quantize": {"bits": 99}})).job
        for job in (first, second):
            artifacts.save_input(job.id, "model.onnx", b"x")
        with EmbeddedWorker(app):
            enqueue_job(app, first)
            enqueue_job(app, second)
            results = [wait_terminal(store, first.id), wait_terminal(store, second.id)]
            received = rx.wait_for(2)
    for job in results:
        assert job.status is JobStatus.FAILED and job.attempts == 1
        assert job.error is not None and job.error["type"].endswith("/invalid-spec")
    assert len(received) == 2  # a 500, then the retried delivery
    body = Webhook(secret).verify(received[1].body, received[1].headers)
    assert body["type"] == "job.failed" and body["data"]["id"] == first.id


def test_embedded_worker_restarts_and_stops_promptly(
    settings: WorkerSettings, make_job: Callable[..., Job]
) -> None:
    from kombu.transport.memory import Channel

    app = create_celery_app(settings)
    store = get_store(settings)
    for _ in range(2):
        job = store.create(make_job(spec={"prune": {"keep": 2.0}})).job
        worker = EmbeddedWorker(app).start()
        enqueue_job(app, job)
        assert wait_terminal(store, job.id).status is JobStatus.FAILED
        started = time.monotonic()
        worker.stop()
        assert time.monotonic() - started < 1.5  # the API's lifespan shutdown waits for this
    assert all(q.qsize() == 0 for q in Channel.queues.values())  # no wake-up message left behind
