"""``run_job``: execute one job end to end. Plain Python, idempotent, called by the Celery tasks.

Guarantees (Ref: docs/development.md "workers/run.py"; docs/api.md "Errors", "Auth and limits"):
- idempotent: a terminal job is left alone (``acks_late`` may redeliver a finished job), and so
  is a job another execution holds a live lease on (a duplicate message);
- one atomic ``claim`` counts the delivery in ``attempts``, takes the lease and marks the job
  running; a job delivered more than ``max_attempts`` times (each one killed its worker, e.g. out
  of memory) is failed instead of crashing workers forever;
- while it runs, a ``LeaseKeeper`` renews the lease; if the process dies the lease runs out and the
  reaper takes the job back (``workers/reaper.py``). A store outage longer than the store's own
  retries (``StoreUnavailableError``) ends the execution without a result, and the job goes the
  same way: it is never failed because the store was briefly down;
- every exception ends the job: ``CancelledError`` → cancelled, ``CompressionError`` → failed
  with its RFC 9457 problem (status from the one map, ``workers.problems``: 422, 413 for a
  limit), the soft time limit → failed (422), anything else → failed
  with an internal problem (500, no stack trace; the traceback goes to the worker log). A job is
  never left "running" by an exception;
- progress goes to the job store (and, throttled, to ``job.progress`` webhooks); cancellation is
  polled from the store between layers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from billiard.exceptions import SoftTimeLimitExceeded

from netshrink.compression.errors import CancelledError, CompressionError
from netshrink.compression.io.memory import release_large_buffers
from netshrink.compression.spec import CompressSpec
from netshrink.workers import problems
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import (
    ArtifactInfo,
    Claim,
    Job,
    JobNotFoundError,
    JobStore,
    Progress,
    StoreUnavailableError,
)
from netshrink.workers.lease import LeaseKeeper
from netshrink.workers.settings import WorkerSettings

if TYPE_CHECKING:
    from netshrink.compression.api import CompressionResult, ProgressEvent

log = logging.getLogger(__name__)

Notify = Callable[[str, Job], None]
"""Emits a webhook event: ``notify(event_type, job)`` (``workers/tasks.py`` enqueues delivery)."""

ARCHITECTURE_INPUT = "architecture.json"
CALIBRATION_INPUT = "calibration.npz"
TRAIN_INPUT, VALIDATION_INPUT = "train.npz", "validation.npz"  # kind finetune


def run_job(
    job_id: str,
    *,
    store: JobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    notify: Notify | None = None,
    lease_owner: str | None = None,
) -> None:
    """Run job ``job_id`` to a terminal state (or leave it alone if it already is one).

    ``lease_owner`` names the delivery (the Celery task id): a redelivery of the same message
    (``reject_on_worker_lost`` after its pool child died) may take over its own live lease at
    once, while any other message waits for the lease to expire.
    """
    release_large_buffers()  # freed float64 temporaries go back to the OS (compression/io/memory.py)
    emit = _Emitter(store, job_id, notify, settings.webhook_progress_interval_s)
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"  # who runs it, for operators
    try:
        outcome = store.claim(
            job_id, owner=lease_owner or token, token=token, max_attempts=settings.max_attempts
        )
    except JobNotFoundError:
        log.warning("job %s no longer exists; dropping the message", job_id)
        return
    if outcome is Claim.TOO_MANY:
        log.error("job %s: more than max_attempts=%d deliveries", job_id, settings.max_attempts)
        emit("job.failed")
    elif outcome is Claim.CANCELLED:
        emit("job.cancelled")
    elif outcome is Claim.BUSY:
        log.warning("job %s is held by a live lease of another execution; dropping the message", job_id)
    elif outcome is Claim.RUN:
        with LeaseKeeper(store, job_id, token, settings.lease_heartbeat_s) as lease:
            _run_claimed(job_id, token, lease, store=store, artifacts=artifacts, settings=settings, emit=emit)


def _run_claimed(
    job_id: str,
    token: str,
    lease: LeaseKeeper,
    *,
    store: JobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    emit: _Emitter,
) -> None:
    """Execute a claimed job and record its outcome (writes fenced by this execution's token)."""
    emit("job.started")
    job = store.get(job_id)
    try:
        infos = _execute(
            job,
            store=store,
            artifacts=artifacts,
            emit=emit,
            settings=settings,
            lost=lambda: lease.lost,
        )
    except CancelledError:
        if lease.lost:
            return  # reaped while cut off from the store: the new execution owns the job
        if store.mark_cancelled(job_id, lease_token=token):
            emit("job.cancelled")
        return
    except StoreUnavailableError:
        log.error(
            "job %s: the job store is unreachable; its lease will expire and the reaper requeue it", job_id
        )
        raise
    except CompressionError as exc:
        outcome = store.mark_failed(job_id, problems.from_error(exc), lease_token=token)
    except SoftTimeLimitExceeded:
        outcome = store.mark_failed(
            job_id, problems.time_limit(settings.job_soft_time_limit_s), lease_token=token
        )
    except Exception:
        log.exception("job %s failed with an unexpected error", job_id)
        outcome = store.mark_failed(job_id, problems.internal(job_id), lease_token=token)
    else:
        report, files = infos
        if store.mark_succeeded(job_id, report=report, artifacts=files, lease_token=token):
            emit("job.succeeded")
        return
    if outcome:
        emit("job.failed")


def _execute(
    job: Job,
    *,
    store: JobStore,
    artifacts: ArtifactStore,
    emit: _Emitter,
    settings: WorkerSettings,
    lost: Callable[[], bool] = lambda: False,
) -> tuple[dict[str, Any], list[ArtifactInfo]]:
    """Load the inputs, call the core, write every artifact; return (report, artifact infos)."""
    if job.kind == "finetune":
        return _execute_finetune(
            job, store=store, artifacts=artifacts, emit=emit, settings=settings, lost=lost
        )
    spec = CompressSpec.from_dict(job.spec)  # the API validated it; re-check before any heavy import
    if spec.device == "auto" and settings.device == "cpu":
        spec = dataclasses.replace(spec, device="cpu")  # a CPU worker stays on the CPU (NETSHRINK_DEVICE)
    # The core is imported here, not at module level: the API imports workers.* without torch.
    from netshrink.compression.graph.calibration import load_calibration
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.pipeline import compress

    def on_progress(event: ProgressEvent) -> None:
        fraction = min(max(float(event.fraction), 0.0), 1.0)
        progress = Progress(
            stage=event.stage, layer=event.layer, layers_total=event.layers_total, fraction=fraction
        )
        store.set_progress(job.id, progress)
        emit.progress()

    def should_cancel() -> bool:
        return lost() or store.is_cancel_requested(job.id)

    on_progress_stage("loading", store, job.id)
    architecture = None
    if job.has_architecture:
        architecture = json.loads(artifacts.input_path(job.id, ARCHITECTURE_INPUT).read_text())
    # The same limits, from the same settings, as the API applied at submit (settings.load_limits).
    net = load_model(artifacts.model_input(job.id), architecture=architecture, limits=settings.load_limits())
    calibration = None
    if job.has_calibration:
        calibration = load_calibration(
            artifacts.input_path(job.id, CALIBRATION_INPUT), net, max_bytes=settings.max_unzipped_bytes
        )
    # kind analyze too: compress() hands it to analyze() with the spec's seed and full_diagnostics
    # (until 2026-12-05 this called analyze() without them: seed 0 and sampled diagnostics always)
    result: CompressionResult = compress(
        net,
        spec,
        calibration=calibration,
        on_progress=on_progress,
        should_cancel=should_cancel,
        input_sha256=job.input.sha256,
    )
    return result.report, _write_artifacts(job.id, result, artifacts)


def _execute_finetune(
    job: Job,
    *,
    store: JobStore,
    artifacts: ArtifactStore,
    emit: _Emitter,
    settings: WorkerSettings,
    lost: Callable[[], bool],
) -> tuple[dict[str, Any], list[ArtifactInfo]]:
    """The ``finetune`` kind: the core's ``finetune`` on the model and ``train.npz`` (docs/method.md §4)."""
    from netshrink.compression.finetune.job import finetune
    from netshrink.compression.finetune.spec import FinetuneSpec
    from netshrink.compression.graph.loading import load_model

    spec = FinetuneSpec.from_dict(job.spec)
    if spec.device == "auto" and settings.device == "cpu":
        spec = dataclasses.replace(spec, device="cpu")
    on_progress_stage("loading", store, job.id)
    architecture = None
    if job.has_architecture:
        architecture = json.loads(artifacts.input_path(job.id, ARCHITECTURE_INPUT).read_text())
    model = artifacts.model_input(job.id)
    validation = artifacts.input_path(job.id, VALIDATION_INPUT)
    result = finetune(
        load_model(model, architecture=architecture, limits=settings.load_limits()),
        spec,
        artifacts.input_path(job.id, TRAIN_INPUT),
        upload=model,
        validation=validation if validation.is_file() else None,
        on_progress=_progress_to(store, job.id, emit),
        should_cancel=lambda: lost() or store.is_cancel_requested(job.id),
        input_sha256=job.input.sha256,
        max_data_bytes=settings.max_unzipped_bytes,
    )
    return result.report, _write_artifacts(job.id, result, artifacts)


def _progress_to(store: JobStore, job_id: str, emit: _Emitter) -> Callable[[ProgressEvent], None]:
    def on_progress(event: ProgressEvent) -> None:
        fraction = min(max(float(event.fraction), 0.0), 1.0)
        progress = Progress(
            stage=event.stage, layer=event.layer, layers_total=event.layers_total, fraction=fraction
        )
        store.set_progress(job_id, progress)
        emit.progress()

    return on_progress


def _write_artifacts(job_id: str, result: CompressionResult, artifacts: ArtifactStore) -> list[ArtifactInfo]:
    """Model files from the core, then ``report.json`` and ``report.html`` (each atomically)."""
    from netshrink.reporting import render_html

    infos = [artifacts.save(job_id, name, data) for name, data in result.artifacts.items()]
    report_json = json.dumps(result.report, indent=2, sort_keys=True, allow_nan=False).encode()
    infos.append(artifacts.save(job_id, "report.json", report_json))
    infos.append(artifacts.save(job_id, "report.html", render_html(result.report).encode()))
    return infos


def on_progress_stage(stage: str, store: JobStore, job_id: str) -> None:
    """Record a stage without layer detail (e.g. ``loading`` before the core reports)."""
    store.set_progress(job_id, Progress(stage=stage))


class _Emitter:
    """Sends webhook events for one job, reading the job fresh; ``progress`` is throttled."""

    def __init__(self, store: JobStore, job_id: str, notify: Notify | None, interval_s: float) -> None:
        self.store, self.job_id, self.notify, self.interval_s = store, job_id, notify, interval_s
        self._last_progress = -float("inf")

    def __call__(self, event_type: str) -> None:
        if self.notify is None:
            return
        try:
            job = self.store.get(self.job_id)
            if job.callback is not None and event_type in job.callback.events:
                self.notify(event_type, job)
        except SoftTimeLimitExceeded:
            raise  # raised asynchronously by Celery wherever the task is: never swallow it
        except Exception:  # a webhook problem must never change the job's outcome
            log.exception("job %s: could not emit %s", self.job_id, event_type)

    def progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= self.interval_s:
            self._last_progress = now
            self("job.progress")


__all__ = ["Notify", "run_job"]
