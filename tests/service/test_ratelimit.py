"""Per-key rate limits: the fixed-window counters (in process and in the REAL Redis) and the 429
answer with RateLimit-* and Retry-After headers. Ref: docs/api.md "Auth and limits"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from netshrink.service.main import create_app
from netshrink.service.ratelimit import MemoryRateLimiter, RedisRateLimiter
from tests.service.conftest import assert_problem, make_settings


class Clock:
    """A settable clock (the limiter's time source), so window edges are exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_memory_window_counts_per_owner_and_resets() -> None:
    clock = Clock(1000.0)
    limiter = MemoryRateLimiter(limit=2, window_s=60, clock=clock)
    states = [limiter.hit("a") for _ in range(3)]
    assert [s.allowed for s in states] == [True, True, False]
    assert [s.remaining for s in states] == [1, 0, 0]
    assert states[0].reset_s == 20  # 1000 s is 40 s into the window [960, 1020)
    assert limiter.hit("b").allowed  # another key has its own window
    clock.now = 1020.0
    assert limiter.hit("a").allowed and limiter.hit("a").remaining == 0


@pytest.fixture
def real_redis() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"netshrink-test-{uuid.uuid4().hex}:"
    yield client, prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


@pytest.mark.redis
def test_redis_window_is_shared_and_expires(real_redis: tuple[redis.Redis, str]) -> None:
    client, prefix = real_redis
    clock = Clock(1000.0)
    one = RedisRateLimiter(client, limit=3, window_s=60, prefix=prefix, clock=clock)
    two = RedisRateLimiter(client, limit=3, window_s=60, prefix=prefix, clock=clock)  # a second API replica
    assert [one.hit("k").remaining, two.hit("k").remaining, one.hit("k").remaining] == [2, 1, 0]
    blocked = two.hit("k")
    assert not blocked.allowed and blocked.headers()["Retry-After"] == "20"
    key = f"{prefix}ratelimit:k:{1000 // 60}"
    assert int(client.get(key) or 0) == 4
    assert 0 < client.ttl(key) <= 61  # the counter cleans itself up
    clock.now = 1020.0
    assert one.hit("k").allowed


def test_429_with_ratelimit_headers(tmp_path: Path) -> None:
    with TestClient(
        create_app(make_settings(tmp_path, rate_limit_requests=2, rate_limit_window_s=3600))
    ) as c:
        first = c.get("/v1/jobs")
        assert first.headers["ratelimit-limit"] == "2" and first.headers["ratelimit-remaining"] == "1"
        assert 0 < int(first.headers["ratelimit-reset"]) <= 3600
        assert c.get("/v1/jobs").status_code == 200
        r = c.get("/v1/jobs")
        assert_problem(r, 429, "rate-limited")
        assert r.headers["ratelimit-remaining"] == "0"
        assert int(r.headers["retry-after"]) == int(r.headers["ratelimit-reset"]) > 0
        assert c.get("/healthz").status_code == 200  # probes are not rate limited


def test_every_authenticated_response_carries_the_headers(tmp_path: Path) -> None:
    """docs/api.md "Limits" (2026-12-05, found by probing: a route returning its own response, and a
    problem raised after the admission, went without them while still counted)."""
    from tests import factories
    from tests.service.conftest import SPEC, submit

    with TestClient(create_app(make_settings(tmp_path, rate_limit_requests=50))) as c:
        job = submit(c, factories.mlp_onnx(), SPEC)
        answers = [
            job,  # 202 with Location
            c.get(f"/v1/jobs/{job.json()['id']}/report"),  # 409 while queued
            c.get(f"/v1/jobs/{job.json()['id']}/artifacts/model.onnx"),  # 404: no such artifact yet
            c.post(f"/v1/jobs/{job.json()['id']}/cancel"),  # 200, the job's own response
            c.delete(f"/v1/jobs/{job.json()['id']}"),  # 204
            c.get("/v1/jobs/job_0123456789abcdef0123456789abcdef"),  # 404 problem
            submit(c, factories.mlp_onnx(), {"quantize": {"bits": "4"}}),  # 422 problem
        ]
    remaining = []
    for r in answers:
        assert r.headers.get("ratelimit-limit") == "50", (r.status_code, r.request.url, dict(r.headers))
        remaining.append(int(r.headers["ratelimit-remaining"]))
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining)
