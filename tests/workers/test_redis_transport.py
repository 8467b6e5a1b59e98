"""``workers/redis_transport.py``: a ``redis://`` broker publishes through one Redis client per
channel, on the real Redis; the messages arrive as kombu's own transport sends them. Spies call
through to kombu; nothing is mocked."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

from netshrink.workers import celery_app
from netshrink.workers.celery_app import CPU_QUEUE, broker_transport, create_celery_app, enqueue_job
from netshrink.workers.jobs import Job
from netshrink.workers.redis_transport import TRANSPORT, Transport
from netshrink.workers.settings import WorkerSettings
from tests.workers.conftest import REDIS_URL

N = 20


def test_only_a_plain_redis_url_gets_the_transport() -> None:
    assert broker_transport("redis://127.0.0.1:6379/0") == TRANSPORT
    # kombu's own set-up reads these schemes (TLS defaults, a socket path): the URL names the transport
    for url in ("rediss://127.0.0.1:6380/0", "redis+socket:///run/redis.sock", None):
        assert broker_transport(url) is None


@pytest.fixture
def client_builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(channel, asynchronous) of every ``redis.Redis`` a kombu Redis channel builds."""
    built: list[tuple[int, bool]] = []
    create = kombu_redis.Channel._create_client

    def spy(self: kombu_redis.Channel, asynchronous: bool = False) -> Any:
        built.append((id(self), asynchronous))
        return create(self, asynchronous)

    monkeypatch.setattr(kombu_redis.Channel, "_create_client", spy)
    return built


def _publish(redis_prefix: str, make_job: Callable[..., Job]) -> tuple[Any, list[str]]:
    settings = WorkerSettings(_env_file=None, redis_url=REDIS_URL, redis_key_prefix=redis_prefix)  # type: ignore[call-arg]
    app = create_celery_app(settings)
    jobs = [make_job(spec={"seed": i}) for i in range(N)]
    for job in jobs:
        enqueue_job(app, job)
    transport = type(app.connection_for_write().transport)
    app.close()
    return transport, [job.id for job in jobs]


def _queued_ids(redis_prefix: str) -> list[str]:
    """The job ids in the ``cpu`` queue's Redis list, oldest first (kombu LPUSHes; Celery's body is
    base64 JSON ``[args, kwargs, embed]``)."""
    with redis.Redis.from_url(REDIS_URL) as r:
        raw = r.lrange(f"{redis_prefix}{CPU_QUEUE}", 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in reversed(raw)]


def test_publishing_builds_one_client_per_channel(
    redis_prefix: str, make_job: Callable[..., Job], client_builds: list[tuple[int, bool]]
) -> None:
    transport, ids = _publish(redis_prefix, make_job)
    assert transport is Transport
    publishing = [channel for channel, asynchronous in client_builds if not asynchronous]
    assert len(publishing) == len(set(publishing)) == 1, client_builds  # one channel, its one client
    assert _queued_ids(redis_prefix) == ids  # every message arrived, in order, carrying its job id


def test_kombus_own_transport_builds_a_client_per_message(
    redis_prefix: str,
    make_job: Callable[..., Job],
    client_builds: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cost this transport removes, measured the same way (and so the spy above can fail)."""
    monkeypatch.setattr(celery_app, "broker_transport", lambda url: None)
    transport, ids = _publish(redis_prefix, make_job)
    assert transport is kombu_redis.Transport
    assert len([b for b in client_builds if not b[1]]) >= N  # a synchronous client per LPUSH
    assert _queued_ids(redis_prefix) == ids
