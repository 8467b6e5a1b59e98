"""``run_job``: execute one job end to end. Plain Python, idempotent, called by the Celery tasks.

Guarantees (Ref: docs/development.md "workers/run.py"; docs/api.md "Errors", "Auth and limits"):
- idempotent: a terminal job is left alone (``acks_late`` may redeliver a finished job);
- ``attempts`` counts deliveries; a job redelivered more than ``max_attempts`` times (each one
  killed its worker, e.g. out of memory) is failed instead of crashing workers forever;
- every exception ends the job: ``CancelledError`` → cancelled, ``CompressionError`` → failed
  with its RFC 9457 problem (422), the soft time limit → failed (422), anything else → failed
  with an internal problem (500, no stack trace; the traceback goes to the worker log). A job is
  never left "running" by an exception;
- progress goes to the job store (and, throttled, to ``job.progress`` webhooks); cancellation is
  polled from the store between layers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from billiard.exceptions import SoftTimeLimitExceeded

from netshrink.compression.errors import CancelledError, CompressionError
from netshrink.compression.spec import CompressSpec
from netshrink.workers import problems
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import ArtifactInfo, Job, JobNotFoundError, JobStore, Progress
from netshrink.workers.settings import WorkerSettings

if TYPE_CHECKING:
    from netshrink.compression.api import CompressionResult, ProgressEvent

log = logging.getLogger(__name__)

Notify = Callable[[str, Job], None]
"""Emits a webhook event: ``notify(event_type, job)`` (``workers/tasks.py`` enqueues delivery)."""

ARCHITECTURE_INPUT = "architecture.json"
CALIBRATION_INPUT = "calibration.npz"


def run_job(
    job_id: str,
    *,
    store: JobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    notify: Notify | None = None,
) -> None:
    """Run job ``job_id`` to a terminal state (or leave it alone if it already is one)."""
    emit = _Emitter(store, job_id, notify, settings.webhook_progress_interval_s)
    try:
        job = store.get(job_id)
    except JobNotFoundError:
        log.warning("job %s no longer exists; dropping the message", job_id)
        return
    if job.status.is_terminal:
        return
    attempts = store.bump_attempts(job_id)
    if attempts > settings.max_attempts:
        log.error("job %s: attempt %d > max_attempts %d", job_id, attempts, settings.max_attempts)
        if store.mark_failed(job_id, problems.too_many_attempts(attempts, settings.max_attempts)):
            emit("job.failed")
        return
    if store.is_cancel_requested(job_id):
        if store.mark_cancelled(job_id):
            emit("job.cancelled")
        return
    if not store.mark_running(job_id):
        return
    emit("job.started")
    try:
        infos = _execute(job, store=store, artifacts=artifacts, emit=emit, worker_device=settings.device)
    except CancelledError:
        if store.mark_cancelled(job_id):
            emit("job.cancelled")
        return
    except CompressionError as exc:
        outcome = store.mark_failed(job_id, problems.from_error(exc))
    except SoftTimeLimitExceeded:
        outcome = store.mark_failed(job_id, problems.time_limit(settings.job_soft_time_limit_s))
    except Exception:
        log.exception("job %s failed with an unexpected error", job_id)
        outcome = store.mark_failed(job_id, problems.internal(job_id))
    else:
        report, files = infos
        if store.mark_succeeded(job_id, report=report, artifacts=files):
            emit("job.succeeded")
        return
    if outcome:
        emit("job.failed")


def _execute(
    job: Job, *, store: JobStore, artifacts: ArtifactStore, emit: _Emitter, worker_device: str = "auto"
) -> tuple[dict[str, Any], list[ArtifactInfo]]:
    """Load the inputs, call the core, write every artifact; return (report, artifact infos)."""
    spec = CompressSpec.from_dict(job.spec)  # the API validated it; re-check before any heavy import
    if spec.device == "auto" and worker_device == "cpu":
        spec = dataclasses.replace(spec, device="cpu")  # a CPU worker stays on the CPU (NETSHRINK_DEVICE)
    # The core is imported here, not at module level: the API imports workers.* without torch.
    from netshrink.compression.graph.calibration import load_calibration
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.pipeline import analyze, compress

    def on_progress(event: ProgressEvent) -> None:
        fraction = min(max(float(event.fraction), 0.0), 1.0)
        progress = Progress(
            stage=event.stage, layer=event.layer, layers_total=event.layers_total, fraction=fraction
        )
        store.set_progress(job.id, progress)
        emit.progress()

    def should_cancel() -> bool:
        return store.is_cancel_requested(job.id)

    on_progress_stage("loading", store, job.id)
    architecture = None
    if job.has_architecture:
        architecture = json.loads(artifacts.input_path(job.id, ARCHITECTURE_INPUT).read_text())
    net = load_model(artifacts.model_input(job.id), architecture=architecture)
    calibration = None
    if job.has_calibration:
        calibration = load_calibration(artifacts.input_path(job.id, CALIBRATION_INPUT), net)
    result: CompressionResult
    if job.kind == "analyze":
        result = analyze(net, on_progress=on_progress, input_sha256=job.input.sha256)
    else:
        result = compress(
            net,
            spec,
            calibration=calibration,
            on_progress=on_progress,
            should_cancel=should_cancel,
            input_sha256=job.input.sha256,
        )
    return result.report, _write_artifacts(job.id, result, artifacts)


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
