"""run_job on finetune jobs: the follow-up compress checked before training, cancelling while
measuring, and the artifact entries against the saved files (split from ``test_run.py``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import Job, JobStatus
from netshrink.workers.run import run_job
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store_sqlite import SQLiteJobStore
from tests.factories import mlp_onnx
from tests.workers.run_helpers import ALL_EVENTS, Events, MakeJob, run_stages
from tests.workers.run_helpers import run_events as _run
from tests.workers.run_helpers import submit_job as _submit

FT_SPEC = {"kind": "finetune", "epochs": 1, "batch_size": 32, "seed": 0}
FOLLOW_UP = {"compress": {"quantize": {"bits": 4}}}


def _finetune_job(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    job: Job,
    tmp_path: Path,
    validation: int | None = None,
) -> Job:
    """A finetune job as the API leaves it: a 64-16-10 MLP, 120 digits samples in ``train.npz`` and,
    with ``validation``, that many more in ``validation.npz``."""
    from tests.factories import digits_inputs

    _submit(store, artifacts, job, mlp_onnx((64, 16, 10)))
    for name, n in (("train.npz", 120), ("validation.npz", validation)):
        if n is not None:
            X, y = digits_inputs(n)
            np.savez(tmp_path / name, inputs=X, labels=y)
            artifacts.save_input(job.id, name, (tmp_path / name).read_bytes())
    return job


def test_a_finetune_job_cancelled_while_measuring_ends_cancelled_without_artifacts(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: MakeJob,
    tmp_path: Path,
) -> None:
    """The measuring stage (α̂, q(ε), the prune curves) never asked should_cancel: a cancel there was
    acknowledged (202) and the job ran on to succeeded (found by probing, 2026-12-05)."""
    job = make_job(kind="finetune", spec=FT_SPEC, callback=ALL_EVENTS)
    _finetune_job(store, artifacts, job, tmp_path)
    events: Events = []
    stages: list[str] = []

    def notify(kind: str, j: Job) -> None:
        events.append((kind, j.status))
        stages.append(j.progress.stage)
        if kind == "job.progress" and j.progress.stage == "measuring":
            store.request_cancel(j.id)  # the user presses cancel while the curves are measured

    run_job(job.id, store=store, artifacts=artifacts, settings=settings, notify=notify)
    done = store.get(job.id)
    assert "training" in stages and "measuring" in stages  # it got there through the real stages
    assert done.status is JobStatus.CANCELLED, (done.status, done.progress, done.error)
    assert events[-1] == ("job.cancelled", JobStatus.CANCELLED)
    assert done.progress.stage == "measuring" and artifacts.list(job.id) == []


@pytest.mark.parametrize(
    ("follow_up", "validation", "problem", "pointer"),
    [  # a 1-sample validation split: it trained both arms, then failed on /calibration
        (FOLLOW_UP, 1, "invalid-calibration", "/validation"),
        # an unknown layer in the follow-up (the API refuses it at submit; a job stored anyway, by
        # another client of the store or an older API): it trained both arms, then failed
        ({"compress": {"quantize": {"bits": 4}, "exclude": ["nope"]}}, None, "invalid-spec", "/spec/exclude"),
    ],
    ids=["one-validation-sample", "unknown-layer"],
)
def test_a_finetune_job_whose_follow_up_cannot_run_fails_before_training(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: MakeJob,
    tmp_path: Path,
    follow_up: dict[str, Any],
    validation: int | None,
    problem: str,
    pointer: str,
) -> None:
    """The follow-up compress is checked before any training (until 2026-12-05: after both arms)."""
    job = make_job(kind="finetune", spec={**FT_SPEC, **follow_up}, callback=ALL_EVENTS)
    _finetune_job(store, artifacts, job, tmp_path, validation=validation)
    stages = run_stages(job, store, artifacts, settings)
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error["type"].endswith(f"/{problem}") and failed.error["status"] == 422
    (item,) = failed.error["errors"]
    assert item["pointer"] == pointer, item
    assert "training" not in stages and artifacts.list(job.id) == []


def test_a_finetune_jobs_artifact_entries_match_the_saved_files(
    store: SQLiteJobStore,
    artifacts: ArtifactStore,
    settings: WorkerSettings,
    make_job: MakeJob,
    tmp_path: Path,
) -> None:
    """report.compress.artifacts named model.onnx with the sha256 of compressed_model.onnx; the job's
    model.onnx is the fine-tuned, uncompressed model."""
    job = make_job(kind="finetune", spec={**FT_SPEC, **FOLLOW_UP})
    _finetune_job(store, artifacts, job, tmp_path)
    _run(job, store, artifacts, settings)
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    report = json.loads(artifacts.path(job.id, "report.json").read_text())
    nested = report["compress"]["artifacts"]
    assert [a["name"] for a in nested] == ["compressed_model.onnx"]
    saved = {info.name: info for info in done.artifacts}
    for entry in [*report["artifacts"], *nested]:
        data = artifacts.path(job.id, entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), entry["name"]
        assert entry["size_bytes"] == len(data) == saved[entry["name"]].size_bytes, entry["name"]
