"""``service/status_read.py``: the Redis-mode status read in one round trip answers exactly as the
blocking path (``authenticate`` + ``RedisRateLimiter.hit`` + ``JobStore.get``) does, without it.

The same requests run through both paths, on the real Redis under a private key prefix: the same
statuses, bodies and rate-limit headers, and the same counters left in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient

from netshrink.service.auth import generate_key
from netshrink.service.main import create_app
from netshrink.service.ratelimit import RedisRateLimiter
from netshrink.service.status_read import RedisStatusRead
from netshrink.workers.jobs import InputInfo, Job
from tests.service.conftest import app_state, assert_problem, make_settings

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 4
# The counters are per fixed window. An exchange that crossed a window's end counted in two windows
# (a fresh-clone CI run on a slow machine: 5 against 3), so the windows are an hour long and an
# exchange never starts in the last two minutes of one (``_away_from_a_window_edge``).
WINDOW_S = 3600


@pytest.fixture
def keyed(tmp_path: Path, redis_prefix: str) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    """A Redis-mode app in keys mode: tokens a and b, a revoked key's token, and a's finished job."""
    settings = make_settings(
        tmp_path,
        redis_url=REDIS_URL,
        redis_key_prefix=redis_prefix,
        rate_limit_requests=LIMIT,
        rate_limit_window_s=WINDOW_S,
    )
    with TestClient(create_app(settings)) as client:
        store = app_state(client).store
        tokens, owners = {}, {}
        for name in ("a", "b", "revoked"):
            token, record = generate_key(name)
            store.create_api_key(record.model_copy(update={"revoked": name == "revoked"}))
            tokens[name], owners[name] = token, record.id
        info = InputInfo(filename="m.onnx", format="onnx", sha256="0" * 64, size_bytes=10)
        job = store.create(Job(owner=owners["a"], input=info)).job
        store.mark_running(job.id)
        assert store.mark_succeeded(job.id, report={"big": "x" * 1000}, artifacts=[])
        yield client, tokens, job.id


def _status_reads(job_id: str) -> list[tuple[str, str]]:
    """Every kind of answer a status read can give, in an order that spends a's whole window."""
    return [
        ("a", f"/v1/jobs/{job_id}"),
        ("b", f"/v1/jobs/{job_id}"),  # another key's job: 404
        ("a", "/v1/jobs/j_" + "0" * 26),  # no such job: 404
        ("revoked", f"/v1/jobs/{job_id}"),  # 401, counts nothing
        ("nobody", f"/v1/jobs/{job_id}"),  # unknown key: 401
        ("scheme", f"/v1/jobs/{job_id}"),  # not Bearer: 401
        ("a", f"/v1/jobs/{job_id}"),
        ("a", f"/v1/jobs/{job_id}"),
        ("a", f"/v1/jobs/{job_id}"),  # a's 5th request in a window of 4: 429
    ]


def _exchange(client: TestClient, tokens: dict[str, str], requests: list[tuple[str, str]]) -> list[Any]:
    header = {name: f"Bearer {token}" for name, token in tokens.items()}
    header |= {"nobody": "Bearer ns_unknown", "scheme": f"Basic {tokens['a']}"}
    out = []
    for who, path in requests:
        r = client.get(path, headers={"Authorization": header[who]})
        limit = {k: v for k, v in r.headers.items() if k.startswith("ratelimit-") and k != "ratelimit-reset"}
        body = r.json()
        if isinstance(body, dict):
            body.pop("instance", None)
        out.append((r.status_code, body, limit, r.headers.get("www-authenticate"), r.headers.get("etag")))
    return out


def _both_paths(
    client: TestClient,
    tokens: dict[str, str],
    requests: list[tuple[str, str]],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    blocking_reads: tuple[str, ...],
) -> tuple[list[Any], list[Any], dict[str, int]]:
    """The exchange through the blocking path, then through the script with ``blocking_reads`` of
    the store and the limiter patched to fail; the counters both left must agree (returned)."""
    _away_from_a_window_edge()
    state = app_state(client)
    assert isinstance(state.status_read, RedisStatusRead)
    fast_reader = state.status_read
    state.status_read = None  # the blocking path: authenticate, RedisRateLimiter.hit, JobStore.get
    blocking = _exchange(client, tokens, requests)
    blocking_counters = _counters(prefix)
    _clear_counters(prefix)
    state.status_read = fast_reader

    def not_called(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the one-round-trip read used a blocking client")

    for target in (state.store, state.limiter):
        for name in blocking_reads:
            if hasattr(target, name):
                monkeypatch.setattr(target, name, not_called)
    fast = _exchange(client, tokens, requests)
    monkeypatch.undo()
    assert _counters(prefix) == blocking_counters
    return fast, blocking, blocking_counters


def _away_from_a_window_edge() -> None:
    left = WINDOW_S - time.time() % WINDOW_S
    if left < 120:
        time.sleep(left + 0.1)


def _counters(prefix: str) -> dict[str, int]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = sorted(client.scan_iter(match=prefix + "ratelimit:*"))
        return {k.removeprefix(prefix).rsplit(":", 1)[0]: int(client.get(k) or 0) for k in keys}
    finally:
        client.close()


def _clear_counters(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=prefix + "ratelimit:*"):
            client.delete(key)
    finally:
        client.close()


def test_one_round_trip_answers_as_the_blocking_path(
    keyed: tuple[TestClient, dict[str, str], str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, tokens, job_id = keyed
    blocking_reads = ("get", "get_api_key_by_hash", "hit")
    fast, blocking, counters = _both_paths(
        client, tokens, _status_reads(job_id), redis_prefix, monkeypatch, blocking_reads
    )
    assert fast == blocking
    assert [s for s, *_ in fast] == [200, 404, 404, 401, 401, 401, 200, 200, 429]
    ok = fast[0]
    assert ok[1]["id"] == job_id and ok[1]["status"] == "succeeded" and "report" not in ok[1]
    assert ok[2] == {"ratelimit-limit": str(LIMIT), "ratelimit-remaining": str(LIMIT - 1)}
    assert fast[3][3] == 'Bearer realm="netshrink"'
    assert sorted(counters.values()) == [1, 5]  # b once, a five times; 401s count nothing


def test_every_keyed_route_checks_the_key_in_the_same_script(
    keyed: tuple[TestClient, dict[str, str], str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, tokens, job_id = keyed
    who = ["a", "b", "revoked", "nobody", "scheme", "a", "a", "a", "a"]  # a's 5th: 429
    requests = [(w, "/v1/jobs") for w in who]
    fast, blocking, counters = _both_paths(
        client, tokens, requests, redis_prefix, monkeypatch, ("get_api_key_by_hash", "hit")
    )
    assert fast == blocking
    assert [s for s, *_ in fast] == [200, 200, 401, 401, 401, 200, 200, 200, 429]
    assert [j["id"] for j in fast[0][1]["items"]] == [job_id] and fast[1][1]["items"] == []
    assert sorted(counters.values()) == [1, 5]


def test_an_unreachable_redis_is_503(
    keyed: tuple[TestClient, dict[str, str], str], redis_prefix: str
) -> None:
    client, tokens, job_id = keyed
    state = app_state(client)
    assert isinstance(state.limiter, RedisRateLimiter)
    # Nothing listens on port 1: the script's round trip fails as in an outage.
    state.status_read = RedisStatusRead(
        redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1),
        redis_prefix,
        state.limiter,
    )
    r = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {tokens['a']}"})
    assert_problem(r, 503, "service-unavailable")
    assert int(r.headers["retry-after"]) > 0
