"""The JobStore contract on the real Redis, plus Redis-specific guarantees (key TTLs, prefix)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from jobstore_contract import StoreContract  # tests/workers is on sys.path (rootdir-relative import)

from netshrink.workers.jobs import Job
from netshrink.workers.store_redis import RedisJobStore

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_store: RedisJobStore) -> RedisJobStore:
    return redis_store


class TestRedisStore(StoreContract):
    pass


def test_idempotency_key_ttl_is_at_least_24h(
    redis_store: RedisJobStore, make_job: Callable[..., Job]
) -> None:
    job = redis_store.create(make_job(owner="k1"), idempotency_key="ttl", fingerprint="fp").job
    ttl = redis_store.r.ttl(f"{redis_store.prefix}idem:k1:ttl")
    assert 24 * 3600 - 5 <= int(ttl) <= 24 * 3600  # type: ignore[arg-type]
    assert redis_store.get(job.id).idempotency_key == "ttl"


def test_every_key_is_under_the_prefix(redis_store: RedisJobStore, make_job: Callable[..., Job]) -> None:
    job = redis_store.create(make_job(owner="k1"), idempotency_key="p", fingerprint="fp").job
    redis_store.mark_failed(job.id, {"type": "t"})
    keys = list(redis_store.r.scan_iter(match=f"{redis_store.prefix}*"))
    assert {str(k).removeprefix(redis_store.prefix).split(":", 1)[0] for k in keys} == {
        "job",
        "jobs",
        "owner",
        "status",
        "expires",
        "idem",
    }
