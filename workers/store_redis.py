"""``RedisJobStore``: the ``JobStore`` for multi-process / multi-machine deployments.

Keys (all under ``prefix``, default ``netshrink:``)::

    job:{id}               JSON of the Job (the truth), without its report
    report:{id}            JSON of its report (apart: a status read never parses it)
    jobs                   ZSET id → created µs (all jobs, for admin listing)
    owner:{owner}          ZSET id → created µs (per-owner listing, cursor pagination)
    status:{status}        SET of ids (counts for /metrics)
    expires                ZSET id → expires µs (retention)
    idem:{owner}:{key}     JSON {fingerprint, job_id}, TTL ≥ 24 h (IETF Idempotency-Key draft)
    apikey:{id}, apikey_hash:{sha256} → id, apikeys ZSET
    workers                HASH worker_id → heartbeat JSON

Every transition is an optimistic WATCH/MULTI/EXEC transaction on ``job:{id}``, retried on
conflict, so two workers (or a worker and a cancel request) never lose each other's write.

**Outages.** Every method retries a lost connection (``redis.ConnectionError``/``TimeoutError``)
with capped exponential backoff for up to ``retry_s`` seconds, then raises
``StoreUnavailableError``. A transaction is retried whole (read, apply, MULTI/EXEC), so a write is
either applied completely or not at all: a job is never half-updated. Workers use a long window
(``store_retry_s``) so a Redis restart is ridden out; the API uses none and answers 503.
Ref: ``workers/jobs.py`` (protocol); https://redis.io/docs/latest/develop/interact/transactions/.
"""

from __future__ import annotations

import builtins
import functools
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import redis
from redis.exceptions import WatchError

from netshrink.workers.jobs import (
    ApiKeyRecord,
    CreateResult,
    IdempotencyConflictError,
    Job,
    JobNotFoundError,
    JobPage,
    JobStatus,
    StoreUnavailableError,
    WorkerHeartbeat,
    decode_cursor,
    encode_cursor,
    to_us,
    utcnow,
)
from netshrink.workers.store_common import (
    DEFAULT_LEASE_S,
    REPORT_JSON,
    TransitionMethods,
    job_json,
    report_json,
)

T = TypeVar("T")
P = ParamSpec("P")
_BATCH = 200
_OUTAGE = (redis.ConnectionError, redis.TimeoutError)
_BACKOFF_FIRST_S, _BACKOFF_CAP_S = 0.05, 1.0
# apikey_hash:{sha256} -> id -> apikey:{id}, server-side (ARGV[1] is the "apikey:" key prefix).
_KEY_BY_HASH = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
"""

# KEYS[1] job:{id}; ARGV[1] the job's JSON as expected, ARGV[2] its new JSON. 1 when written.
_SET_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def _retried(method: Callable[P, T]) -> Callable[P, T]:
    """Retry ``method`` across a lost Redis connection for up to ``self.retry_s`` seconds."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: RedisJobStore = args[0]  # type: ignore[assignment]
        deadline = time.monotonic() + store.retry_s
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return method(*args, **kwargs)
            except _OUTAGE as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailableError(f"Redis job store unreachable: {exc}") from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, _BACKOFF_CAP_S)

    return wrapper


def _job(raw: Any, job_id: str) -> Job:
    if raw is None:
        raise JobNotFoundError(job_id)
    return Job.model_validate_json(str(raw))


def _without_report(raw: Any, job_id: str) -> Job:
    """A job from ``job:{id}``, its report left out (stored before the split, it was inside)."""
    job = _job(raw, job_id)
    job.report = None
    return job


