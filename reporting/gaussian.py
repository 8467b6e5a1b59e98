"""The i.i.d. Gaussian reference for the magnitude compressibility curve.

Ref: docs/method.md §4 ("give the Gaussian reference: q_mag ≈ 0.265 at ε = 0.1, ≈ 0.555 at squared 0.1").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_T = np.linspace(0.0, 8.0, 8001)  # (G,) thresholds, in standard deviations
_MASS = np.array([math.erf(t / math.sqrt(2.0)) for t in _T])  # (G,) P(|w| < t), non-decreasing
_ENERGY = _MASS - math.sqrt(2.0 / math.pi) * _T * np.exp(-(_T**2) / 2.0)  # (G,) E[w² 1{|w| < t}]


def gaussian_magnitude_curve(kappa: Sequence[float]) -> list[float]:
    """e_mag(κ) for i.i.d. N(0, 1) weights as N → ∞: the curve a heavy-tailed layer is read against.

    Derived: keeping the largest κ fraction drops the entries below the threshold t with
    P(|w| < t) = erf(t/√2) = 1 − κ; their share of the energy E[w²] = 1 is
    erf(t/√2) − √(2/π)·t·e^{−t²/2}, and e(κ) is its square root.
    """
    dropped = 1.0 - np.asarray(kappa, dtype=np.float64)  # (K,)
    e2 = np.interp(dropped, _MASS, _ENERGY)  # (K,)
    return [float(v) for v in np.sqrt(np.clip(e2, 0.0, 1.0))]
