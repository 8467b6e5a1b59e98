"""The prediction's sensitivities against brute-force per-sample autograd (docs/method.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.bounds import prediction
from netshrink.compression.bounds.prediction import group_size, sensitivities
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network


def brute_force(net: Network, X: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """E_x Σ_k (∂Φ_k/∂W)² and E_x Σ_k (Σ_{j∈g} Σ_i ∂Φ_k/∂W_ij W_ij)², one sample and output at a time."""
    ex = Executor(net, dtype=torch.float64)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer in net.layers:
        W = torch.tensor(layer.weight, dtype=torch.float64, requires_grad=True)
        w_sq = np.zeros(layer.matrix.shape)
        g_sq = np.zeros(layer.n_in // group_size(layer))
        for x in X:
            phi = ex.run(x[None].double(), overrides={layer.name: W})[net.logits].reshape(-1)
            for k in range(phi.shape[0]):
                (grad,) = torch.autograd.grad(phi[k], W, retain_graph=True)
                G = grad.reshape(layer.n_out, -1).numpy()  # (o, j)
                w_sq += G**2
                contrib = (G * layer.matrix).sum(axis=0)  # (j,)
                g_sq += contrib.reshape(-1, group_size(layer)).sum(axis=1) ** 2
        out[layer.name] = (w_sq / len(X), g_sq / len(X))
    return out


@pytest.mark.parametrize("budget", [prediction.GRAD_BUDGET, 7])  # 7: the conv path in tiny pieces
def test_sensitivities_equal_per_sample_autograd(
    cnn_net: Network, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prediction, "GRAD_BUDGET", budget)
    X = torch.as_tensor(
        np.random.default_rng(0).standard_normal((5, *cnn_net.input_shape)), dtype=torch.float32
    )
    ex = Executor(cnn_net, dtype=torch.float64)
    got = sensitivities(ex.run, cnn_net, X.double(), cnn_net.layers, chunk=2)
    want = brute_force(cnn_net, X)
    for layer in cnn_net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=1e-6, atol=1e-12)


def test_dense_sensitivities_equal_per_sample_autograd(mlp_net: Network) -> None:
    X = torch.as_tensor(
        np.random.default_rng(1).standard_normal((4, *mlp_net.input_shape)), dtype=torch.float64
    )
    got = sensitivities(Executor(mlp_net, dtype=torch.float64).run, mlp_net, X, mlp_net.layers, chunk=3)
    want = brute_force(mlp_net, X)
    for layer in mlp_net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=1e-6, atol=1e-12)


def test_input_probes_cover_the_sole_input_dense_layers(mlp_net: Network, cnn_net: Network) -> None:
    """The MLP's group terms come from ∂Φ/∂ẑ probes (every dense input feeds one layer); the CNN's
    conv layers keep the im2col path; the tests above check both against brute force."""
    assert prediction._sole_input_dense(mlp_net, mlp_net.layers) == {x.name for x in mlp_net.layers}
    dense = {x.name for x in cnn_net.layers if x.kind == "dense"}
    assert prediction._sole_input_dense(cnn_net, cnn_net.layers) <= dense
