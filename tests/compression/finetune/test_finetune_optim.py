"""The written-out optimizers of a finetune arm take torch.optim's steps, bit for bit."""

from __future__ import annotations

import pytest
import torch

from netshrink.compression.finetune.optim import SGD, Adam


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(7, 5, generator=g).requires_grad_(), torch.randn(7, generator=g).requires_grad_()]


def _run(
    opt_ours: SGD | Adam, opt_torch: torch.optim.Optimizer, a: list[torch.Tensor], b: list[torch.Tensor]
) -> None:
    x = torch.randn(11, 5, generator=torch.Generator().manual_seed(9))  # (11, 5)
    for step in range(6):
        for params, opt in ((a, opt_ours), (b, opt_torch)):
            opt.zero_grad()
            loss = ((x @ params[0].T + params[1]).tanh() ** 2).sum() * (step + 1)  # scalar
            loss.backward()
            opt.step()
        for p, q in zip(a, b, strict=True):
            assert torch.equal(p, q), f"step {step}: {float((p - q).abs().max())}"


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_torch(momentum: float) -> None:
    a, b = _params(1), _params(1)
    _run(SGD(a, lr=0.01, momentum=momentum), torch.optim.SGD(b, lr=0.01, momentum=momentum), a, b)


def test_adam_matches_torch() -> None:
    a, b = _params(2), _params(2)
    _run(Adam(a, lr=0.003), torch.optim.Adam(b, lr=0.003), a, b)


def test_zero_grad_clears() -> None:
    a = _params(3)
    opt = SGD(a, lr=0.1, momentum=0.9)
    a[0].sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in a)
    opt.step()  # no gradient: nothing moves
    assert torch.equal(a[0], _params(3)[0])
