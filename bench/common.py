"""Shared pieces of the benchmarks: digits data, small torch models, their ``Network``, ORT evaluation.

Every model is trained here with torch (seeded, CPU, one thread), then handed to the core as a state
dict plus an architecture JSON (``graph.loading.network_from_state_dict``): the same path an
uploaded ``.pt`` takes. Errors are always measured on the logits Φ (docs/method.md §2).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from torch import nn

from netshrink.compression.graph.loading import LoadLimits, network_from_state_dict
from netshrink.compression.graph.network import Network

ARCH_FORMAT = "netshrink.architecture/v1"


@dataclass(frozen=True)
class Split:
    """Digits split three ways: train (the model), calibration (compression), test (every error we report)."""

    train_X: np.ndarray  # (N_train, *shape) float32
    train_y: np.ndarray  # (N_train,) int64
    cal_X: np.ndarray
    cal_y: np.ndarray
    test_X: np.ndarray
    test_y: np.ndarray


def digits_split(image: bool = False, n_cal: int = 500, n_test: int = 297, seed: int = 0) -> Split:
    """sklearn's bundled 8×8 digits (1797 samples), pixels scaled to [0, 1]; flat (64,) or (1, 8, 8)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)  # (1797, 64)
    if image:
        X = X.reshape(-1, 1, 8, 8)  # (1797, 1, 8, 8)
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    test, cal, train = perm[:n_test], perm[n_test : n_test + n_cal], perm[n_test + n_cal :]
    y = y.astype(np.int64)
    return Split(X[train], y[train], X[cal], y[cal], X[test], y[test])


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` (logits out, no softmax)."""
    mods: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            mods.append(nn.ReLU())
        mods.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*mods)


def mlp_architecture(model: nn.Sequential, n_in: int) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for name, mod in model.named_children():
        if isinstance(mod, nn.Linear):
            layers.append({"kind": "linear", "name": name, "out_features": mod.out_features})
        else:
            layers.append({"kind": "relu"})
    return {"format": ARCH_FORMAT, "input_shape": [n_in], "layers": layers}


class DigitsCNN(nn.Module):
    """conv(1→c1, 3×3, pad 1) → ReLU → maxpool 2 → conv(c1→c2, 3×3, pad 1) → ReLU → flatten → linear(→10)."""

    def __init__(self, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.c1, self.c2 = c1, c2
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(c2 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # (S, 10)

    def architecture(self) -> dict[str, Any]:
        conv = {"kind": "conv2d", "kernel_size": 3, "padding": 1}
        layers = [
            {**conv, "name": "features.0", "out_channels": self.c1},
            {"kind": "relu"},
            {"kind": "maxpool2d", "kernel_size": 2},
            {**conv, "name": "features.3", "out_channels": self.c2},
            {"kind": "relu"},
            {"kind": "flatten"},
            {"kind": "linear", "name": "classifier", "out_features": 10},
        ]
        return {"format": ARCH_FORMAT, "input_shape": [1, 8, 8], "layers": layers}


def train(
    model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, seed: int = 0, lr: float = 1e-3
) -> float:
    """Adam, batch 64, cross-entropy on the logits; returns the wall seconds spent. Leaves eval mode on."""
    torch.manual_seed(seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(Xt.shape[0], generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return time.perf_counter() - t0


def state_dict(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def to_network(model: nn.Module, architecture: dict[str, Any]) -> Network:
    """The core's ``Network`` for a trained module (the upload path of a ``.pt`` + architecture JSON)."""
    return network_from_state_dict(
        state_dict(model), architecture, source_format="pytorch", limits=LoadLimits()
    )


def session(model_bytes: bytes, optimized: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def ort_logits(model_bytes: bytes, X: np.ndarray, optimized: bool = True) -> np.ndarray:
    """Run a single-input, single-output ONNX model on X in onnxruntime; (S, K) float64."""
    sess = session(model_bytes, optimized)
    out = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    return np.asarray(out, dtype=np.float64).reshape(X.shape[0], -1)


def relative_l2(phi: np.ndarray, phi_hat: np.ndarray) -> float:
    """sqrt(E‖Φ−Φ̂‖² / E‖Φ‖²) (docs/method.md §2)."""
    return float(np.sqrt(((phi - phi_hat) ** 2).sum(axis=1).mean() / (phi**2).sum(axis=1).mean()))


def accuracy(phi: np.ndarray, y: np.ndarray) -> float:
    return float((phi.argmax(axis=1) == y).mean())


def machine() -> dict[str, Any]:
    import os

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
