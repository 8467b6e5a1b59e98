"""The dense layers' float64 terms of ``prediction.sensitivities``, one output at a time (issue 10:
the budget search's sensitivities on the 17M-parameter MLP).

``dense_terms`` adds one output's terms into a float64 buffer reused across outputs and layers,
with the same operations in the same order as the former inline code: the in-place forms write the
values the out-of-place ones made (x·x is torch's x**2; the sum over a group of one column is that
column), so the sensitivities keep their bytes (tests/compression/bounds/test_sensitivity_terms.py).

Not taken: one backward pass per block of outputs (``torch.autograd.grad(..., is_grads_batched=True)``,
vmap over one-hot ``grad_outputs``). It gave the same bytes and a third less backward time on the
17M MLP, but vmap's machinery (functorch's modules) stays resident: +36 MB RSS, which the
``--target-top1 0.99`` search's peak carried (1.093 → 1.153 GiB against the 1.19 GiB limit;
VmHWM per stage, 00:41 UTC).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from netshrink.compression.graph.network import Layer

__all__ = ["dense_terms"]


def dense_terms(
    layer: Layer,
    grad: torch.Tensor,
    dz: torch.Tensor | None,
    z: torch.Tensor,
    bufs: dict[tuple[int, ...], torch.Tensor],
    d2sum: dict[str, torch.Tensor],
    acc_g: torch.Tensor | None,
    gs: int,
    weight64: Callable[[Layer], torch.Tensor],
) -> None:
    """Add output k's terms of a dense layer: Σ_k δ_ki² per sample into ``d2sum[layer.name]`` (s, o)
    and, with ``acc_g``, Σ_s (Σ_{j∈g} Σ_i δ_ki W_ij ẑ_j)² per group (n_groups,). ``grad``: δ_k (s, o)
    in the executor's precision; ``dz``: ∂Φ_k/∂ẑ (s, j) from the input probe, else None (then
    Σ_i δ_ki W_ij is the product with ``weight64(layer)``); ``z``: ẑ (s, j) float64; ``bufs``: this
    chunk's float64 buffers by shape (made here once, shared by the layers: 8 MiB on the 17M MLP)."""
    g = grad.detach().reshape(grad.shape[0], -1)  # (s, o)
    s = int(g.shape[0])
    d = _buffer(bufs, g.shape)
    d.copy_(g)  # (s, o) float64: the float32 values, exactly (as .double())
    # Σ_i δ_i W_ij (s, j) by the product, made before d is squared; with the probe, made below
    c = d @ weight64(layer) if acc_g is not None and dz is None else None
    sq = d2sum.get(layer.name)
    if sq is None:
        d2sum[layer.name] = d.square()  # (s, o) a new tensor: kept for the chunk's factors
    else:
        sq.add_(d.mul_(d))  # in place: the values of sq + δ_k**2
    if acc_g is None:
        return
    if c is None:  # pragma: no mutate (the probe or the product: the same sums)
        assert dz is not None
        c = _buffer(bufs, (s, int(z[0].numel())))  # d's buffer when the shapes agree: d is done
        c.copy_(dz.detach().reshape(s, -1))  # (s, j): Σ_i δ_i W_ij
    c.mul_(z.reshape(s, -1))  # (s, j): Σ_i δ_i W_ij ẑ_j
    grouped = c if gs == 1 else c.reshape(s, -1, gs).sum(dim=2)  # (s, n_groups); gs = 1: one term
    acc_g += grouped.mul_(grouped).sum(dim=0)


def _buffer(bufs: dict[tuple[int, ...], torch.Tensor], shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """The chunk's float64 buffer of ``shape``, shared by every layer and output (one at a time)."""
    key = tuple(int(n) for n in shape)
    b = bufs.get(key)
    if b is None:
        b = bufs[key] = torch.empty(key, dtype=torch.float64)
    return b
