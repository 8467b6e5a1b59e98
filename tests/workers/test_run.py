"""run_job called directly: idempotency, attempts, every failure path, cancellation, success.

The success/cancellation tests run the real compression core on a tiny ONNX MLP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from billiard.exceptions import SoftTimeLimitExceeded

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import (
    InputInfo,
    Job,
    JobNotFoundError,
    JobStatus,
    Progress,
    StoreUnavailableError,
    utcnow,
)
from netshrink.workers.run import run_job
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_sqlite import SQLiteJobStore
from tests.factories import cnn_architecture, mlp_onnx, tiny_cnn, write_calibration, write_pt
from tests.workers.run_helpers import ALL_EVENTS, Events, MakeJob
from tests.workers.run_helpers import run_events as _run
from tests.workers.run_helpers import submit_job as _submit

SPEC = {
    "kind": "compress",
    "prune": {"keep": 0.5},
    "seed": 3,
    "evaluation": {"inputs": "gaussian", "samples": 32},
}


def test_terminal_job_is_left_alone(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job())
    store.mark_failed(job.id, {"type": "x"})
    before = store.get(job.id)
    assert _run(job, store, artifacts, settings) == []
    assert store.get(job.id) == before


def test_missing_job_is_dropped(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings
) -> None:
    """A delivery for a job that no longer exists (deleted, expired) is dropped: no job is created,
    no artifact written, nothing raised (the task would otherwise be redelivered forever)."""
    before = [j.id for j in store.list(None, limit=100).items]
    assert run_job("job_gone", store=store, artifacts=artifacts, settings=settings) is None
    with pytest.raises(JobNotFoundError):
        store.get("job_gone")
    assert artifacts.list("job_gone") == []
    assert [j.id for j in store.list(None, limit=100).items] == before


def test_too_many_attempts_fails_the_job(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(callback=ALL_EVENTS))
    for _ in range(settings.max_attempts):  # three deliveries that each killed their worker
        store.mark_running(job.id)
        store.bump_attempts(job.id)
    assert _run(job, store, artifacts, settings) == [("job.failed", JobStatus.FAILED)]
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == settings.max_attempts + 1
    assert failed.error is not None and failed.error["type"].endswith("/too-many-attempts")


def test_cancel_requested_before_start(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(callback=ALL_EVENTS))
    store.mark_running(job.id)  # e.g. redelivered after a crash, then cancelled
    store.request_cancel(job.id)
    assert _run(job, store, artifacts, settings) == [("job.cancelled", JobStatus.CANCELLED)]
    assert store.get(job.id).status is JobStatus.CANCELLED


def test_compression_error_becomes_a_422_problem(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(spec={"prune": {"keep": 7.0}}, callback=ALL_EVENTS), b"x")
    events = _run(job, store, artifacts, settings)
    assert events == [("job.started", JobStatus.RUNNING), ("job.failed", JobStatus.FAILED)]
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.finished_at is not None
    assert failed.error is not None
    assert failed.error["type"] == "https://netshrink.dev/problems/invalid-spec"
    assert failed.error["status"] == 422 and failed.error["errors"][0]["field"].startswith("spec.prune")


def test_unexpected_exception_is_internal_problem_without_traceback(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: MakeJob,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = _submit(store, artifacts, make_job())  # no model file on disk: FileNotFoundError inside
    with caplog.at_level(logging.ERROR, logger="netshrink.workers.run"):
        _run(job, store, artifacts, settings)
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error["status"] == 500
    assert failed.error["type"].endswith("/internal")
    dumped = json.dumps(failed.error)
    assert "Traceback" not in dumped and "FileNotFoundError" not in dumped and ".py" not in dumped
    assert any(r.exc_info for r in caplog.records)  # the operator log keeps the traceback


def test_webhook_events_follow_the_callback_filter(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    cb = {"url": "https://example.com/h", "events": ["job.failed"]}
    job = _submit(store, artifacts, make_job(spec={"prune": {"keep": 7.0}}, callback=cb), b"x")
    assert _run(job, store, artifacts, settings) == [("job.failed", JobStatus.FAILED)]


def test_notify_failure_does_not_change_the_outcome(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(spec={"prune": {"keep": 7.0}}, callback=ALL_EVENTS), b"x")

    def broken(kind: str, j: Job) -> None:
        raise RuntimeError("broker down")

    run_job(job.id, store=store, artifacts=artifacts, settings=settings, notify=broken)
    assert store.get(job.id).status is JobStatus.FAILED


def test_compress_succeeds_with_artifacts_and_report(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(spec=SPEC, callback=ALL_EVENTS), mlp_onnx())
    events = _run(job, store, artifacts, settings)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert events[0] == ("job.started", JobStatus.RUNNING) and events[-1] == (
        "job.succeeded",
        JobStatus.SUCCEEDED,
    )
    assert ("job.progress", JobStatus.RUNNING) in events
    assert done.attempts == 1 and done.progress.fraction == 1.0 and done.report is not None
    names = {a.name for a in done.artifacts}
    assert {"model.onnx", "report.json", "report.html"} <= names
    for info in done.artifacts:
        data = artifacts.path(job.id, info.name).read_bytes()
        assert info.size_bytes == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads(artifacts.path(job.id, "report.json").read_text()) == done.report
    assert b"<html" in artifacts.path(job.id, "report.html").read_bytes().lower()
    assert _run(job, store, artifacts, settings) == []  # a redelivery of a finished job is a no-op
    assert store.get(job.id).attempts == 1


def test_analyze_succeeds(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    spec = {"kind": "analyze", "seed": 1}  # an evaluation block is refused with kind analyze (2026-12-05)
    job = _submit(store, artifacts, make_job(kind="analyze", spec=spec), mlp_onnx())
    _run(job, store, artifacts, settings)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.report is not None and "report.json" in {a.name for a in done.artifacts}


def test_analyze_runs_with_the_jobs_seed_and_full_diagnostics(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    """Until 2026-12-05 the worker ran every analyze job with seed 0 and sampled diagnostics, whatever
    the job's spec said (its echo included): the report must be the core's for the job's spec."""
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.pipeline import analyze

    model = mlp_onnx()
    spec = {"kind": "analyze", "seed": 5, "full_diagnostics": True}
    job = _submit(store, artifacts, make_job(kind="analyze", spec=spec), model)
    _run(job, store, artifacts, settings)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    report = json.loads(artifacts.path(job.id, "report.json").read_bytes())
    assert report["reproducibility"]["seed"] == 5
    assert report["reproducibility"]["spec"] == {"kind": "analyze", "seed": 5, "full_diagnostics": True}
    local = analyze(load_model(artifacts.model_input(job.id)), seed=5, full_diagnostics=True).report
    assert report["diagnostics"] == json.loads(json.dumps(local["diagnostics"]))
    seed0 = analyze(load_model(artifacts.model_input(job.id)), seed=0).report
    assert report["diagnostics"] != json.loads(json.dumps(seed0["diagnostics"]))  # the seed mattered


