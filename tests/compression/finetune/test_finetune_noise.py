"""P3's noise: one SαS scalar per unit, scaled by σ·η^{1/α}, hidden layers only (docs/method.md §4)."""

from __future__ import annotations

import numpy as np
import torch

from netshrink.compression.finetune.noise import NoiseInjector, hidden_layers, noise_scale
from netshrink.compression.graph.network import Network


def test_scale_formula() -> None:
    assert noise_scale(0.003, 0.01, 1.75) == 0.003 * 0.01 ** (1 / 1.75)


def test_one_scalar_per_unit_dense_and_conv() -> None:
    W = torch.zeros(50, 7)  # (n_out, n_in)
    K = torch.zeros(6, 3, 3, 3)  # (c_out, c_in, kh, kw)
    NoiseInjector(1.75, 0.5, np.random.default_rng(0))([W, K])
    assert torch.all(W == W[:, :1]) and W[:, 0].abs().min() > 0  # every row shifted by its own scalar
    flat = K.reshape(6, -1)
    assert torch.all(flat == flat[:, :1]) and len(set(flat[:, 0].tolist())) == 6


def test_gaussian_limit_variance() -> None:
    """α = 2 is N(0, 2): the per-unit shifts have variance 2·scale² (a CLT tolerance)."""
    W = torch.zeros(20000, 1, dtype=torch.float64)
    NoiseInjector(2.0, 0.1, np.random.default_rng(1))([W])
    var = float(W.var())
    assert abs(var - 0.02) < 5 * 0.02 * np.sqrt(2 / 20000)


def test_zero_sigma_is_plain() -> None:
    W = torch.ones(3, 3)
    NoiseInjector(1.75, 0.0, np.random.default_rng(0))([W])
    assert torch.all(W == 1)


def test_classifier_gets_no_noise(mlp_net: Network) -> None:
    assert hidden_layers(mlp_net) == [layer.name for layer in mlp_net.layers[:-1]]
    assert mlp_net.layers[-1].name not in hidden_layers(mlp_net)
