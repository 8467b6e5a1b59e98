"""Root test configuration: one torch thread (2 shared cores), and shared model-file fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests import factories  # the repository root is on sys.path: pythonpath = ["."] in pyproject.toml

torch.set_num_threads(1)


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``write(data: bytes, name) -> Path``: put bytes in a fresh file under ``tmp_path``."""

    def _write(data: bytes, name: str = "model.onnx") -> Path:
        return factories.write_bytes(data, tmp_path / name)

    return _write
