"""The job record and the ``JobStore`` protocol: the single source of truth about a job.

Over 300 lines on purpose: the protocol's docstrings are the store contract that both stores and
``tests/workers/jobstore_contract.py`` follow, and it reads best in one place.

Celery only carries a ``job_id``; status, progress, results and errors live here (no result
backend, so a job is never "pending" the way Celery reports unknown tasks). Two implementations
share one contract test suite: ``RedisJobStore`` (``workers/store_redis.py``) and
``SQLiteJobStore`` (``workers/store_sqlite.py``); ``workers/store.get_store`` picks one.

Lifecycle (every arrow is one atomic transition; terminal states never change again)::

    queued ──claim──▶ running ──mark_succeeded──▶ succeeded
       ▲                 ├─────mark_failed─────▶ failed
       │                 └─────mark_cancelled──▶ cancelled
       └──reap (lease expired, attempts left) ──┘  (no attempts left: ▶ failed)
    queued ──request_cancel (queued, or running with an expired lease: immediately) ──▶ cancelled
    queued ──claim (too many attempts) ──▶ failed

**Dispatch.** The API stores a job with ``enqueued=False``, sends its message, then sets
``enqueued=True`` (an outbox flag). If the API dies between the store write and the send, the
reaper sends the message (``workers/reaper.dispatch_stranded``); a duplicate message (the API was
merely slow) is harmless, since ``claim`` is atomic and answers BUSY or TERMINAL.

**Leases.** A running job carries a lease (``lease_owner`` = the broker message, ``lease_token`` =
one execution of it, ``lease_expires_at``) that the executing worker renews every
``lease_heartbeat_s`` for ``2 × lease_heartbeat_s`` (``workers/lease.py``). A worker that dies
stops renewing; the reaper (``workers/reaper.py``) then re-enqueues the job, or fails it when its
attempts are used up. Terminal writes carry the writer's token and are refused while a *different*
execution holds a live lease, so a stale worker can never overwrite the live one.

Ref: docs/api.md "GET /v1/jobs/{id}" (JobPublic), "Idempotency-Key", "Auth and limits";
docs/development.md "workers/".
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from netshrink.workers.cursor import CURSOR_PATTERN, decode_cursor, encode_cursor, to_us
from netshrink.workers.records import ApiKeyRecord, WorkerHeartbeat, utcnow

JobKind = Literal["compress", "analyze", "finetune"]
WEBHOOK_EVENTS = ("job.started", "job.progress", "job.succeeded", "job.failed", "job.cancelled")


def new_job_id() -> str:
    """A fresh, URL-safe, unguessable job id (``job_`` + 32 hex chars)."""
    return f"job_{uuid.uuid4().hex}"


class JobStatus(StrEnum):
    """Job states exposed by the API. Ref: docs/api.md JobPublic ``status``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for succeeded/failed/cancelled: the job will never change again."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Progress(BaseModel):
    """Latest progress event of a running job (mirrors ``compression.api.ProgressEvent``)."""

    stage: str = "queued"
    layer: int = 0
    layers_total: int = 0
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)


class InputInfo(BaseModel):
    """The uploaded model file, as validated by the API at submit time."""

    filename: str
    format: str  # "onnx" | "pt" | "safetensors"
    sha256: str
    size_bytes: int = Field(ge=0)
    params: int | None = None  # parameter count when the API could read it cheaply


class ArtifactInfo(BaseModel):
    """One downloadable file produced by a job (the API adds ``url``)."""

    name: str
    media_type: str
    size_bytes: int = Field(ge=0)
    sha256: str


class Callback(BaseModel):
    """Where Standard Webhooks events for this job go. Ref: docs/api.md "Webhooks"."""

    url: str
    events: list[str] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))


class Job(BaseModel):
    """One compression or analysis job. Field names follow docs/api.md ``JobPublic``.

    ``spec`` is the validated JobSpec dict with the seed actually used. ``error`` is an RFC 9457
    problem dict, set only when ``status == failed``. ``idempotency_key`` is internal (the API
    does not echo it).
    """

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_job_id)
    owner: str = "dev"  # API key id, or "dev" when auth is off
    kind: JobKind = "compress"
    status: JobStatus = JobStatus.QUEUED
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    progress: Progress = Field(default_factory=Progress)
    spec: dict[str, Any] = Field(default_factory=dict)
    input: InputInfo
    has_architecture: bool = False
    has_calibration: bool = False
    error: dict[str, Any] | None = None
    artifacts: list[ArtifactInfo] = Field(default_factory=list)
    report: dict[str, Any] | None = None
    expires_at: datetime | None = None  # set when the job becomes terminal (finished + retention)
    callback: Callback | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    # The lease of a running job (internal: never in JobPublic or webhook payloads).
    lease_owner: str | None = None  # the broker message (Celery task id) executing the job
    lease_token: str | None = None  # one execution of that message: renewals and fenced writes
    lease_expires_at: datetime | None = None  # the reaper takes the job back after this
    # Outbox flag (internal): the API stores a job with False and sets True once its broker message
    # is sent; the reaper enqueues a queued job still False after ``dispatch_grace_s``.
    enqueued: bool = True


