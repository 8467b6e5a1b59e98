"""Redis down → 503 problem+json with ``Retry-After`` (never a 500), and the SDK and
``netshrink submit`` retry it: recovering when Redis comes back, exiting 5 when they give up.

The service runs in Redis mode on uvicorn against a PRIVATE redis-server that the test starts,
SIGKILLs and restarts (``tests/private_redis.py``); the shared Redis is never touched.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from netshrink.cli import submit_cmd
from netshrink.client import ApiError, NetshrinkClient, RetryPolicy
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings
from tests import factories
from tests.private_redis import PrivateRedis
from tests.threaded_server import serve_app

pytestmark = [pytest.mark.redis, pytest.mark.slow]
SPEC = {"prune": {"keep": 0.5}, "seed": 7}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def api(tmp_path: Path, redis_server: PrivateRedis) -> Iterator[str]:
    settings = ServiceSettings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        host="127.0.0.1",
        auth_disabled=False,
        rate_limit_requests=1000,
    )
    with serve_app(create_app(settings)) as url:
        yield url


def _assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["status"] == 503 and body["type"].endswith("/service-unavailable")
    assert "Traceback" not in response.text


def test_redis_down_is_503_with_retry_after_on_every_job_route_and_metrics(
    api: str, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    model = factories.mlp_onnx()
    with httpx.Client(base_url=api, timeout=30) as http:
        created = http.post("/v1/jobs", files={"model": ("m.onnx", model)}, data={"spec": json.dumps(SPEC)})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert http.get(f"/v1/jobs/{job_id}").status_code == 200
        redis_server.kill()
        _assert_503(http.get(f"/v1/jobs/{job_id}"))
        _assert_503(http.get("/v1/jobs"))
        _assert_503(
            http.post("/v1/jobs", files={"model": ("m.onnx", model)}, data={"spec": json.dumps(SPEC)})
        )
        _assert_503(http.post(f"/v1/jobs/{job_id}/cancel"))
        _assert_503(http.get("/metrics"))
        assert http.get("/readyz").status_code == 503
        redis_server.start()  # the append-only file brings the job back
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        assert http.get("/metrics").status_code == 200


def test_sdk_rides_out_a_short_outage_and_gives_up_on_a_long_one(
    api: str, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(factories.mlp_onnx())
    patient = RetryPolicy(max_retries=8, backoff_s=0.2, max_delay_s=1.0)  # caps Retry-After at 1 s
    with NetshrinkClient(api, retry=patient) as ns:
        job = ns.submit(model, SPEC)
        redis_server.kill()
        restart = threading.Timer(2.0, redis_server.start)
        restart.start()
        try:
            assert ns.get(job.id).id == job.id  # 503s retried until Redis was back
        finally:
            restart.join()
        redis_server.kill()
        impatient = RetryPolicy(max_retries=2, backoff_s=0.1, max_delay_s=0.2)
        with NetshrinkClient(api, retry=impatient) as quick:
            started = time.monotonic()
            with pytest.raises(ApiError) as info:
                quick.get(job.id)
            assert info.value.status == 503 and time.monotonic() - started >= 0.4  # two sleeps of 0.2 s


def test_netshrink_submit_exits_5_when_redis_stays_down(
    api: str, redis_server: PrivateRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(factories.mlp_onnx())
    redis_server.kill()
    parser = argparse.ArgumentParser()
    submit_cmd.add_arguments(parser)
    args = parser.parse_args([str(model), "--server", api, "--max-retries", "1", "--wait"])
    started = time.monotonic()
    assert submit_cmd.run(args) == 5
    assert time.monotonic() - started >= 4.0  # it waited out one Retry-After (5 s) before giving up
    err = capsys.readouterr().err
    assert "503" in err and "Traceback" not in err
