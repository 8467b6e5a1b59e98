"""``POST /v1/jobs`` admits (validates, stores, enqueues) a bounded number of submissions at once per
API process: two, in embedded mode and in Redis mode (``service/routes/submit.py``, issue 13 §8).

The real app under a real TestClient, twelve submits from twelve threads. The core's validation is
wrapped (it still runs) to count how many admissions are inside it at once and to hold each one
for 50 ms, so that every admission the limiter lets through overlaps the others.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from netshrink.service.main import create_app
from netshrink.service.routes import submit as submit_route
from tests.service.conftest import SPEC, make_settings, submit

REDIS_URL = "redis://127.0.0.1:6379/0"


def _peak_admissions(client: TestClient, model: bytes, monkeypatch: pytest.MonkeyPatch) -> int:
    lock, inside, peak = threading.Lock(), [0], [0]
    validate = submit_route.validate_inputs

    def counted(*args: Any, **kwargs: Any) -> int:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            time.sleep(0.05)
            return validate(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(submit_route, "validate_inputs", counted)
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: submit(client, model, SPEC).status_code, range(12)))
    assert codes == [202] * 12
    return peak[0]


def test_embedded_mode_admits_two_submits_at_once(
    tmp_path: Path, onnx_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert _peak_admissions(client, onnx_model, monkeypatch) == 2


@pytest.mark.redis
def test_redis_mode_admits_two_submits_at_once_per_process(
    tmp_path: Path, redis_prefix: str, onnx_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, redis_url=REDIS_URL, redis_key_prefix=redis_prefix)
    with TestClient(create_app(settings)) as client:
        assert _peak_admissions(client, onnx_model, monkeypatch) == 2
