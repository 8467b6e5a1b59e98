"""Per-layer advice from tier T's relative term (docs/method.md §3 "The width trade-off")."""

from __future__ import annotations

import numpy as np
import pytest

from netshrink.compression.bounds.advice import advise
from netshrink.compression.bounds.opnorm import op_norm
from netshrink.compression.graph.network import ConvGeometry, Layer


def _layer(n_out: int, n_in: int, seed: int = 0) -> Layer:
    W = (np.random.default_rng(seed).standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
    return Layer(f"fc_{n_out}x{n_in}", 0, "dense", W, None, "w", None)


def _prune_term(layer: Layer, sigma: float, p: float, f: float) -> float:
    col2 = float((layer.matrix.astype(np.float64) ** 2).sum(0).max())
    return f * (1 - p) / p * col2 / sigma**2


def _quant_term(layer: Layer, sigma: float, bits: int) -> float:
    k = 2 ** (bits - 1) - 1
    M2 = float((np.abs(layer.matrix.astype(np.float64)).max(1) ** 2).sum())
    return M2 / (4 * k * k * sigma**2)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("f", [1.0, 0.9])
def test_min_keep_is_the_boundary(eps: float, f: float) -> None:
    layer = _layer(32, 256)
    sigma = op_norm(layer)
    adv = advise(layer, sigma, epsilon=eps, f_prune=f)
    assert _prune_term(layer, sigma, adv.min_p, f) == pytest.approx(eps**2, rel=1e-9)
    assert _prune_term(layer, sigma, adv.min_p * 0.99, f) > eps**2
    assert adv.min_keep == pytest.approx(1 - f + f * adv.min_p)


def test_min_bits_is_the_smallest_that_fits() -> None:
    layer = _layer(16, 512)
    sigma = op_norm(layer)
    adv = advise(layer, sigma, epsilon=0.1)
    assert adv.min_bits is not None
    assert _quant_term(layer, sigma, adv.min_bits) <= 0.01
    if adv.min_bits > 2:
        assert _quant_term(layer, sigma, adv.min_bits - 1) > 0.01
    assert f"{adv.min_bits} bits" in adv.text and set(adv.to_dict()) >= {
        "epsilon",
        "min_keep",
        "min_bits",
        "text",
    }


def test_fan_in_over_fan_out_buys_compression() -> None:
    """Wide fan-in, narrow fan-out layers can go lower (P1 Thm 2, 3: the term scales like n_out/n_in)."""
    wide, narrow = _layer(8, 1024, seed=1), _layer(256, 64, seed=1)
    a, b = advise(wide, op_norm(wide)), advise(narrow, op_norm(narrow))
    assert a.min_keep < b.min_keep
    assert a.min_bits is not None and (b.min_bits is None or a.min_bits < b.min_bits)


def test_conv_counts_windows_per_pixel() -> None:
    K = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    conv = Layer("c", 0, "conv", K, None, "w", None, conv=ConvGeometry((3, 3), pads=(1, 1, 1, 1)))
    dense = Layer("d", 0, "dense", K.reshape(4, -1), None, "w", None)
    a, b = advise(conv, 5.0, epsilon=0.2), advise(dense, 5.0, epsilon=0.2)
    assert a.min_p > b.min_p  # 9 windows per pixel make the same weights 9x more expensive
