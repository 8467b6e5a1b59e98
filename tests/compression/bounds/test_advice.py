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


def test_advice_by_hand() -> None:
    """W = [[1, −2], [0.5, 0]], σ = 2, ε = 0.5: ε²σ² = 1 and max_j‖W[:, j]‖² = 4.

    Pruning at f = 0.5: τ² ≤ 1/(0.5·4) = 0.5, p ≥ 1/1.5 = 2/3, keep = 0.5 + 0.5·2/3 = 5/6.
    Bits (k = 2^(b−1) − 1): per row ΣM_i² = 4 + 0.25 = 4.25, 2 bits give 4.25/4 > 1, 3 bits 4.25/36;
    at f = 0.9, 2 bits give 0.956 per row but per layer (2·max|W|² = 8) 1.8, so 3 bits there."""
    W = np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32)
    layer = Layer("fc", 0, "dense", W, None, "w", None)
    adv = advise(layer, 2.0, epsilon=0.5, f_prune=0.5)
    assert (adv.min_p, adv.min_keep, adv.min_bits) == (pytest.approx(2 / 3), pytest.approx(5 / 6), 3)
    assert adv.to_dict() == {
        "layer": "fc",
        "epsilon": 0.5,
        "min_p": pytest.approx(2 / 3),
        "min_keep": pytest.approx(5 / 6),
        "min_bits": 3,
        "text": "can go to 3 bits, or be pruned to keep 0.833 (p = 0.667 at f = 0.5), "
        "with tier T's relative layer term <= eps^2 = 0.25",
    }
    assert advise(layer, 2.0, epsilon=0.5, f_quant=0.9).min_bits == 2
    assert advise(layer, 2.0, epsilon=0.5, f_quant=0.9, scale="per_layer").min_bits == 3
    assert advise(layer, 2.0, epsilon=0.5, f_quant=0.2, scale="per_layer").min_bits == 2  # 0.2·8/4 = 0.4
    # ε = 1e-4: even 8 bits (k = 127) give 4.25/(4·127²) = 6.6e-5 > ε²σ² = 4e-8
    tight = advise(layer, 2.0, epsilon=1e-4)
    assert tight.min_bits is None
    assert tight.text.startswith("can't be quantized (not even at 8 bits), or be pruned to keep ")
    # nothing randomized (f = 0): p stays 1, keep 1; an all-zero layer: p = 0, any bits fit
    assert (advise(layer, 2.0, f_prune=0.0).min_p, advise(layer, 2.0, f_prune=0.0).min_keep) == (1.0, 1.0)
    zero = advise(Layer("z", 0, "dense", np.zeros((2, 2), np.float32), None, "w", None), 2.0, f_prune=0.5)
    assert (zero.min_p, zero.min_keep, zero.min_bits) == (0.0, 0.5, 2)


def test_conv_windows_per_pixel_by_hand() -> None:
    """One 3×3 tap of 2 (stride 1: c = 9 windows per pixel), σ = 2, ε = 0.5 (ε²σ² = 1): pruning needs
    τ² ≤ 1/(9·4), p ≥ 36/37; bits need 9·4/(4k²) ≤ 1, k = 3 exactly (3 bits). As a dense row the same
    weights need p ≥ 1/(1 + 1/4) = 0.8 and 4/(4k²) ≤ 1, k = 1 (2 bits)."""
    K = np.zeros((1, 1, 3, 3), np.float32)
    K[0, 0, 1, 1] = 2.0
    conv = Layer("c", 0, "conv", K, None, "w", None, conv=ConvGeometry((3, 3), pads=(1, 1, 1, 1)))
    a = advise(conv, 2.0, epsilon=0.5)
    assert (a.min_p, a.min_bits) == (pytest.approx(36 / 37), 3)
    b = advise(Layer("d", 0, "dense", K.reshape(1, -1), None, "w", None), 2.0, epsilon=0.5)
    assert (b.min_p, b.min_bits) == (pytest.approx(0.8), 2)


def test_bits_at_the_ends_of_the_range_and_per_layer_grids_by_hand() -> None:
    """k = 2^(b−1) − 1 up to 8 bits (k = 127), never 9. W = [[1, −2], [0.5, 0]] per row, σ = 2:
    ΣM_i² = 4.25; ε = 0.005 (ε²σ² = 1e-4): 7 bits give 4.25/(4·63²) = 2.7e-4, 8 bits 6.6e-5, so 8;
    ε²σ² = 3e-5: 8 bits give 6.6e-5, none fits (9 bits, 1.6e-5, would). A 3×2 layer with max|W| = 3
    per layer: n_out·max² = 27, σ = 1: ε² = 0.6 needs 27/36 = 0.75 > 0.6 at 3 bits, 27/196 at 4;
    ε² = 0.3 also 4 bits (27/196 = 0.14)."""
    layer = Layer("fc", 0, "dense", np.array([[1.0, -2.0], [0.5, 0.0]], np.float32), None, "w", None)
    assert advise(layer, 2.0, epsilon=0.005).min_bits == 8
    assert advise(layer, 2.0, epsilon=float(np.sqrt(3e-5 / 4))).min_bits is None
    tall = Layer("t", 0, "dense", np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32), None, "w", None)
    assert advise(tall, 1.0, epsilon=float(np.sqrt(0.6)), scale="per_layer").min_bits == 4
    assert advise(tall, 1.0, epsilon=float(np.sqrt(0.3)), scale="per_layer").min_bits == 4
