"""Fixtures for the fine-tuning tests: a digits MLP, a BN CNN, their training files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories

torch.set_num_threads(1)  # tiny models: threads only add contention on a shared 2-core machine


@pytest.fixture(scope="session")
def ft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finetune")


@pytest.fixture(scope="session")
def digits_train(ft_dir: Path) -> Path:
    X, y = factories.digits_inputs(300)  # (300, 64), (300,)
    path = ft_dir / "digits.npz"
    np.savez(path, inputs=X, labels=y)
    return path


@pytest.fixture(scope="session")
def digits_mlp(ft_dir: Path) -> Path:
    """64 -> 32 -> 32 -> 10 ReLU MLP (untrained) as ONNX."""
    return factories.write_bytes(factories.mlp_onnx((64, 32, 32, 10)), ft_dir / "mlp.onnx")


@pytest.fixture(scope="session")
def cnn_train(ft_dir: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 1, 8, 8)).astype(np.float32)
    y = (X[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + 2 * (
        X[:, 0, 4:].sum(axis=(1, 2)) > 0
    )  # 4 classes
    path = ft_dir / "cnn.npz"
    np.savez(path, inputs=X, labels=y)
    return path
