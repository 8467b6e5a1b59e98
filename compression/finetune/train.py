"""Fine-tune the torch network the core reconstructs from the graph, one arm at a time.

The trainable parameters are every compressible layer's weight (canonical orientation, BatchNorm
already folded into its conv) and bias; the rest of the graph (activations, pools, reshapes, the
constants of Mul/Div/Add nodes) is fixed. The forward pass is ``evaluation.Executor`` (the ONNX
nodes interpreted in torch), so autograd reaches the weights without rebuilding an ``nn.Module``.

One step (docs/method.md §4; [P3] Wan et al. 2024, the noisy SGD recursion):
    θ ← optimizer step on the mean cross-entropy of the batch's logits Φ      (plain arm: that's all)
        (SGD with momentum or Adam, written out in ``optim.py``: torch.optim's arithmetic, without its
        first-use import of torch._dynamo)
    W_ℓ ← W_ℓ + σ·η^{1/α}·X_ℓ for every hidden layer ℓ                       (noise arm, ``noise.py``)
Both arms share the seed: the same batch order; only the noise differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from netshrink.compression.errors import CancelledError, CompressionError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.finetune.noise import NoiseInjector, hidden_layers, noise_scale
from netshrink.compression.finetune.optim import SGD, Adam, Optimizer
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.graph.network import Network

EVAL_BATCH = 4096
CANCEL_POLL_S = 0.25  # the store is asked at most this often between steps (and at every epoch end)

EpochFn = Callable[[int, int], None]  # (epoch done, epochs)
CancelFn = Callable[[], bool]


def stop_if_cancelled(should_cancel: CancelFn | None) -> None:
    """Raise ``CancelledError`` when the job was cancelled (the worker then marks it cancelled)."""
    if should_cancel is not None and should_cancel():
        raise CancelledError("the job was cancelled")


class TrainingDivergedError(CompressionError):
    slug = "training-diverged"
    title = "The training loss became non-finite"


@dataclass
class Weights:
    """One model's trainable tensors as numpy, by layer name (canonical orientation, BN folded)."""

    weight: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]

    @classmethod
    def of(cls, net: Network) -> Weights:
        return cls(
            weight={layer.name: layer.weight.copy() for layer in net.layers},
            bias={layer.name: layer.bias.copy() for layer in net.layers if layer.bias is not None},
        )


@dataclass
class ArmResult:
    weights: Weights
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, accuracy


class Model:
    """Torch parameters for a ``Weights`` plus the executor that runs the graph with them."""

    def __init__(self, net: Network, ex: Executor, w: Weights) -> None:
        self.net, self.ex = net, ex
        dev, dt = ex.device, ex.dtype
        self.weight = {
            k: torch.nn.Parameter(torch.tensor(v, device=dev, dtype=dt)) for k, v in w.weight.items()
        }
        self.bias = {k: torch.nn.Parameter(torch.tensor(v, device=dev, dtype=dt)) for k, v in w.bias.items()}
        self._bias_keys = {layer.name: layer.bias_key for layer in net.layers if layer.bias_key}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.weight.values(), *self.bias.values()]

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """X: (B, *input_shape) -> Φ: (B, n_classes)."""
        inits = {self._bias_keys[k]: b for k, b in self.bias.items()}
        return self.ex.run(X, overrides=self.weight, initializers=inits)[self.net.logits]

    def snapshot(self) -> Weights:
        return Weights(
            weight={k: v.detach().cpu().numpy().copy() for k, v in self.weight.items()},
            bias={k: v.detach().cpu().numpy().copy() for k, v in self.bias.items()},
        )


@torch.no_grad()
def accuracy(model: Model, X: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent. X: (V, *input_shape), y: (V,)."""
    correct = 0
    for i in range(0, X.shape[0], EVAL_BATCH):
        pred = model.logits(X[i : i + EVAL_BATCH]).argmax(dim=1)  # (b,)
        correct += int((pred == y[i : i + EVAL_BATCH]).sum())
    return 100.0 * correct / max(int(X.shape[0]), 1)


def train_arm(
    net: Network,
    ex: Executor,
    start: Weights,
    spec: FinetuneSpec,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    arm: str,
    sigma: float,
    on_epoch: EpochFn | None = None,
    should_cancel: CancelFn | None = None,
) -> ArmResult:
    """Train one arm from ``start``; ``sigma = 0`` is the plain arm. Raises on a non-finite loss."""
    assert spec.seed is not None
    X, y, Xv, yv = data  # (N, *in), (N,), (V, *in), (V,)
    model = Model(net, ex, start)
    params = model.parameters()
    opt: Optimizer = (
        Adam(params, lr=spec.eta)
        if spec.optimizer == "adam"
        else SGD(params, lr=spec.eta, momentum=spec.momentum)
    )
    inject = NoiseInjector(
        spec.alpha, noise_scale(sigma, spec.eta, spec.alpha), np.random.default_rng([spec.seed, 1])
    )
    hidden = [model.weight[name] for name in hidden_layers(net)]
    order = torch.Generator().manual_seed(int(spec.seed))  # same batch order in every arm
    n, history, last_poll = int(X.shape[0]), [], 0.0
    label = arm if arm == "plain" else f"{arm} (sigma={sigma:g})"
    for epoch in range(1, spec.epochs + 1):
        perm = torch.randperm(n, generator=order).to(X.device)  # (N,)
        total, seen = 0.0, 0
        for i in range(0, n, spec.batch_size):
            now = time.monotonic()
            if should_cancel is not None and now - last_poll >= CANCEL_POLL_S:
                last_poll = now
                if should_cancel():
                    raise CancelledError("the job was cancelled")
            idx = perm[i : i + spec.batch_size]  # (B,)
            loss = F.cross_entropy(model.logits(X[idx]), y[idx])
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"the training loss became non-finite ({float(loss.detach())}) at epoch {epoch} of "
                    f"{spec.epochs} in the {label} arm; lower sigma or eta",
                    field="sigma" if sigma > 0 else "eta",
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            inject(hidden)
            total += float(loss.detach()) * int(idx.shape[0])
            seen += int(idx.shape[0])
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise TrainingDivergedError(
                f"the weights became non-finite at epoch {epoch} of {spec.epochs} in the {label} arm; "
                "lower sigma or eta",
                field="sigma" if sigma > 0 else "eta",
            )
        history.append({"epoch": epoch, "loss": total / max(seen, 1), "accuracy": accuracy(model, Xv, yv)})
        if on_epoch is not None:
            on_epoch(epoch, spec.epochs)
        stop_if_cancelled(should_cancel)
    return ArmResult(weights=model.snapshot(), history=history)
