"""Fixtures for the SDK tests: a real local HTTP server speaking the docs/api.md contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.contract_server import ContractState, serve


@pytest.fixture
def state() -> ContractState:
    return ContractState()


@pytest.fixture
def server(state: ContractState, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("NETSHRINK_SERVER", raising=False)
    monkeypatch.delenv("NETSHRINK_API_KEY", raising=False)
    with serve(state) as url:
        yield url


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    path.write_bytes(b"\x08\x07fake-but-opaque-model-bytes")
    return path
