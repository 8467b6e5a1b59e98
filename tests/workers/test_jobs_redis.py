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


def test_the_report_has_its_own_key_and_an_old_job_keeps_its_report(
    redis_store: RedisJobStore, make_job: Callable[..., Job]
) -> None:
    """A job stored with the report inside ``job:{id}`` (before ``report:{id}``) still reads back
    whole, a lean read leaves it out, and its next write moves the report to ``report:{id}``."""
    job = make_job(status="succeeded", report={"summary": {"ratio": 3.0}}, enqueued=False)
    redis_store.r.set(f"{redis_store.prefix}job:{job.id}", job.model_dump_json())
    assert redis_store.get(job.id) == job and redis_store.get(job.id, report=False).report is None
    redis_store.mark_enqueued(job.id)
    assert redis_store.get(job.id).report == {"summary": {"ratio": 3.0}}
    assert '"report"' not in str(redis_store.r.get(f"{redis_store.prefix}job:{job.id}"))
    assert redis_store.r.exists(f"{redis_store.prefix}report:{job.id}")
    redis_store.delete(job.id)
    assert not redis_store.r.exists(f"{redis_store.prefix}report:{job.id}")