LEASE_FIELDS = frozenset({"lease_owner", "lease_token", "lease_expires_at"})
INTERNAL_FIELDS = LEASE_FIELDS | {"enqueued"}  # never in JobPublic or webhook payloads


class Claim(StrEnum):
    """What ``JobStore.claim`` did with a delivered message."""

    RUN = "run"  # the caller holds the lease and must run the job
    TERMINAL = "terminal"  # the job is already finished: drop the message
    BUSY = "busy"  # another execution holds a live lease: drop the (duplicate) message
    CANCELLED = "cancelled"  # cancellation was requested before the start: now cancelled
    TOO_MANY = "too_many"  # the attempts cap was passed: now failed


class JobPage(NamedTuple):
    """One page of ``JobStore.list``; ``next_cursor`` is None on the last page."""

    items: list[Job]
    next_cursor: str | None


class CreateResult(NamedTuple):
    """``created`` is False when an idempotent retry returned the first request's job."""

    job: Job
    created: bool


class JobNotFoundError(KeyError):
    """No job with this id (or it was deleted / expired). The API maps it to 404."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class StoreUnavailableError(Exception):
    """The job store's backend did not answer (after the store's own retries). The API maps it
    to 503 with ``Retry-After``; a worker leaves the job to its lease and the reaper."""


class IdempotencyConflictError(Exception):
    """The Idempotency-Key was already used with a different request payload (API: 422)."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different request")
        self.key = key
        self.job_id = job_id


