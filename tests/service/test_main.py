"""``service/main.py``: the app's start-up settles its heap (the core's loaders imported, then
``gc.freeze``), once per process, and in Redis mode opens its pools' connections."""

from __future__ import annotations

import gc
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from netshrink.service import main
from netshrink.service.auth import generate_key
from netshrink.workers.store import get_store
from tests import factories
from tests.private_redis import PrivateRedis
from tests.service.conftest import SPEC, make_settings
from tests.threaded_server import serve_app


def test_start_up_settles_the_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(main, "settle_heap", lambda: calls.append(1))
    with TestClient(main.create_app(make_settings(tmp_path))) as client:
        assert client.get("/healthz").status_code == 200
    assert calls == [1]


def test_settle_heap_imports_the_loaders_and_freezes_once() -> None:
    main.settle_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert {"netshrink.compression.graph.loading", "netshrink.compression.pipeline", "onnx"} <= set(
        sys.modules
    )
    main.settle_heap()  # cached: no second collection, nothing more frozen
    assert gc.get_freeze_count() == frozen


@pytest.mark.redis
def test_redis_mode_opens_its_connections_before_the_first_request(tmp_path: Path) -> None:
    """Start-up opens the store's, the status reads' and the broker producers' connections: a burst
    of 20 concurrent submits then opens none (each open had cost its request 40-160 ms under load,
    issue 13 §8). Counted on a private redis-server, where every client is this app's."""
    with PrivateRedis(tmp_path / "redis") as server:
        settings = make_settings(tmp_path, redis_url=server.url, rate_limit_requests=10_000)
        store = get_store(settings)
        token, record = generate_key("burst")
        store.create_api_key(record)
        store.close()
        counter = redis.Redis(port=server.port)
        body = {"files": {"model": ("m.onnx", factories.mlp_onnx())}, "data": {"spec": json.dumps(SPEC)}}
        with serve_app(main.create_app(settings)) as url:
            opened = counter.info("clients")["connected_clients"]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
                with ThreadPoolExecutor(20) as pool:
                    codes = list(pool.map(lambda _: http.post("/v1/jobs", **body).status_code, range(40)))
            assert codes == [202] * 40
            assert counter.info("clients")["connected_clients"] == opened
        counter.close()
