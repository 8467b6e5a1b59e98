"""Models for ``bench/scale.py``: wide digits MLPs as ONNX files plus their calibration ``.npz``.

- ``trained``: 64 -> w -> w -> 10 ReLU MLP, trained briefly (Adam, seeded, CPU) on sklearn digits;
  the calibration set is the 1,437 training digits (80% of the 1,797), with labels.
- ``random``: the same shape (or any input width, e.g. 784) with Kaiming-uniform random weights
  (torch's default ``nn.Linear`` init, seeded) and Gaussian calibration inputs.

The ONNX file is written by the core's own architecture writer (``io.architecture_onnx.build_onnx``),
the same graph an uploaded ``.pt`` + architecture JSON becomes. Files are cached under
``bench/.cache/`` (gitignored): the 17M model is trained once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits

from bench.common import mlp, mlp_architecture, state_dict, train
from netshrink.compression.io.architecture import validate_architecture
from netshrink.compression.io.architecture_onnx import build_onnx

CACHE = Path(__file__).resolve().parent / ".cache"
N_CAL = 1437  # 80% of sklearn's 1,797 digits


def digits_cal() -> tuple[np.ndarray, np.ndarray]:
    """The first 1,437 digits of a seeded permutation, pixels in [0, 1]: (1437, 64) float32, labels."""
    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(X.shape[0])[:N_CAL]
    return (X[perm] / 16.0).astype(np.float32), y[perm].astype(np.int64)


def _write(model: torch.nn.Sequential, n_in: int, onnx_path: Path) -> None:
    arch = mlp_architecture(model, n_in)
    state = state_dict(model)
    onnx.save(build_onnx(validate_architecture(arch, state), state), str(onnx_path))


def mlp_files(
    width: int, *, n_in: int = 64, trained: bool = True, samples: int = N_CAL, epochs: int = 2
) -> tuple[Path, Path]:
    """(model.onnx, calibration.npz) for a 2-hidden-layer MLP of ``width``, built once and cached."""
    CACHE.mkdir(exist_ok=True)
    tag = f"{'trained' if trained else 'random'}-{n_in}x{width}x{width}x10"
    onnx_path = CACHE / f"{tag}.onnx"
    cal_path = CACHE / f"{tag}-cal{samples}.npz"
    torch.manual_seed(0)
    if not onnx_path.exists():
        model = mlp([n_in, width, width, 10])
        if trained:
            X, y = digits_cal()
            train(model, X, y, epochs=epochs, seed=0)
        _write(model, n_in, onnx_path)
    if not cal_path.exists():
        if trained and n_in == 64:
            X, y = digits_cal()
            reps = -(-samples // X.shape[0])
            X, y = np.tile(X, (reps, 1))[:samples], np.tile(y, reps)[:samples]  # (samples, 64)
            np.savez(cal_path, inputs=X, labels=y)
        else:
            g = np.random.default_rng(1)
            np.savez(cal_path, inputs=g.standard_normal((samples, n_in)).astype(np.float32))
    return onnx_path, cal_path