@runtime_checkable
class JobStore(Protocol):
    """Persistence of jobs, idempotency keys, API keys and worker heartbeats.

    Every mutating method is atomic (Redis WATCH/MULTI, SQLite ``BEGIN IMMEDIATE``). Transition
    methods return True when they changed the job and False when it was already terminal (so a
    redelivered task is harmless). Unknown ids raise ``JobNotFoundError``.
    """

    def create(
        self, job: Job, *, idempotency_key: str | None = None, fingerprint: str | None = None
    ) -> CreateResult:
        """Insert ``job``. With an idempotency key, atomically either store the key → (fingerprint,
        job id) for ≥ 24 h, or, when the key exists for ``job.owner``: return the first job
        (``created=False``) if the fingerprint matches, else raise ``IdempotencyConflictError``."""
        ...

    def get(self, job_id: str, *, report: bool = True) -> Job:
        """The job, or ``JobNotFoundError``. ``report=False`` leaves ``report`` None without reading
        it: the report (tens of KB of JSON) is stored apart from the job, and a status read, which
        never shows it, would spend most of its CPU parsing it (issue 13 §8). Never write back a
        job read that way."""
        ...

    def list(
        self,
        owner: str | None = None,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered by owner (None = all owners) and status; ``cursor`` is the
        previous page's ``next_cursor``. Raises ValueError on a malformed cursor."""
        ...

    def idempotency_lookup(self, key: str, owner: str) -> tuple[str, str] | None:
        """(fingerprint, job_id) stored for this key and owner, or None."""
        ...

    def mark_running(self, job_id: str) -> bool:
        """queued/running → running with an anonymous lease of ``lease_s`` (anyone may claim
        over it); sets ``started_at`` on first start. False if terminal."""
        ...

    def claim(self, job_id: str, *, owner: str, token: str, max_attempts: int) -> Claim:
        """One atomic start of a delivery: terminal → TERMINAL; a live lease of another owner →
        BUSY; else count the attempt (TOO_MANY → failed past ``max_attempts``), honour a cancel
        request (CANCELLED), or take the lease for ``lease_s`` (RUN). Claiming again with the same
        ``token`` (a retried write) is RUN without counting again."""
        ...

    def renew_lease(self, job_id: str, token: str) -> bool:
        """Extend the lease held by ``token`` to now + ``lease_s``; False when it is no longer
        held (the job was reaped, finished or claimed by another execution)."""
        ...

    def expired_leases(self, now: datetime | None = None) -> builtins.list[str]:
        """Ids of running jobs whose lease expired by ``now`` (or that have none)."""
        ...

    def reap(self, job_id: str, *, max_attempts: int, now: datetime | None = None) -> JobStatus | None:
        """Take back a running job whose lease expired by ``now``: → queued while attempts remain,
        → failed (too many attempts) otherwise, → cancelled if cancellation was requested.
        Returns the new status, or None when the job was not taken back."""
        ...

    def mark_enqueued(self, job_id: str, *, stored: Job | None = None) -> None:
        """Record that a broker message for the job was sent (``enqueued = True``). ``stored``: the
        job as the caller wrote it (``create``'s result); a store may write the flag without reading
        the job first while the job is still exactly that, and reads it as usual otherwise."""
        ...

    def mark_queued_unsent(self) -> builtins.list[str]:
        """Clear the outbox flag of every queued job (``enqueued = False``) and return their ids: an
        embedded process whose memory:// broker holds some of their messages is stopping, and the
        reaper of any process still running sends them again (``reaper.dispatch_stranded``)."""
        ...

    def unenqueued(self, older_than: datetime) -> builtins.list[str]:
        """Ids of queued jobs created before ``older_than`` whose message was never recorded as sent
        (the API died between its store write and the enqueue), oldest first."""
        ...

    def bump_attempts(self, job_id: str) -> int:
        """Increment and return ``attempts`` (counts deliveries, including crashed ones)."""
        ...

    def set_progress(self, job_id: str, progress: Progress) -> None:
        """Record the latest progress of a non-terminal job (ignored once terminal)."""
        ...

    def mark_succeeded(
        self,
        job_id: str,
        *,
        report: dict[str, Any],
        artifacts: builtins.list[ArtifactInfo],
        lease_token: str | None = None,
    ) -> bool:
        """→ succeeded with report + artifact list; sets finished_at, expires_at, progress 1.0.
        With ``lease_token``: refused (False) while another execution holds a live lease."""
        ...

    def mark_failed(self, job_id: str, problem: dict[str, Any], *, lease_token: str | None = None) -> bool:
        """→ failed with an RFC 9457 problem dict in ``error``; sets finished_at, expires_at."""
        ...

    def request_cancel(self, job_id: str) -> Job:
        """queued, or running with an expired lease (its worker is gone) → cancelled now; running
        → ``cancel_requested=True`` (the worker stops between layers); terminal → unchanged.
        Returns the job after the change."""
        ...

    def is_cancel_requested(self, job_id: str) -> bool:
        """True if cancellation was requested or the job is already cancelled."""
        ...

    def mark_cancelled(self, job_id: str, *, lease_token: str | None = None) -> bool:
        """→ cancelled; sets finished_at, expires_at."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove the job record and its idempotency entry (files: ``ArtifactStore.delete``)."""
        ...

    def counts_by_status(self) -> dict[JobStatus, int]:
        """Number of jobs in each status (every status present, zero included); for /metrics."""
        ...

    def expired_jobs(self, now: datetime | None = None, limit: int = 500) -> builtins.list[str]:
        """Ids of terminal jobs whose ``expires_at`` <= now (retention cleanup)."""
        ...

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new API key record (id and key_hash unique)."""
        ...

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None (the worker reads its webhook secret)."""
        ...

    def get_api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key whose token hashes to ``key_hash``, or None."""
        ...

    def list_api_keys(self) -> builtins.list[ApiKeyRecord]:
        """All API key records, oldest first."""
        ...

    def heartbeat(self, record: WorkerHeartbeat) -> None:
        """Insert or refresh a worker's liveness record."""
        ...

    def list_workers(self, max_age_s: float = 60.0) -> builtins.list[WorkerHeartbeat]:
        """Workers seen within ``max_age_s`` seconds."""
        ...

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's liveness record (it stopped cleanly); no error when there is none."""
        ...

    def ping(self) -> bool:
        """True when the backing store answers (for /readyz)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


__all__ = [
    "ApiKeyRecord",
    "ArtifactInfo",
    "Callback",
    "Claim",
    "CreateResult",
    "IdempotencyConflictError",
    "InputInfo",
    "Job",
    "JobKind",
    "JobNotFoundError",
    "JobPage",
    "JobStatus",
    "JobStore",
    "INTERNAL_FIELDS",
    "LEASE_FIELDS",
    "Progress",
    "StoreUnavailableError",
    "WEBHOOK_EVENTS",
    "WorkerHeartbeat",
    "CURSOR_PATTERN",
    "decode_cursor",
    "encode_cursor",
    "new_job_id",
    "to_us",
    "utcnow",
]
