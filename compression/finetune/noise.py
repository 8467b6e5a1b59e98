"""Heavy-tailed noise injection after each SGD step [P3].

Ref: Wan, Barsbey, Zaidi, Şimşekli, "Implicit Compressibility of Overparametrized Neural Networks
Trained with Heavy-Tailed SGD" (ICML 2024), the noisy recursion θ_{k+1} = θ_k − η∇F(θ_k) + σ·η^{1/α}·X_k;
docs/method.md §4 "Heavy-tailed noise fine-tuning":
- only the hidden layers' weights get noise: every compressible layer but the last (the classifier),
  never a bias and never BatchNorm (folded into its conv, whose folded weight is the one trained);
- X is symmetric α-stable, drawn by the Chambers-Mallows-Stuck sampler (``bounds.stable.sample_sas``);
- "type 1": ONE scalar per unit. A unit is an output neuron (row i of a dense W, shape (n_out, n_in))
  or an output channel (filter c of a conv K, shape (c_out, c_in, kh, kw)); X_i is added to every
  incoming weight of that unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from netshrink.compression.bounds.stable import sample_sas
from netshrink.compression.graph.network import Network


def hidden_layers(net: Network) -> list[str]:
    """Names of the layers that get noise: every compressible layer but the last (the classifier)."""
    return [layer.name for layer in net.layers[:-1]]


def noise_scale(sigma: float, eta: float, alpha: float) -> float:
    """σ·η^{1/α}, the factor in front of X in P3's recursion."""
    return float(sigma) * float(eta) ** (1.0 / float(alpha))


class NoiseInjector:
    """Adds σ·η^{1/α}·X_i to each unit i of each hidden weight, in place, after an optimizer step."""

    def __init__(self, alpha: float, scale: float, rng: np.random.Generator) -> None:
        self.alpha, self.scale, self.rng = float(alpha), float(scale), rng

    @torch.no_grad()
    def __call__(self, weights: Sequence[torch.Tensor]) -> None:
        if self.scale == 0.0:
            return
        for W in weights:  # W: (n_out, ...) in canonical orientation
            X = sample_sas(self.alpha, W.shape[0], rng=self.rng)  # (n_out,) one scalar per unit
            step = torch.as_tensor(X * self.scale, dtype=W.dtype, device=W.device)  # (n_out,)
            W.add_(step.view(-1, *([1] * (W.dim() - 1))))  # broadcast over the unit's fan-in
