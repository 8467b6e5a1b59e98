"""The sensitivities in the executor's precision (float32 products for conv layers, all K outputs in one
batched product, conv group terms through an input probe) against the former path: per output k, the
float32 deltas cast to float64 and every product in float64 (docs/method.md §3, a prediction only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.bounds import prediction
from netshrink.compression.bounds.prediction import group_size, sensitivities, zero_probe
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network

RTOL = 1e-5  # the stated tolerance, relative, entry by entry


def former_float64(net: Network, ex: Executor, X: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The former path: one backward pass per output k, δ_k cast to float64, G_s = δ_k ẑ_sᵀ (dense) or
    Σ_pos δ_k(pos) patch(pos)ᵀ (conv) in float64, Σ_s G_s² and Σ_s (Σ_{j∈g} Σ_o G_s W)²."""
    holders: dict[str, torch.Tensor] = {}
    inject = {layer.preact: zero_probe(holders, layer.name) for layer in net.layers}
    out = ex.run(X, capture=[layer.input for layer in net.layers], inject=inject)
    phi = out[net.logits].flatten(1)  # (S, K)
    tensors = [holders[layer.name] for layer in net.layers]
    res = {}
    acc = {x.name: (np.zeros(x.matrix.shape), np.zeros(x.n_in // group_size(x))) for x in net.layers}
    for k in range(phi.shape[1]):
        grads = torch.autograd.grad(phi[:, k].sum(), tensors, retain_graph=True)
        for d, layer in zip(grads, net.layers, strict=True):
            z = out[layer.input].detach().double()
            G = prediction._weight_grads(layer, d.detach().double(), z)  # (S, o, j) float64
            W = torch.as_tensor(layer.matrix, dtype=torch.float64)  # (o, j)
            contrib = (G * W).sum(dim=1)  # (S, j)
            grouped = contrib.reshape(contrib.shape[0], -1, group_size(layer)).sum(dim=2)  # (S, n_g)
            acc[layer.name][0][:] += (G**2).sum(dim=0).numpy()
            acc[layer.name][1][:] += (grouped**2).sum(dim=0).numpy()
    for name, (w, g) in acc.items():
        res[name] = (w / X.shape[0], g / X.shape[0])
    return res


@pytest.mark.parametrize("probe", [True, False])  # False: the conv group terms from Σ_o G W in float32
@pytest.mark.parametrize("net_name", ["cnn_net", "mlp_net"])
def test_float32_sensitivities_match_the_former_float64_ones(
    net_name: str, probe: bool, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entry by entry within RTOL = 1e-5 relative (weight_sq and group_sq; zeros stay exact zeros). On
    these nets, 40 samples, the largest relative difference is about 1.2e-7 (float32's rounding of the
    kept weight_sq is 6e-8). The MLP's path did not change (its dense products were and are float64
    from float32 deltas): it is here to show that."""
    net: Network = request.getfixturevalue(net_name)
    if not probe:
        monkeypatch.setattr(prediction, "_sole_input_conv", lambda net, layers: set())
    X = torch.as_tensor(np.random.default_rng(3).standard_normal((40, *net.input_shape)), dtype=torch.float32)
    ex = Executor(net)  # float32, as in the pipeline
    got = sensitivities(ex.run, net, X, net.layers, chunk=16)
    want = former_float64(net, ex, X)
    for layer in net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=RTOL, atol=0)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=RTOL, atol=0)
