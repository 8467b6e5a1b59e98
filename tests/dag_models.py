"""Small residual, depthwise and concatenating CNNs built in torch (no torchvision), trained briefly on
data made here, and exported to ONNX. Used by the DAG tests (graph, executor, pruning, bounds).

- ``resnet``: stem conv-BN-ReLU, a BasicBlock with an identity shortcut, a strided BasicBlock with a
  1×1 strided projection shortcut (conv + BN), AdaptiveAvgPool2d(1), Linear (widths 8/16; the
  bench's ``resnet-wide`` is the same at 32/64).
- ``mobilenet``: stem conv-BN-ReLU6, an inverted residual (1×1 expand, 3×3 depthwise, 1×1 project,
  BN after each, ReLU6, residual Add), a strided one without residual and with Hardswish,
  ``x.mean((2, 3))``, Linear.
- ``concat``: two branches (1×1 conv-ReLU; 3×3 conv-BN-ReLU + 3×3 conv-Hardsigmoid)
  joined by a channel Concat, MaxPool, 1×1 conv, AvgPool, Flatten, Linear.

Each one's state-dict architecture (v2) is the example of its name in docs/architecture-json.md
(``architecture``).

The task: 4 classes, each a fixed random 3×8×8 pattern plus Gaussian noise (seeded).
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (3, 8, 8)
N_CLASSES = 4


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layer1 = BasicBlock(w, w, 1)
        self.layer2 = BasicBlock(w, 2 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, act: type[nn.Module]) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.block1 = InvertedResidual(8, 8, 1, 2, nn.ReLU6)
        self.block2 = InvertedResidual(8, 12, 2, 2, nn.Hardswish)
        self.fc = nn.Linear(12, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block2(self.block1(self.stem(x))).mean((2, 3)))


class TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU())
        self.b = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.Hardsigmoid(),
        )
        self.pool = nn.MaxPool2d(2)
        self.mix = nn.Sequential(nn.Conv2d(12, 8, 1), nn.ReLU(), nn.AvgPool2d(2))
        self.fc = nn.Linear(8 * 2 * 2, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.a(x), self.b(x)], dim=1)
        return self.fc(torch.flatten(self.mix(self.pool(h)), 1))


BUILDERS: dict[str, Callable[[], nn.Module]] = {"resnet": ResNet, "mobilenet": MobileNet, "concat": TwoBranch}
# bench/cnn.py only: the same ResNet at width 32 (77 k weights), where the graph's own bytes stop
# dominating a 4-bit file
EXTRA: dict[str, Callable[[], nn.Module]] = {"resnet-wide": lambda: ResNet(32)}


def task_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 8, 8) float32 inputs and (n,) int64 labels: class pattern + N(0, 0.8²) noise."""
    patterns = np.random.default_rng(1234).standard_normal((N_CLASSES, *INPUT_SHAPE))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    X = patterns[y] + 0.8 * rng.standard_normal((n, *INPUT_SHAPE))
    return X.astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=4)
def trained(name: str, steps: int = 25) -> nn.Module:
    """``BUILDERS[name]`` (or ``EXTRA[name]``) trained with Adam for ``steps`` full-batch steps on 96
    samples (seeded)."""
    torch.manual_seed(0)
    model = {**BUILDERS, **EXTRA}[name]()
    X, y = task_data(96, seed=1)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    try:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xt), yt).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@functools.lru_cache(maxsize=4)
def onnx_bytes(name: str) -> bytes:
    """The trained model as ONNX: the TorchScript exporter without constant folding (opset 17), so
    BatchNormalization stays a node and the loader folds it, inside branches too."""
    import warnings

    model = trained(name)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch 2.13 but is the one that keeps BN nodes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        _export(model, buf)
    return buf.getvalue()


def _export(model: nn.Module, buf: io.BytesIO) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(2, *INPUT_SHAPE),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.EVAL,
        do_constant_folding=False,
    )


def accuracy(name: str, n: int = 512) -> float:
    X, y = task_data(n, seed=7)
    with torch.no_grad():
        pred = trained(name)(torch.from_numpy(X)).argmax(1).numpy()
    return float((pred == y).mean())


DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture-json.md"


def architecture(name: str) -> dict[str, Any]:
    """The ``netshrink.architecture/v2`` JSON of ``BUILDERS[name]``: the example of that name in
    docs/architecture-json.md (``<!-- example: name -->``), so the tests run the documented JSON."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example: {re.escape(name)} -->\s*```json\n(.*?)```", text, re.S)
    if m is None:
        raise KeyError(f"docs/architecture-json.md has no example {name!r}")
    value: dict[str, Any] = json.loads(m.group(1))
    return value
