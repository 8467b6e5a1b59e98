"""The compressed form of one layer's weight: what the algorithms produce and the exporters store.

Ref: docs/method.md §1 (randomized replacement), §5 (storage that really shrinks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CompressedWeight:
    """One layer after compression, in canonical (PyTorch) orientation, same shape as ``Layer.weight``.

    - ``weight`` is Ŵ as float32. Dropped neurons/channels are zero columns here; the exporter
      removes them physically (``dropped_inputs``) together with the upstream rows.
    - When quantized: Ŵ = codes · scale (row-wise), except where ``outliers`` is True, where Ŵ
      keeps a float value (f < 1 quantization keeps top-score weights as sparse float outliers).
    """

    layer: str
    weight: np.ndarray  # (n_out, n_in) or (c_out, c_in, kh, kw), float32
    codes: np.ndarray | None = None  # int8, same shape as weight; |codes| <= k = 2^(bits-1) - 1
    scale: np.ndarray | None = None  # float32 (n_out,) per row, or (1,) per layer: the step M/k
    bits: int | None = None  # nominal bits (2..8); container int2 for 2 bits, int4 for 3-4, else int8
    outliers: np.ndarray | None = None  # bool, same shape as weight: entries stored as float
    dropped_inputs: np.ndarray | None = None  # int64 indices of removed upstream units (neurons/channels)
    bias: np.ndarray | None = None  # (n_out,) float32 compensated bias b̂; None: the layer's own bias

    @property
    def container_bits(self) -> int | None:
        if self.bits is None:
            return None
        return 2 if self.bits <= 2 else 4 if self.bits <= 4 else 8

    @property
    def density(self) -> float:
        """Fraction of non-zero entries in Ŵ."""
        return float(np.count_nonzero(self.weight)) / float(self.weight.size)
