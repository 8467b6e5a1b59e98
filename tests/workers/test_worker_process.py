"""``netshrink worker`` as a real separate process (prefork pool) on the real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netshrink.cli.worker_cmd import main as worker_main
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.celery_app import create_celery_app, enqueue_job
from netshrink.workers.jobs import Job, JobStatus
from netshrink.workers.settings import get_settings
from netshrink.workers.store_redis import RedisJobStore
from tests.factories import mlp_onnx
from tests.workers.helpers import REDIS_URL, ROOT, redis_worker_env


@pytest.mark.redis
@pytest.mark.slow
def test_worker_process_runs_a_job_heartbeats_and_stops_warm(
    tmp_path: Path, redis_prefix: str, make_job: Callable[..., Job]
) -> None:
    env, settings = redis_worker_env(tmp_path, redis_prefix)
    store = RedisJobStore(REDIS_URL, retention_s=60, prefix=redis_prefix)
    job = store.create(make_job(spec={"quantize": {"bits": 1}})).job
    ArtifactStore(settings.artifacts_dir).save_input(job.id, "model.onnx", b"x")
    enqueue_job(create_celery_app(settings), job)
    code = (
        "import sys; from netshrink.cli.worker_cmd import main; sys.exit(main(['-c', '1', '-l', 'WARNING']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not store.get(job.id).status.is_terminal:
            time.sleep(0.2)
        done = store.get(job.id)
        assert done.status is JobStatus.FAILED and done.error is not None
        assert done.error["type"].endswith("/invalid-spec")
        workers = store.list_workers(max_age_s=60)
        assert len(workers) == 1 and workers[0].pid == proc.pid and workers[0].queues == ["cpu", "webhooks"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    try:  # a warm shutdown removes the heartbeat: no "alive" worker for the next 60 s
        assert store.list_workers(max_age_s=60) == []
    finally:
        store.close()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


@pytest.mark.redis
@pytest.mark.slow
def test_a_job_that_kills_its_worker_is_failed_after_max_attempts(
    tmp_path: Path, redis_prefix: str, make_job: Callable[..., Job]
) -> None:
    """SIGKILL the prefork child mid-job: late ack + reject_on_worker_lost redeliver the message,
    and the redelivery exceeds max_attempts=1, so the job ends failed (never stuck "running")."""
    env, settings = redis_worker_env(tmp_path, redis_prefix, max_attempts="1")
    store = RedisJobStore(REDIS_URL, retention_s=60, prefix=redis_prefix)
    spec = {
        "prune": {"keep": 0.5},
        "draws": 64,
        "seed": 1,
        "evaluation": {"inputs": "gaussian", "samples": 4096},
    }
    job = store.create(make_job(spec=spec)).job
    ArtifactStore(settings.artifacts_dir).save_input(job.id, "model.onnx", mlp_onnx())
    enqueue_job(create_celery_app(settings), job)
    code = "import sys; from netshrink.cli.worker_cmd import main; sys.exit(main(['-c', '1', '-l', 'ERROR']))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while store.get(job.id).status is JobStatus.QUEUED:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        (child,) = _children(proc.pid)
        os.kill(child, signal.SIGKILL)  # e.g. the OOM killer
        while not store.get(job.id).status.is_terminal:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        done = store.get(job.id)
        assert done.status is JobStatus.FAILED and done.attempts == 2
        assert done.error is not None and done.error["type"].endswith("/too-many-attempts")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        store.close()


def test_worker_refuses_to_start_without_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NETSHRINK_REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert worker_main([]) == 2
    finally:
        get_settings.cache_clear()
    assert "NETSHRINK_REDIS_URL" in capsys.readouterr().err