def test_cancel_while_running_stops_between_layers(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(spec=SPEC, callback=ALL_EVENTS), mlp_onnx())
    events: Events = []

    def notify(kind: str, j: Job) -> None:
        events.append((kind, j.status))
        if kind == "job.progress":
            store.request_cancel(j.id)  # the user presses cancel mid-run

    run_job(job.id, store=store, artifacts=artifacts, settings=settings, notify=notify)
    done = store.get(job.id)
    assert done.status is JobStatus.CANCELLED
    assert events[-1] == ("job.cancelled", JobStatus.CANCELLED)
    assert artifacts.list(job.id) == []


def test_soft_time_limit_fails_the_job_with_a_time_limit_problem(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    job = _submit(store, artifacts, make_job(spec=SPEC, callback=ALL_EVENTS), mlp_onnx())

    def notify(kind: str, j: Job) -> None:
        if kind == "job.progress":  # where Celery's SIGUSR1 handler would raise it
            raise SoftTimeLimitExceeded()

    run_job(job.id, store=store, artifacts=artifacts, settings=settings, notify=notify)
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error["type"].endswith("/time-limit") and failed.error["status"] == 422


def test_state_dict_with_architecture_and_calibration(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: MakeJob,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((24, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=24)
    spec = {
        "prune": {"keep": 0.6},
        "quantize": {"bits": 8},
        "seed": 5,
        "evaluation": {"inputs": "calibration", "holdout_fraction": 0.5},
    }
    job = make_job(
        spec=spec,
        has_architecture=True,
        has_calibration=True,
        input=InputInfo(filename="cnn.pt", format="pt", sha256="0" * 64, size_bytes=1),
    )
    store.create(job)
    artifacts.save_input(job.id, "model.pt", write_pt(tiny_cnn(), tmp_path / "cnn.pt").read_bytes())
    artifacts.save_input(job.id, "architecture.json", json.dumps(cnn_architecture()).encode())
    calib = write_calibration(tmp_path / "calib.npz", inputs, labels).read_bytes()
    artifacts.save_input(job.id, "calibration.npz", calib)
    _run(job, store, artifacts, settings)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    names = {a.name for a in done.artifacts}
    assert {
        "model.onnx",
        "model.pt",
        "architecture.json",
        "report.json",
        "report.html",
    } <= names  # the artifact set of docs/api.md
    assert hashlib.sha256(calib).hexdigest() in json.dumps(done.report)  # the report names its inputs


def test_cuda_job_without_cuda_fails_cleanly(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    job = _submit(store, artifacts, make_job(spec={**SPEC, "device": "cuda"}), mlp_onnx())
    _run(job, store, artifacts, settings)
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error["type"].endswith("/invalid-spec")
    assert failed.error["errors"][0]["field"] == "spec.device"


@pytest.mark.gpu
def test_cuda_job_runs_on_the_gpu(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    job = _submit(store, artifacts, make_job(spec={**SPEC, "device": "cuda"}), mlp_onnx())
    _run(job, store, artifacts, settings)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.report is not None and "cuda" in json.dumps(done.report["reproducibility"]).lower()


@pytest.mark.parametrize(("worker_device", "expected"), [("cpu", "cpu"), ("auto", "auto")])
def test_a_cpu_worker_keeps_auto_jobs_on_the_cpu(
    settings: WorkerSettings,
    make_job: MakeJob,
    artifacts: ArtifactStore,
    worker_device: str,
    expected: str,
) -> None:
    """NETSHRINK_DEVICE=cpu pins `device: auto` jobs to the CPU; the report records what ran."""
    s = settings.model_copy(update={"device": worker_device})
    store = SQLiteJobStore(s.sqlite_path, retention_s=s.artifact_retention_s)
    job = _submit(store, artifacts, make_job(spec={**SPEC, "device": "auto"}), mlp_onnx())
    _run(job, store, artifacts, s)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.report is not None
    assert done.report["reproducibility"]["spec"]["device"] == expected
    assert done.report["reproducibility"]["input_sha256"] == job.input.sha256


def test_a_reaped_execution_stops_without_writing_and_the_next_one_finishes(
    store: SQLiteJobStore, artifacts: ArtifactStore, settings: WorkerSettings, make_job: MakeJob
) -> None:
    """The worker was cut off long enough for the reaper to take the job back: when its lease
    heartbeat finds out, it stops between layers and leaves the job to the new delivery."""
    fast = settings.model_copy(update={"lease_heartbeat_s": 0.02})
    job = _submit(store, artifacts, make_job(spec=SPEC, callback=ALL_EVENTS), mlp_onnx())
    events: Events = []

    def notify(kind: str, j: Job) -> None:
        events.append((kind, j.status))
        if kind == "job.progress" and store.get(j.id).status is JobStatus.RUNNING:
            store.reap(j.id, max_attempts=3, now=utcnow() + timedelta(hours=1))
            time.sleep(0.3)  # the heartbeat notices within one interval

    run_job(job.id, store=store, artifacts=artifacts, settings=fast, notify=notify)
    back = store.get(job.id)
    assert back.status is JobStatus.QUEUED and back.attempts == 1, back
    assert artifacts.list(job.id) == [] and events[-1][0] == "job.progress"
    assert _run(job, store, artifacts, settings)[-1] == ("job.succeeded", JobStatus.SUCCEEDED)
    assert store.get(job.id).attempts == 2


class _OutageStore(SQLiteJobStore):
    """The real SQLite store whose progress write hits an outage longer than the store retries."""

    def set_progress(self, job_id: str, progress: Progress) -> None:
        if progress.stage != "loading":
            raise StoreUnavailableError("store down")
        super().set_progress(job_id, progress)


def test_a_store_outage_leaves_the_job_to_its_lease_not_failed(
    settings: WorkerSettings, artifacts: ArtifactStore, make_job: MakeJob
) -> None:
    store = _OutageStore(settings.sqlite_path, retention_s=60)
    job = _submit(store, artifacts, make_job(spec=SPEC), mlp_onnx())
    with pytest.raises(StoreUnavailableError):
        run_job(job.id, store=store, artifacts=artifacts, settings=settings)
    stuck = store.get(job.id)
    assert stuck.status is JobStatus.RUNNING and stuck.error is None and stuck.lease_token is not None
    later = utcnow() + timedelta(seconds=store.lease_s + 1)
    assert store.expired_leases(later) == [job.id]  # the reaper will requeue it


def test_the_worker_loads_with_the_same_size_limit_as_the_api(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: MakeJob,
    tmp_path: Path,
) -> None:
    """Issue 13 §2: the worker used the core's own default cap while the API used its setting.
    Both now read ``max_unzipped_bytes`` (one WorkerSettings field, inherited by ServiceSettings)."""
    from netshrink.service.settings import ServiceSettings

    assert "max_unzipped_bytes" not in ServiceSettings.__annotations__  # inherited, never redeclared
    inputs = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)  # 2048 bytes of data
    calib = write_calibration(tmp_path / "calib.npz", inputs).read_bytes()
    tight = settings.model_copy(update={"max_unzipped_bytes": 2000})
    job = make_job(spec=SPEC, has_calibration=True)
    _submit(store, artifacts, job, mlp_onnx())
    artifacts.save_input(job.id, "calibration.npz", calib)
    _run(job, store, artifacts, tight)
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error["type"].endswith("/limit-exceeded"), failed.error
    assert "the limit is 2000" in failed.error["detail"]
