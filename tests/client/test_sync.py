"""NetshrinkClient against a real HTTP server implementing the docs/api.md contract (see contract_server)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netshrink.client import (
    ApiError,
    DigestMismatchError,
    Job,
    NetshrinkClient,
    RetryPolicy,
    ServerUnreachableError,
    WaitTimeoutError,
)
from netshrink.client._protocol import content_digest_sha256, parse_retry_after
from tests.client.contract_server import LAYERS, MODEL_BYTES, REL_L2, ContractState, free_port_url

SPEC = {"prune": {"keep": 0.5}, "quantize": {"bits": 4}, "seed": 7}
FAST = RetryPolicy(max_retries=3, backoff_s=0.0)


def test_submit_returns_queued_job_with_echoed_spec(
    server: str, state: ContractState, model_file: Path
) -> None:
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC)
    assert job.status == "queued" and not job.is_terminal
    assert job.spec["seed"] == 7 and job.spec["quantize"]["bits"] == 4
    assert job.input["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert job.retry_after_s == 0.0
    sent = state.headers[-1]
    assert sent["idempotency-key"]  # generated, so a retried POST never makes two jobs
    assert sent["user-agent"].startswith("netshrink-client/")
    assert "authorization" not in sent


def test_wait_reports_progress_and_follows_retry_after(server: str, model_file: Path) -> None:
    seen: list[Job] = []
    # A 5 s default poll interval would make this take 20 s; the server's Retry-After: 0 wins.
    with NetshrinkClient(server, retry=FAST, poll_interval_s=5.0) as ns:
        job = ns.submit(model_file, SPEC)
        t0 = time.monotonic()
        done = ns.wait(job.id, timeout_s=30, on_progress=seen.append)
        elapsed = time.monotonic() - t0
    assert done.status == "succeeded" and done.is_terminal
    assert elapsed < 3.0
    running = [j.progress.layer for j in seen if j.status == "running"]
    assert running == list(range(1, LAYERS + 1))
    fractions = [j.progress.fraction for j in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[-1] is done and done.retry_after_s is None
    assert {a.name for a in done.artifacts} == {"model.onnx", "report.json"}


def test_wait_times_out_without_oversleeping(server: str, state: ContractState, model_file: Path) -> None:
    state.poll_retry_after = "30"
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC)
        t0 = time.monotonic()
        with pytest.raises(WaitTimeoutError) as info:
            ns.wait(job.id, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - t0 < 2.0  # sleeps are capped by the deadline, not Retry-After
    assert info.value.job.status == "running"


def test_download_verifies_digests_and_report(server: str, model_file: Path, tmp_path: Path) -> None:
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC, wait_s=10)
        assert job.status == "succeeded"  # Prefer: wait=N answered 200 with the finished job
        paths = ns.download(job.id, tmp_path / "out")
        report = ns.report(job.id)
    assert set(paths) == {"model.onnx", "report.json"}
    assert paths["model.onnx"].read_bytes() == MODEL_BYTES
    assert json.loads(paths["report.json"].read_text()) == report
    assert report["summary"]["error"]["relative_l2"] == REL_L2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "report.json"]


def test_download_refuses_corrupt_bytes(
    server: str, state: ContractState, model_file: Path, tmp_path: Path
) -> None:
    state.corrupt = {"model.onnx"}
    out = tmp_path / "out"
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC, wait_s=10)
        with pytest.raises(DigestMismatchError, match="model.onnx"):
            ns.download(job.id, out, names=["model.onnx"])
        assert ns.download(job.id, out, names=["report.json"])["report.json"].is_file()
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # no partial/corrupt file left


def test_download_rejects_path_traversal(server: str, model_file: Path, tmp_path: Path) -> None:
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC, wait_s=10)
        with pytest.raises(ValueError, match="refusing"):
            ns.download(job.id, tmp_path, names=["../evil"])
        with pytest.raises(ApiError) as info:
            ns.download(job.id, tmp_path, names=["missing.bin"])
    assert info.value.status == 404


def test_429_is_retried_honouring_retry_after(server: str, state: ContractState) -> None:
    state.throttle, state.retry_after = 2, "1"
    with NetshrinkClient(server, retry=RetryPolicy(max_retries=3, backoff_s=0.0)) as ns:
        t0 = time.monotonic()
        caps = ns.capabilities()
        elapsed = time.monotonic() - t0
    assert "onnx" in caps["formats"]
    assert state.requests == ["GET /v1/capabilities"] * 3
    assert 2.0 <= elapsed < 5.0  # two Retry-After: 1 sleeps, not the zero backoff


def test_retries_give_up_with_the_problem(server: str, state: ContractState) -> None:
    state.throttle = 10
    with NetshrinkClient(server, retry=RetryPolicy(max_retries=2, backoff_s=0.0)) as ns:
        with pytest.raises(ApiError) as info:
            ns.capabilities()
    assert info.value.status == 429 and info.value.title == "Too Many Requests"
    assert info.value.problem["detail"] == "rate limit"
    assert len(state.requests) == 3


def test_503_on_submit_is_retried_with_the_same_idempotency_key(
    server: str, state: ContractState, model_file: Path
) -> None:
    state.unavailable = 1
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC)
    assert state.requests == ["POST /v1/jobs"] * 2
    keys = {h["idempotency-key"] for h in state.headers}
    assert len(keys) == 1
    assert list(state.jobs) == [job.id]


def test_idempotency_key_replays_and_conflicts(server: str, model_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(b"different")
    with NetshrinkClient(server, retry=FAST) as ns:
        a = ns.submit(model_file, SPEC, idempotency_key="k-1")
        b = ns.submit(model_file, SPEC, idempotency_key="k-1")
        with pytest.raises(ApiError) as info:
            ns.submit(other, SPEC, idempotency_key="k-1")
    assert a.id == b.id
    assert info.value.status == 422


def test_problem_bodies_surface_as_api_error(server: str, model_file: Path, tmp_path: Path) -> None:
    bad_ext = tmp_path / "model.txt"
    bad_ext.write_bytes(b"x")
    with NetshrinkClient(server, retry=FAST) as ns:
        with pytest.raises(ApiError) as missing:
            ns.get("nope")
        with pytest.raises(ApiError) as invalid:
            ns.submit(model_file, {"prune": {"keep": 1.5}})
        with pytest.raises(ApiError) as media:
            ns.submit(bad_ext, SPEC)
    assert missing.value.status == 404 and missing.value.problem["type"] == "about:blank"
    assert invalid.value.status == 422
    assert invalid.value.errors[0]["pointer"] == "/spec/prune/keep"
    assert media.value.status == 415
    with pytest.raises(FileNotFoundError):
        NetshrinkClient(server).submit(tmp_path / "absent.onnx", SPEC)


def test_api_key_and_server_from_environment(
    server: str, state: ContractState, monkeypatch: pytest.MonkeyPatch
) -> None:
    state.api_key = "sk-test"
    with NetshrinkClient(server, retry=FAST) as anonymous:
        with pytest.raises(ApiError) as info:
            anonymous.capabilities()
    assert info.value.status == 401
    monkeypatch.setenv("NETSHRINK_SERVER", server + "/")
    monkeypatch.setenv("NETSHRINK_API_KEY", "sk-test")
    with NetshrinkClient(retry=FAST) as ns:
        assert ns.base_url == server
        assert ns.capabilities()["kinds"] == ["compress", "analyze"]
    assert state.headers[-1]["authorization"] == "Bearer sk-test"


def test_unreachable_server_raises_after_retries() -> None:
    with NetshrinkClient(free_port_url(), retry=RetryPolicy(max_retries=1, backoff_s=0.0)) as ns:
        with pytest.raises(ServerUnreachableError):
            ns.capabilities()


def test_list_paginates_and_filters(server: str, model_file: Path) -> None:
    with NetshrinkClient(server, retry=FAST) as ns:
        ids = [ns.submit(model_file, {"seed": i}).id for i in range(5)]
        done = ns.submit(model_file, SPEC, wait_s=5).id
        page = ns.list(limit=2)
        every = [j.id for j in ns.iter_jobs(page_size=2)]
        succeeded = ns.list(status="succeeded")
    assert [j.id for j in page.items] == [done, ids[-1]] and page.next_cursor
    assert every == [done, *reversed(ids)]
    assert [j.id for j in succeeded.items] == [done] and succeeded.next_cursor is None


def test_cancel_and_delete(server: str, model_file: Path) -> None:
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.submit(model_file, SPEC)
        assert ns.cancel(job.id).status == "cancelled"
        with pytest.raises(ApiError) as again:
            ns.cancel(job.id)
        ns.delete(job.id)
        with pytest.raises(ApiError) as gone:
            ns.get(job.id)
    assert again.value.status == 409 and gone.value.status == 404


def test_failed_job_carries_its_problem(server: str, tmp_path: Path) -> None:
    boom = tmp_path / "boom.onnx"
    boom.write_bytes(b"x")
    with NetshrinkClient(server, retry=FAST) as ns:
        job = ns.wait(ns.submit(boom, SPEC).id, timeout_s=10)
    assert job.status == "failed" and job.error is not None and job.error["status"] == 500


def test_optional_parts_are_uploaded(
    server: str, state: ContractState, model_file: Path, tmp_path: Path
) -> None:
    calib = tmp_path / "calib.npz"
    calib.write_bytes(b"PK\x03\x04")
    with NetshrinkClient(server, retry=FAST) as ns:
        a = ns.submit(model_file, SPEC, architecture={"layers": []}, calibration=calib)
        arch = tmp_path / "arch.json"
        arch.write_text("{}")
        b = ns.submit(model_file, SPEC, architecture=arch)
    assert state.jobs[a.id]["extra_parts"] == ["architecture", "calibration"]
    assert state.jobs[b.id]["extra_parts"] == ["architecture"]


def test_header_parsers() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry now
    digest = hashlib.sha256(b"abc")

    header = f"sha-512=:AAAA:, sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    assert content_digest_sha256(header) == digest.hexdigest()
    assert content_digest_sha256("sha-512=:AAAA:") is None


def test_sdk_imports_only_the_http_stack() -> None:
    """The SDK depends on the HTTP contract alone (docs/development.md "Layout").

    No server-side package loads."""
    forbidden = [
        "compression",
        "service",
        "workers",
        "cli",
        "fastapi",
        "starlette",
        "celery",
        "redis",
        "torch",
    ]
    code = f"import sys, client; print([m for m in {forbidden!r} if m in sys.modules])"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
