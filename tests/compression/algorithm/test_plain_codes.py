"""A plain quantized draw held as codes (algorithm/plain_codes.py): Ŵ and Var(t) come back bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm import quantize
from netshrink.compression.algorithm.layer_compress import compress_layer
from netshrink.compression.algorithm.plain_codes import compact, restore
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import QuantizeSpec


def _layer(n_out: int, n_in: int, seed: int) -> tuple[Layer, torch.Tensor]:
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((n_out, n_in)) * rng.uniform(0.1, 3.0, (n_out, 1))).astype(np.float32)
    W[0] = 0.0  # a zero row: step 0, all codes 0
    X = torch.from_numpy(rng.standard_normal((32, n_in)))  # (S, n_in)
    return Layer("fc", 1, "dense", W, None, "w", None, structured=True), X


@pytest.mark.parametrize("scale", ["per_row", "per_layer"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_restore_gives_quantize_matrix_values(scale: str, bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize, "_CHUNK", 64)  # several row blocks (the float64 order per block)
    layer, X = _layer(40, 24, bits)
    d = compress_layer(
        layer,
        layer_stats(layer, X, groups=False),
        prune=None,
        quantize=QuantizeSpec(bits=bits, scale=scale),  # type: ignore[arg-type]
        keep=1.0,
        generator=generator(3, 1, 0),
    )
    held = compact(d)
    assert held.compressed.weight.size == 0 and held.var.size == 0
    back = restore(layer, held)
    np.testing.assert_array_equal(back.compressed.weight, d.compressed.weight)
    np.testing.assert_array_equal(back.var, d.var)
    assert back.var.dtype == np.float32 and back.compressed.weight.shape == layer.weight.shape
    assert back.tier_E_A == d.tier_E_A and back.compressed.codes is d.compressed.codes


@pytest.mark.parametrize("spec", [QuantizeSpec(bits=4, method="rtn"), QuantizeSpec(bits=4, fraction=0.5)])
def test_only_a_full_stochastic_rounding_is_held_as_codes(spec: QuantizeSpec) -> None:
    layer, X = _layer(12, 16, 0)
    d = compress_layer(
        layer,
        layer_stats(layer, X, groups=False),
        prune=None,
        quantize=spec,
        keep=1.0,
        generator=generator(0, 1, 0),
    )
    with pytest.raises(ValueError, match="only a stochastic rounding"):
        compact(d)