class RedisJobStore(TransitionMethods):
    """``JobStore`` over Redis. Ref: ``workers/jobs.py``."""

    def __init__(
        self,
        url: str,
        *,
        retention_s: int,
        prefix: str = "netshrink:",
        idempotency_ttl_s: int = 24 * 3600,
        lease_s: float = DEFAULT_LEASE_S,
        retry_s: float = 0.0,
        socket_timeout_s: float = 10.0,
    ) -> None:
        self.r: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=30,
        )
        self.lease_s, self.retry_s = lease_s, retry_s
        self.prefix = prefix
        self.retention_s = retention_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._key_by_hash = self.r.register_script(_KEY_BY_HASH)
        self._set_if_unchanged = self.r.register_script(_SET_IF_UNCHANGED)

    def open_connections(self, n: int) -> None:
        """Open ``n`` pooled connections now. The pool otherwise opens one (a TCP connect and
        redis-py's handshake) whenever more callers than ever before use it at once, inside the
        request that found it short (issue 13 §8: 50 such opens in one 20-client submit run)."""
        pool = self.r.connection_pool
        held = [pool.get_connection() for _ in range(n)]
        for connection in held:
            pool.release(connection)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- jobs ---------------------------------------------------------------------------------

    def _index(self, pipe: Any, job: Job, old_status: JobStatus | None) -> None:
        """Queue the index updates that accompany writing ``job`` (inside MULTI)."""
        pipe.set(self._k("job", job.id), job_json(job))
        if job.report is not None:  # None on a read without it: the stored report stays
            pipe.set(self._k("report", job.id), str(report_json(job)))
        if old_status is not job.status:
            if old_status is not None:
                pipe.srem(self._k("status", old_status.value), job.id)
            pipe.sadd(self._k("status", job.status.value), job.id)
        if job.expires_at is not None:
            pipe.zadd(self._k("expires"), {job.id: to_us(job.expires_at)})

    @_retried
    def _mutate(self, job_id: str, fn: Callable[[Job], T]) -> T:
        key = self._k("job", job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFoundError(job_id)
                    job = Job.model_validate_json(raw)  # without its report (see _index)
                    old_status = job.status
                    result = fn(job)
                    after = job_json(job)
                    if after == raw and job.report is None:
                        pipe.unwatch()
                        return result
                    pipe.multi()
                    self._index(pipe, job, old_status)
                    pipe.execute()
                    return result
                except WatchError:
                    continue

    def mark_enqueued(self, job_id: str, *, stored: Job | None = None) -> None:
        """With ``stored``: one compare-and-set round trip (a Lua script) while the job is still as
        ``create`` wrote it, instead of the WATCH, GET, MULTI/EXEC of ``_mutate`` (three round
        trips of the API's five per submit, issue 13 §8). The flag changes no index."""
        if stored is not None and not stored.enqueued and stored.report is None:
            after = stored.model_copy(update={"enqueued": True})
            if self._compare_and_set(self._k("job", job_id), job_json(stored), job_json(after)):
                return
        super().mark_enqueued(job_id)  # the job changed since (a worker took it): read, then write

    @_retried
    def _compare_and_set(self, key: str, expected: str, new: str) -> bool:
        return bool(self._set_if_unchanged(keys=[key], args=[expected, new]))

    @_retried
    def create(
        self, job: Job, *, idempotency_key: str | None = None, fingerprint: str | None = None
    ) -> CreateResult:
        idem = self._k("idem", job.owner, idempotency_key) if idempotency_key is not None else None
        with self.r.pipeline() as pipe:
            while True:
                try:
                    if idem is not None:
                        pipe.watch(idem)
                        raw = pipe.get(idem)
                        if raw is not None:
                            entry = json.loads(raw)
                            pipe.unwatch()
                            if entry["fingerprint"] != (fingerprint or ""):
                                raise IdempotencyConflictError(str(idempotency_key), entry["job_id"])
                            return CreateResult(self.get(entry["job_id"]), False)
                        job.idempotency_key = idempotency_key
                    pipe.multi()
                    created_us = to_us(job.created_at)
                    self._index(pipe, job, None)
                    pipe.zadd(self._k("jobs"), {job.id: created_us})
                    pipe.zadd(self._k("owner", job.owner), {job.id: created_us})
                    if idem is not None:
                        value = json.dumps({"fingerprint": fingerprint or "", "job_id": job.id})
                        pipe.set(idem, value, ex=self.idempotency_ttl_s)
                    pipe.execute()
                    return CreateResult(job, True)
                except WatchError:
                    continue

    @_retried
    def get(self, job_id: str, *, report: bool = True) -> Job:
        if not report:
            return _without_report(self.r.get(self._k("job", job_id)), job_id)
        raw, raw_report = self.r.mget([self._k("job", job_id), self._k("report", job_id)])
        job = _without_report(raw, job_id) if raw_report is not None else _job(raw, job_id)
        if raw_report is not None:
            job.report = REPORT_JSON.validate_json(raw_report)
        return job

    @_retried
    def list(
        self,
        owner: str | None = None,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        index = self._k("owner", owner) if owner is not None else self._k("jobs")
        c_us, c_id = decode_cursor(cursor) if cursor is not None else (None, None)
        top: str | int = "+inf" if c_us is None else c_us
        out: builtins.list[Job] = []
        offset = 0
        while len(out) <= limit:
            # ZREVRANGEBYSCORE orders equal scores by member descending: (created desc, id desc).
            ids: builtins.list[str] = self.r.zrevrangebyscore(index, top, "-inf", start=offset, num=_BATCH)  # type: ignore[assignment]
            if not ids:
                break
            offset += len(ids)
            scores = self.r.zmscore(index, ids)
            keep = [i for i, s in zip(ids, scores, strict=True) if c_us is None or s != c_us or i < str(c_id)]
            raws = self.r.mget([self._k("job", i) for i in keep]) if keep else []
            for raw in raws:
                if raw is None:
                    continue  # deleted between the two reads
                job = _without_report(raw, "")
                if status is None or job.status is status:
                    out.append(job)
        more = len(out) > limit
        out = out[:limit]
        return JobPage(out, encode_cursor(out[-1]) if more and out else None)

    @_retried
    def idempotency_lookup(self, key: str, owner: str) -> tuple[str, str] | None:
        raw = self.r.get(self._k("idem", owner, key))
        if raw is None:
            return None
        entry = json.loads(str(raw))
        return entry["fingerprint"], entry["job_id"]

    @_retried
    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._k("job", job_id), self._k("report", job_id))
        pipe.zrem(self._k("jobs"), job_id)
        pipe.zrem(self._k("owner", job.owner), job_id)
        pipe.zrem(self._k("expires"), job_id)
        for s in JobStatus:
            pipe.srem(self._k("status", s.value), job_id)
        if job.idempotency_key is not None:
            pipe.delete(self._k("idem", job.owner, job.idempotency_key))
        pipe.execute()

    @_retried
    def _jobs_in(self, status: JobStatus) -> builtins.list[Job]:
        ids: builtins.list[str] = sorted(self.r.smembers(self._k("status", status.value)))  # type: ignore[arg-type]
        raws = self.r.mget([self._k("job", i) for i in ids]) if ids else []
        return [_without_report(raw, "") for raw in raws if raw is not None]

    @_retried
    def counts_by_status(self) -> dict[JobStatus, int]:
        pipe = self.r.pipeline(transaction=False)
        for s in JobStatus:
            pipe.scard(self._k("status", s.value))
        return {s: int(n) for s, n in zip(JobStatus, pipe.execute(), strict=True)}

    @_retried
    def expired_jobs(self, now: datetime | None = None, limit: int = 500) -> builtins.list[str]:
        now_us = to_us(now or utcnow())
        ids: builtins.list[str] = self.r.zrangebyscore(self._k("expires"), "-inf", now_us, start=0, num=limit)  # type: ignore[assignment]
        return ids

    # -- API keys and workers -------------------------------------------------------------------

    @_retried
    def create_api_key(self, record: ApiKeyRecord) -> None:
        hash_key = self._k("apikey_hash", record.key_hash)
        if not self.r.set(hash_key, record.id, nx=True):
            raise ValueError("an API key with this hash already exists")
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k("apikey", record.id), record.model_dump_json())
        pipe.zadd(self._k("apikeys"), {record.id: to_us(record.created_at)})
        pipe.execute()

    @_retried
    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        raw = self.r.get(self._k("apikey", key_id))
        return ApiKeyRecord.model_validate_json(str(raw)) if raw is not None else None

    @_retried
    def get_api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        # One round trip, not two: every authenticated request makes this lookup (issue 13 §8).
        raw = self._key_by_hash(keys=[self._k("apikey_hash", key_hash)], args=[self._k("apikey", "")])
        return ApiKeyRecord.model_validate_json(str(raw)) if raw is not None else None

    @_retried
    def list_api_keys(self) -> builtins.list[ApiKeyRecord]:
        ids: builtins.list[str] = self.r.zrange(self._k("apikeys"), 0, -1)  # type: ignore[assignment]
        raws = self.r.mget([self._k("apikey", i) for i in ids]) if ids else []
        return [ApiKeyRecord.model_validate_json(r) for r in raws if r is not None]

    @_retried
    def heartbeat(self, record: WorkerHeartbeat) -> None:
        self.r.hset(self._k("workers"), record.worker_id, record.model_dump_json())

    @_retried
    def forget_worker(self, worker_id: str) -> None:
        self.r.hdel(self._k("workers"), worker_id)

    @_retried
    def list_workers(self, max_age_s: float = 60.0) -> builtins.list[WorkerHeartbeat]:
        now = utcnow()
        cutoff, stale = now - timedelta(seconds=max_age_s), now - timedelta(days=1)
        raw: dict[str, str] = self.r.hgetall(self._k("workers"))  # type: ignore[assignment]
        alive, dead = [], []
        for worker_id, data in sorted(raw.items()):
            hb = WorkerHeartbeat.model_validate_json(data)
            if hb.last_seen >= cutoff:
                alive.append(hb)
            elif hb.last_seen < stale:
                dead.append(worker_id)
        if dead:
            self.r.hdel(self._k("workers"), *dead)
        return alive

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.r.close()
