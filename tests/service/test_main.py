"""``service/main.py``: the app's start-up settles its heap (the core's loaders imported, then
``gc.freeze``), once per process."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from netshrink.service import main
from tests.service.conftest import make_settings


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
