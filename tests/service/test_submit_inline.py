"""Where a submission's admission runs (``service/routes/submit.runs_inline``): a small upload in
embedded mode is validated, stored and enqueued on the event loop (no worker-thread hop, issue 13
§8); a larger model, a data part, a callback URL, or Redis mode go to a worker thread. Same answers
either way: the refusals leave nothing behind."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from netshrink.service.routes import submit as submit_route
from netshrink.service.uploads import ParsedUpload, UploadedFile
from tests.service.conftest import SPEC, app_state, assert_problem, submit


@pytest.fixture
def where(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, per call of the core's validation, "loop" (on the event loop's thread) or "thread"."""
    seen: list[str] = []
    real = submit_route.validate_inputs

    def recording(*args: Any, **kwargs: Any) -> int:
        try:
            asyncio.get_running_loop()
            seen.append("loop")
        except RuntimeError:  # no loop runs in an anyio worker thread
            seen.append("thread")
        return real(*args, **kwargs)

    monkeypatch.setattr(submit_route, "validate_inputs", recording)
    return seen


def _calibration() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((4, 8), np.float32))
    return buf.getvalue()


def test_a_small_embedded_upload_is_admitted_on_the_event_loop(
    client: TestClient, onnx_model: bytes, where: list[str]
) -> None:
    assert len(onnx_model) <= submit_route.INLINE_MAX_BYTES
    r = submit(client, onnx_model, SPEC)
    assert r.status_code == 202, r.text
    assert where == ["loop"]
    state = app_state(client)
    job = state.store.get(r.json()["id"])
    assert job.enqueued  # sent and recorded, as from a thread
    assert state.artifacts.model_input(job.id).read_bytes() == onnx_model


def test_a_calibration_part_a_callback_or_a_larger_model_go_to_a_thread(
    client: TestClient, onnx_model: bytes, where: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert submit(client, onnx_model, SPEC, calibration=_calibration()).status_code == 202
    callback = {**SPEC, "callback": {"url": "https://hooks.example.com/x"}}
    r = submit(client, onnx_model, callback)  # its host is resolved (DNS): never on the loop
    assert r.status_code in (202, 422), r.text  # 422 where this machine cannot resolve it
    monkeypatch.setattr(submit_route, "INLINE_MAX_BYTES", len(onnx_model) - 1)
    assert submit(client, onnx_model, SPEC).status_code == 202
    assert where == ["thread", "thread", "thread"]


def test_an_inline_refusal_leaves_no_job_and_no_files(
    client: TestClient, onnx_model: bytes, where: list[str]
) -> None:
    r = submit(client, onnx_model, {"quantize": {"bits": 4}, "exclude": ["no_such_layer"]})
    assert "no_such_layer" in assert_problem(r, 422, "invalid-spec")["detail"]  # check_spec's answer
    assert where == ["loop"]
    assert client.get("/v1/jobs").json()["items"] == []
    assert app_state(client).artifacts.job_ids() == []


@pytest.mark.parametrize(
    ("local_reads", "parts", "size", "callback", "inline"),
    [
        (True, ("model",), 8_000, False, True),
        (True, ("model",), submit_route.INLINE_MAX_BYTES, False, True),
        (True, ("model",), submit_route.INLINE_MAX_BYTES + 1, False, False),
        (True, ("model", "calibration"), 8_000, False, False),
        (True, ("model",), 8_000, True, False),
        (False, ("model",), 8_000, False, False),  # Redis mode: round trips, never on the loop
    ],
)
def test_runs_inline(
    local_reads: bool, parts: tuple[str, ...], size: int, callback: bool, inline: bool
) -> None:
    upload = ParsedUpload(
        files={p: UploadedFile(field=p, filename=p, path=Path(p), size_bytes=size) for p in parts}
    )
    assert submit_route.runs_inline(local_reads, upload, callback) is inline
