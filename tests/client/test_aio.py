"""AsyncNetshrinkClient: the same contract over real sockets and over httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from netshrink.client import ApiError, AsyncNetshrinkClient, DigestMismatchError, Job, RetryPolicy
from tests.client.contract_server import LAYERS, MODEL_BYTES, ContractState, create_contract_app

SPEC = {"prune": {"keep": 0.5, "granularity": "neuron"}, "quantize": {"bits": 4}, "seed": 1}
FAST = RetryPolicy(max_retries=3, backoff_s=0.0)


def test_submit_wait_download_report_over_http(server: str, model_file: Path, tmp_path: Path) -> None:
    seen: list[Job] = []

    async def on_progress(job: Job) -> None:  # async callbacks are awaited
        await asyncio.sleep(0)
        seen.append(job)

    async def scenario() -> tuple[Job, dict[str, Path], dict[str, object]]:
        async with AsyncNetshrinkClient(server, retry=FAST, poll_interval_s=5.0) as ns:
            job = await ns.submit(model_file, SPEC)
            done = await ns.wait(job.id, timeout_s=30, on_progress=on_progress)
            return done, await ns.download(done.id, tmp_path), await ns.report(done.id)

    t0 = time.monotonic()
    done, paths, report = asyncio.run(scenario())
    assert time.monotonic() - t0 < 3.0  # Retry-After: 0 beats the 5 s default interval
    assert done.status == "succeeded"
    assert [j.progress.layer for j in seen if j.status == "running"] == list(range(1, LAYERS + 1))
    assert paths["model.onnx"].read_bytes() == MODEL_BYTES
    assert report["summary"]["budget_met"] is None  # no target in the spec


def test_retries_and_errors_over_asgi_transport(model_file: Path, tmp_path: Path) -> None:
    state = ContractState(throttle=2, corrupt={"model.onnx"})
    transport = httpx.ASGITransport(app=create_contract_app(state))

    async def scenario() -> None:
        async with AsyncNetshrinkClient("http://netshrink.test", transport=transport, retry=FAST) as ns:
            job = await ns.submit(model_file, SPEC, wait_s=5)
            assert job.status == "succeeded"
            with pytest.raises(DigestMismatchError):
                await ns.download(job.id, tmp_path)
            with pytest.raises(ApiError) as info:
                await ns.get("missing")
            assert info.value.status == 404
            page = await ns.list(status="succeeded")
            assert [j.id for j in page.items] == [job.id]
            assert [j.id async for j in ns.iter_jobs(page_size=1)] == [job.id]
            await ns.delete(job.id)
            assert (await ns.capabilities())["formats"]

    asyncio.run(scenario())
    assert state.requests[:3] == ["POST /v1/jobs"] * 3  # two 429s, then accepted
    assert not (tmp_path / "model.onnx").exists()
