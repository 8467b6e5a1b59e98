"""The SDK's progress callback against the REAL service (embedded mode), in a module of its own: its
server is the only embedded one alive in the process (see ``tests.threaded_server.embedded_service``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from netshrink.client import Job, NetshrinkClient
from tests import factories
from tests.threaded_server import embedded_service

pytestmark = pytest.mark.slow


def test_on_progress_sees_a_running_multi_layer_job(tmp_path: Path) -> None:
    """Through the SDK, with a real worker: at least one state between queued and done, with the
    stage, the layer out of six and a fraction strictly inside (0, 1). The server's Retry-After is
    10 s, far longer than the job, so only the long poll (answered on each change) can see them."""
    model = factories.write_bytes(factories.mlp_onnx((32, 64, 64, 64, 64, 64, 10)), tmp_path / "m.onnx")
    spec = {"prune": {"keep": 0.5}, "quantize": {"bits": 4}, "draws": 4, "seed": 0,
            "compare_baselines": True, "evaluation": {"inputs": "gaussian", "samples": 2000}}  # fmt: skip
    seen: list[Job] = []
    with embedded_service(tmp_path / "data", retry_after_s=10) as url, NetshrinkClient(url) as ns:
        job = ns.submit(model, spec)
        t0 = time.monotonic()
        done = ns.wait(job.id, timeout_s=300, on_progress=seen.append)
        elapsed = time.monotonic() - t0
    assert done.status == "succeeded", done.error
    assert elapsed < 10 or len(seen) > elapsed / 10 + 1  # not one GET per Retry-After
    middle = [j.progress for j in seen if j.status == "running" and 0.0 < j.progress.fraction < 1.0]
    assert any(pr.stage == "compressing" and 1 <= pr.layer <= pr.layers_total == 6 for pr in middle), [
        (j.status, j.progress) for j in seen
    ]
    fractions = [j.progress.fraction for j in seen]
    assert fractions == sorted(fractions) and seen[-1].progress.fraction == 1.0
