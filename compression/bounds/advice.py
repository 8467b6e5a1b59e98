"""Per-layer advice from tier T's relative term: the least keep fraction and the fewest bits.

Ref: docs/method.md §3 "The width trade-off" [P1 Thm 2, 3, 6]. Relative to the worst-case scale
Z²σ², tier T's layer term is f·τ²·max_j‖W[:,j]‖²/σ² for pruning and f·Σ_i M_i²/(4k²σ²) for
quantization (× windows per pixel for a conv). The advice asks each to be ≤ ε².
"""

from __future__ import annotations

from dataclasses import dataclass

from netshrink.compression.algorithm.scores import column_sq_sums, row_abs_max
from netshrink.compression.bounds.bounds import windows_per_pixel
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import MAX_BITS, MIN_BITS

__all__ = ["LayerAdvice", "advise"]


@dataclass
class LayerAdvice:
    """``min_p``: least keep probability of the randomized weights; ``min_keep`` = 1 − f + f·min_p."""

    layer: str
    epsilon: float
    min_p: float
    min_keep: float
    min_bits: int | None  # None: even MAX_BITS misses ε
    text: str

    def to_dict(self) -> dict[str, object]:
        return {
            "layer": self.layer,
            "epsilon": self.epsilon,
            "min_p": self.min_p,
            "min_keep": self.min_keep,
            "min_bits": self.min_bits,
            "text": self.text,
        }


def advise(
    layer: Layer,
    sigma: float,
    *,
    epsilon: float = 0.1,
    f_prune: float = 1.0,
    f_quant: float = 1.0,
    scale: str = "per_row",
) -> LayerAdvice:
    """Smallest p with f·τ²·max_j‖W[:,j]‖²/σ² ≤ ε² and smallest b with f·Σ_i M_i²/(4k²σ²) ≤ ε².

    τ² = (1−p)/p ≤ r  ⇔  p ≥ 1/(1+r) with r = ε²σ²/(f·c·max_j‖W[:,j]‖²), c the windows per pixel.
    """
    W = layer.matrix  # (out, in) float32: no float64 copies (memory, issue 10), same sums
    c = windows_per_pixel(layer)
    col2 = float(column_sq_sums(W).max())
    budget = epsilon**2 * sigma**2
    cost = f_prune * c * col2  # the pruning term per unit of τ²
    min_p = 1.0 if cost == 0 else 1.0 / (1.0 + budget / cost)
    min_p = 0.0 if col2 == 0 else min_p
    row_max = row_abs_max(W)  # (out,) float64
    M2 = float((row_max**2).sum()) if scale == "per_row" else W.shape[0] * float(row_max.max()) ** 2
    min_bits = None
    for b in range(MIN_BITS, MAX_BITS + 1):
        k = 2 ** (b - 1) - 1
        if f_quant * c * M2 / (4 * k * k) <= budget:
            min_bits = b
            break
    min_keep = 1.0 - f_prune + f_prune * min_p
    bits_txt = (
        f"can go to {min_bits} bits"
        if min_bits is not None
        else f"can't be quantized (not even at {MAX_BITS} bits)"
    )
    text = (
        f"{bits_txt}, or be pruned to keep {min_keep:.3g} (p = {min_p:.3g} at f = {f_prune:g}), "
        f"with tier T's relative layer term <= eps^2 = {epsilon**2:.3g}"
    )
    return LayerAdvice(layer.name, epsilon, min_p, min_keep, min_bits, text)
