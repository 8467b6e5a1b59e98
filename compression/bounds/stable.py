"""Symmetric α-stable (SαS) random numbers: the Chambers–Mallows–Stuck sampler.

Used for the synthetic oracles of the tail-index estimator and for P3's heavy-tailed noise
fine-tuning (docs/method.md §4). A standard SαS variable X has characteristic function
E[exp(itX)] = exp(−|t|^α); α = 2 is N(0, 2), α = 1 is the standard Cauchy.

Ref: Chambers, Mallows & Stuck (1976), "A method for simulating stable random variables",
JASA 71(354), Eq. (2.3) with β = 0; Weron (1996), Eq. (3.2).
"""

from __future__ import annotations

import numpy as np

from netshrink.compression.errors import InvalidSpecError

__all__ = ["sample_sas"]


def sample_sas(
    alpha: float,
    size: int | tuple[int, ...],
    *,
    rng: np.random.Generator,
    scale: float = 1.0,
) -> np.ndarray:
    """Draw i.i.d. symmetric α-stable variables (float64) with characteristic function exp(−|scale·t|^α).

    With V ~ U(−π/2, π/2) and W ~ Exp(1) independent (CMS 1976, β = 0):

        X = sin(αV) / cos(V)^{1/α} · (cos((1−α)V) / W)^{(1−α)/α}     (α ≠ 1)
        X = tan(V)                                                   (α = 1)

    ``rng`` is required so that every draw is reproducible from its caller's seed.
    """
    alpha = float(alpha)
    if not 0.0 < alpha <= 2.0:
        raise InvalidSpecError(f"the stability index alpha must lie in (0, 2], got {alpha}", field="alpha")
    if not scale > 0.0:
        raise InvalidSpecError(f"the scale must be positive, got {scale}", field="scale")
    V = rng.uniform(-np.pi / 2, np.pi / 2, size=size)  # U(−π/2, π/2)
    W = rng.standard_exponential(size=size)  # Exp(1)
    if alpha == 1.0:
        X = np.tan(V)
    else:
        X = (
            np.sin(alpha * V)
            / np.cos(V) ** (1.0 / alpha)
            * (np.cos((1.0 - alpha) * V) / W) ** ((1.0 - alpha) / alpha)
        )
    return scale * X
