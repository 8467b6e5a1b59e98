"""``GET /v1/jobs/{id}`` in Redis mode with an API key: ONE round trip, on the event loop.

A status read needs the caller's key record (by the token's hash), a hit on the caller's
rate-limit window and the job. Done one by one through the blocking clients, that was three round
trips in a worker-thread hop per request (issue 13 §8): 0.46 ms of server CPU per GET, and a p99
of 134 ms at 20 connections with ``serve --workers 2`` (``python -m bench.load``). Here one Lua
script does all three server-side, called through ``redis.asyncio``, so no thread is involved.

The script reads the keys of ``workers/store_redis.py`` (``apikey_hash:{sha256}`` → id,
``apikey:{id}``, ``job:{id}``) and counts in ``service/ratelimit.py``'s window key, exactly as
``auth.authenticate`` + ``RedisRateLimiter.hit`` + ``JobStore.get(report=False)`` do, in that
order: an unknown or revoked key counts nothing. Without a job it is the key check and rate-limit
hit of every other keyed route (``deps.get_principal``), also without a thread.
``tests/service/test_status_read.py`` holds the two paths to the same answers. An outage raises
``redis.ConnectionError``/``TimeoutError``, which ``service/errors.py`` answers with 503.
Ref: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio

from netshrink.service.auth import Principal, bearer_hash, principal_of
from netshrink.service.ratelimit import RateLimitState, RedisRateLimiter
from netshrink.workers.jobs import ApiKeyRecord, Job

# KEYS[1] apikey_hash:{sha256}, KEYS[2] job:{id} (optional); ARGV[1] the "apikey:" key prefix, ARGV[2]/ARGV[3]
# the rate-limit key around the key id, ARGV[4] its TTL. Returns {record, count, job} (nil: absent).
_SCRIPT = """
local id = redis.call('GET', KEYS[1])
if not id then return {false, false, false} end
local record = redis.call('GET', ARGV[1] .. id)
if not record or cjson.decode(record)['revoked'] then return {record, false, false} end
local window = ARGV[2] .. id .. ARGV[3]
local count = redis.call('INCR', window)
redis.call('EXPIRE', window, ARGV[4], 'NX')
if not KEYS[2] then return {record, count, false} end
return {record, count, redis.call('GET', KEYS[2])}
"""


class RedisStatusRead:
    """The one-round-trip status read of one API process (its ``redis.asyncio`` client)."""

    def __init__(self, client: redis.asyncio.Redis, store_prefix: str, limiter: RedisRateLimiter) -> None:
        self.client, self.prefix, self.limiter = client, store_prefix, limiter
        self._script = client.register_script(_SCRIPT)

    async def open_connections(self, n: int) -> None:
        """Open ``n`` pooled connections now, not one by one inside the requests that first need
        more (issue 13 §8: 25 opened during one 20-client submit run, 130 ms each at load 11)."""
        pool = self.client.connection_pool
        held = [await pool.get_connection() for _ in range(n)]
        for connection in held:
            await pool.release(connection)

    async def read(
        self, authorization: str, job_id: str | None = None
    ) -> tuple[Principal, RateLimitState, Job | None]:
        """(the caller, its rate-limit hit, the job without its report or None when absent,
        unreadable or not asked for); 401 for a bad scheme, an unknown or a revoked key, as
        ``auth.authenticate``. Without ``job_id`` it is ``PrincipalDep``'s check (every keyed route)."""
        window = self.limiter.window()
        keys = [f"{self.prefix}apikey_hash:{bearer_hash(authorization)}"]
        if job_id is not None:
            keys.append(f"{self.prefix}job:{job_id}")
        args: list[str | int] = [f"{self.prefix}apikey:", window.key_head, window.key_tail, window.ttl_s]
        raw_record, count, raw_job = await self._script(keys=keys, args=args)
        record = ApiKeyRecord.model_validate_json(raw_record) if raw_record is not None else None
        principal = principal_of(record)
        return principal, window.state(int(count)), _job(raw_job)


def _job(raw: Any) -> Job | None:
    if raw is None:
        return None
    try:
        job = Job.model_validate_json(raw)
    except ValueError:  # as owned_job: an unreadable job is a missing one
        return None
    job.report = None  # stored before the report had its own key: it was inside
    return job


__all__ = ["RedisStatusRead"]
