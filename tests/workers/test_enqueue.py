"""``enqueue_job``'s message: what Celery's default ``send_task`` sends, without a queue declaration
per message (issue 13 §8). Spies call through to kombu; nothing is mocked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu.messaging import Producer

from netshrink.workers.celery_app import TASK_ANALYZE, TASK_COMPRESS, create_celery_app, enqueue_job
from netshrink.workers.jobs import Job
from netshrink.workers.settings import WorkerSettings

Published = list[tuple[Any, dict[str, Any]]]


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> tuple[Published, list[Any]]:
    """(every ``Producer.publish`` call's body and keywords, every ``maybe_declare``d entity)."""
    published: Published = []
    declared: list[Any] = []
    publish, maybe_declare = Producer.publish, Producer.maybe_declare

    def spy_publish(self: Producer, body: Any, **kw: Any) -> Any:
        published.append((body, kw))
        return publish(self, body, **kw)

    def spy_declare(self: Producer, entity: Any, retry: bool = False, **kw: Any) -> Any:
        declared.append(entity)
        return maybe_declare(self, entity, retry, **kw)

    monkeypatch.setattr(Producer, "publish", spy_publish)
    monkeypatch.setattr(Producer, "maybe_declare", spy_declare)
    return published, declared


def test_enqueue_declares_no_queue_and_sends_celerys_default_message(
    settings: WorkerSettings, make_job: Callable[..., Job], spied: tuple[Published, list[Any]]
) -> None:
    published, declared = spied
    app = create_celery_app(settings)
    job = make_job(spec={"device": "cuda", "seed": 1})
    enqueue_job(app, job)
    assert declared == []  # the old enqueue declared the queue on every message
    app.send_task(TASK_COMPRESS, args=[job.id], queue="gpu")  # Celery's default, for comparison
    assert [e.name for e in declared] == ["gpu"]
    (body, kw), (default_body, default_kw) = published
    assert body == default_body and body[0] == [job.id]  # the message carries only the job id
    assert kw["declare"] == [] and default_kw["declare"]
    for key in ("exchange", "routing_key", "serializer", "delivery_mode"):
        assert kw[key] == default_kw[key]
    assert (kw["exchange"], kw["routing_key"]) == ("", "gpu")  # the anonymous exchange: no binding read
    ids = ("id", "root_id")
    headers = {k: v for k, v in kw["headers"].items() if k not in ids}
    assert headers == {k: v for k, v in default_kw["headers"].items() if k not in ids}
    assert headers["argsrepr"] == repr([job.id]) and headers["kwargsrepr"] == "{}"


def test_the_message_reaches_its_queue(settings: WorkerSettings, make_job: Callable[..., Job]) -> None:
    app = create_celery_app(settings)
    job = make_job(kind="analyze", spec={"kind": "analyze", "seed": 1})
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("cpu", no_ack=True)
        queue.clear()  # memory:// queues are process-wide: drop what other tests left
        enqueue_job(app, job)
        message = queue.get(timeout=5)
        queue.close()
    assert message.headers["task"] == TASK_ANALYZE and message.payload[0] == [job.id]
