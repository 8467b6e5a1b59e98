"""Error measures on the logits Φ (docs/method.md §2).

All reductions run in float64. ``E_x`` is the mean over the rows of the given batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class OutputError:
    """Headline errors of Φ̂ against Φ (docs/method.md §2)."""

    relative_l2: float  # sqrt(E‖Φ−Φ̂‖² / E‖Φ‖²)
    mse: float  # E_x‖Φ−Φ̂‖²
    p95: float  # 95th percentile of r(x) = ‖Φ(x)−Φ̂(x)‖ / sqrt(E‖Φ‖²)
    max: float  # max of r(x)
    reference_energy: float  # E_x‖Φ‖²

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _flat(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """(S, K) float64: one row per sample."""
    a = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
    return a.reshape(a.shape[0], math.prod(a.shape[1:]))  # (S, K)


def output_error(phi: torch.Tensor | np.ndarray, phi_hat: torch.Tensor | np.ndarray) -> OutputError:
    """rel_l2, E‖Φ−Φ̂‖², and the p95/max of the per-sample r(x). Ref: docs/method.md §2."""
    diff2, energy, mse = _sums(_flat(phi), _flat(phi_hat))
    denom = np.sqrt(energy) if energy > 0 else 1.0
    r = np.sqrt(diff2) / denom  # (S,)
    return OutputError(_rel(mse, energy), mse, float(np.percentile(r, 95)), float(r.max()), energy)


def relative_l2(phi: torch.Tensor | np.ndarray, phi_hat: torch.Tensor | np.ndarray) -> float:
    """``output_error(phi, phi_hat).relative_l2``, the same float, without the per-sample quantiles
    (the budget search judges every candidate by it: issue 11, its cost)."""
    _, energy, mse = _sums(_flat(phi), _flat(phi_hat))
    return _rel(mse, energy)


def _sums(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float, float]:
    """‖Φ(x) − Φ̂(x)‖² per sample (S,), E‖Φ‖² and E‖Φ − Φ̂‖² of (S, K) float64 Φ = a, Φ̂ = b."""
    diff2 = ((a - b) ** 2).sum(axis=1)  # (S,)
    return diff2, float((a**2).sum(axis=1).mean()), float(diff2.mean())


def _rel(mse: float, energy: float) -> float:
    return float(np.sqrt(mse / energy)) if energy > 0 else float(np.sqrt(mse))


def mean_sq_error(z: torch.Tensor, z_hat: torch.Tensor) -> float:
    """e_ℓ = E_x‖z_ℓ(x) − ẑ_ℓ(x)‖² (docs/method.md §2), flattened per sample."""
    d = (z.detach().double() - z_hat.detach().double()).reshape(z.shape[0], -1)  # (S, D)
    return float((d**2).sum(dim=1).mean().item())


def mean_sq_norm(z: torch.Tensor) -> float:
    """E_x‖z‖², flattened per sample."""
    d = z.detach().double().reshape(z.shape[0], -1)  # (S, D)
    return float((d**2).sum(dim=1).mean().item())


def top1(phi: torch.Tensor | np.ndarray) -> np.ndarray:
    """Predicted class per sample: argmax of the logits; for one logit (binary sigmoid), its sign."""
    a = _flat(phi)
    if a.shape[1] == 1:
        return (a[:, 0] > 0).astype(np.int64)
    return a.argmax(axis=1)


def classification(
    phi: torch.Tensor | np.ndarray, phi_hat: torch.Tensor | np.ndarray, labels: np.ndarray | None
) -> dict[str, float | None]:
    """Top-1 agreement with the original, and accuracy before/after when labels are given."""
    y0, y1 = top1(phi), top1(phi_hat)
    out: dict[str, float | None] = {
        "top1_agreement": _agree(y0, y1),
        "accuracy_before": None,
        "accuracy_after": None,
    }
    if labels is not None:
        lab = np.asarray(labels).ravel()
        if np.all(np.mod(lab, 1) == 0):  # class ids, also when stored as floats
            out["accuracy_before"] = float((y0 == lab).mean())
            out["accuracy_after"] = float((y1 == lab).mean())
    return out


def top1_agreement(y0: np.ndarray, phi_hat: torch.Tensor | np.ndarray) -> float:
    """``classification(phi, phi_hat, ...)["top1_agreement"]`` given y0 = ``top1(phi)``, made once by
    a caller that judges many Φ̂ against one Φ (the budget search's candidates)."""
    return _agree(y0, top1(phi_hat))


def _agree(y0: np.ndarray, y1: np.ndarray) -> float:
    return float((y0 == y1).mean())


def mse_loss(phi: torch.Tensor | np.ndarray, labels: np.ndarray) -> float:
    """Mean-squared loss on Φ against one-hot labels (classifiers) or targets (regressors)."""
    a = _flat(phi)  # (S, K)
    lab = np.asarray(labels)
    if a.shape[1] > 1 and lab.ndim == 1:
        target = np.zeros_like(a)
        target[np.arange(a.shape[0]), lab.astype(np.int64)] = 1.0
    else:
        target = _flat(lab)  # (S, K) float64
    return float(((a - target) ** 2).sum(axis=1).mean())


def loss_bound(loss_before: float, bound: float) -> float:
    """P1: L(Φ̂) ≤ L(Φ) + 2·sqrt(L(Φ)·B) + B for the mean-squared loss on Φ (docs/method.md §3)."""
    return loss_before + 2.0 * float(np.sqrt(max(loss_before, 0.0) * max(bound, 0.0))) + bound
