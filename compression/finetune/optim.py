"""The two optimizers of a finetune arm, written out: SGD with heavy-ball momentum, and Adam.

Why not ``torch.optim``: its first use imports ``torch._dynamo`` (``torch._disable_dynamo`` wraps the
optimizer's methods), 4.8 s of a loaded 2-core machine's time (``python -X importtime -c "import
torch._dynamo"``) for an update of two lines. The recursions and their arithmetic are those of
``torch.optim.SGD`` / ``torch.optim.Adam`` at the settings used here (no weight decay, no dampening,
no Nesterov, no AMSGrad); ``tests/compression/finetune/test_finetune_optim.py`` checks them against
torch.optim step by step.

- SGD [P3] (Wan et al. 2024 train with SGD; momentum as in their experiments):
  b ← g at the first step, then b ← μ·b + g;  θ ← θ − η·b.
- Adam (Kingma & Ba, ICLR 2015, Algorithm 1, β = (0.9, 0.999), ε = 1e-8):
  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − (η / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SGD:
    """Heavy-ball momentum SGD over ``params`` (each a leaf tensor with ``.grad``)."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.momentum = list(params), float(lr), float(momentum)
        self.buf: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = p.grad  # same shape as p
            if g is None:
                continue
            if self.momentum != 0.0:
                b = self.buf[i]
                if b is None:
                    b = self.buf[i] = torch.clone(g).detach()
                else:
                    b.mul_(self.momentum).add_(g)
                g = b
            p.add_(g, alpha=-self.lr)


class Adam:
    """Adam over ``params``, torch.optim.Adam's single-tensor arithmetic."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), float(lr), betas, float(eps)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            g = p.grad
            if g is None:
                continue
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / c2**0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / c1)


Optimizer = SGD | Adam
