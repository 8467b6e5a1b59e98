"""What ``run_job``'s tests share: a job in the SQLite store with its upload, run with its events.

Imported by ``test_run.py`` and ``test_run_finetune.py`` (split at 2026-12-05 when the file passed 400
lines); their ``store`` fixture is in ``conftest.py``."""

from __future__ import annotations

from collections.abc import Callable

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobStatus
from netshrink.workers.run import run_job
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_sqlite import SQLiteJobStore

MakeJob = Callable[..., Job]
Events = list[tuple[str, JobStatus]]


def submit_job(store: SQLiteJobStore, artifacts: ArtifactStore, job: Job, model: bytes | None = None) -> Job:
    store.create(job)
    if model is not None:
        artifacts.save_input(job.id, "model.onnx", model)
    return job


def run_events(job: Job, store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings) -> Events:
    events: Events = []
    run_job(
        job.id,
        store=store,
        artifacts=artifacts,
        settings=settings,
        notify=lambda kind, j: events.append((kind, j.status)),
    )
    return events


ALL_EVENTS = {"url": "https://example.com/h"}


def run_stages(
    job: Job, store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings
) -> list[str]:
    """Run ``job``; the progress stage of every event it sent, in order."""
    stages: list[str] = []
    run_job(
        job.id,
        store=store,
        artifacts=artifacts,
        settings=settings,
        notify=lambda kind, j: stages.append(j.progress.stage),
    )
    return stages
