"""``sensitivity_terms``: the dense layers' float64 terms in reused buffers are the former inline
sums bit for bit (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.bounds.sensitivity_terms import dense_terms
from netshrink.compression.graph.network import Layer


def _former(
    layer: Layer, grads: list[torch.Tensor], dzs: list[torch.Tensor | None], z: torch.Tensor, gs: int
):
    """The former inline sums: δ_k cast to float64, d2sum + d2**2, (Σ_{j∈g} dz·z)**2 summed over s."""
    d2sum = None
    acc = torch.zeros(z.shape[1] // gs, dtype=torch.float64)
    W = torch.as_tensor(layer.matrix, dtype=torch.float64)
    for g, dz in zip(grads, dzs, strict=True):
        d2 = g.double().reshape(g.shape[0], -1)  # (s, o)
        d2sum = d2**2 if d2sum is None else d2sum + d2**2
        dzk = dz.double().reshape(d2.shape[0], -1) if dz is not None else d2 @ W  # (s, j)
        contrib = dzk * z
        grouped = contrib.reshape(contrib.shape[0], -1, gs).sum(dim=2)
        acc += (grouped**2).sum(dim=0)
    return d2sum, acc


@pytest.mark.parametrize("gs", [1, 2])
@pytest.mark.parametrize("probe", [True, False])
def test_dense_terms_are_the_former_float64_sums(gs: int, probe: bool) -> None:
    """The same float64 bytes as the former out-of-place sums, over several outputs (buffers reused)."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((6, 10)).astype(np.float32)
    layer = Layer("fc", 1, "dense", W, None, "w", None, structured=True)
    s = 9
    z = torch.as_tensor(np.abs(rng.standard_normal((s, 10))), dtype=torch.float32).double()  # (s, j)
    grads = [torch.as_tensor(rng.standard_normal((s, 6)), dtype=torch.float32) for _ in range(4)]
    dzs = [
        torch.as_tensor(rng.standard_normal((s, 10)), dtype=torch.float32) if probe else None for _ in grads
    ]
    bufs: dict[tuple[int, ...], torch.Tensor] = {}
    d2sum: dict[str, torch.Tensor] = {}
    acc = torch.zeros(10 // gs, dtype=torch.float64)
    w64 = lambda la: torch.as_tensor(la.matrix, dtype=torch.float64)  # noqa: E731
    for g, dz in zip(grads, dzs, strict=True):
        dense_terms(layer, g, dz, z, bufs, d2sum, acc, gs, w64)
    want_d2, want_acc = _former(layer, grads, dzs, z, gs)
    assert torch.equal(d2sum["fc"], want_d2) and torch.equal(acc, want_acc)
    none: dict[str, torch.Tensor] = {}
    dense_terms(layer, grads[0], dzs[0], z, {}, none, None, gs, w64)  # no group terms asked
    assert torch.equal(none["fc"], grads[0].double() ** 2)
