"""The spectral compressibility curve of a weight matrix: exact when small, sketched at scale.

Exact: all singular values (float64 SVD, cubic). Above ``EXACT_FLOPS`` (m·n·min(m, n)) the default is
a randomized SVD of rank r (``torch.svd_lowrank``: Halko, Martinsson & Tropp 2011, Alg. 4.4 with
``niter`` power iterations; seeded), linear in m·n for a fixed r. Its Ritz values σ̃_1 ≥ … ≥ σ̃_r
lie below the singular values (σ̃_i = σ_i(QᵀW) ≤ ‖Q‖σ_i(W) = σ_i(W), up to float32 rounding), and ‖W‖²_F is
known exactly, so for every kept count k ≤ r

    ẽ(k/n)² = (‖W‖²_F − Σ_{i≤k} σ̃_i²) / ‖W‖²_F  ≥  e(k/n)²:

each point of the sketched curve is an UPPER bound on the exact one (stated in the report, with the
residual energy), points past κ = r/n are not computed (null), and q(ε) read from it is a LOWER
bound on the exact q(ε) (null when the budget is not reached within rank r).
Ref: docs/method.md §4 (spectral curve); [P2] §3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netshrink.compression.diagnostics.compressibility import singular_values, square_sum

__all__ = ["EXACT_FLOPS", "SKETCH_RANK", "Spectrum", "spectrum"]

EXACT_FLOPS = 2**27  # m·n·min(m, n): a 512×512 (or 4096×90) full SVD stays exact by default; above,
# the cubic SVD would dominate a compress job (bench/scale.py), so the sketch is the default
SKETCH_RANK = 128
SKETCH_NITER = 2


@dataclass(frozen=True)
class Spectrum:
    values: np.ndarray  # (r,) descending: all singular values, or the sketch's Ritz values
    exact: bool
    n: int  # min(m, n): the number of singular values
    energy: float  # ‖W‖²_F (exact)

    def describe(self) -> dict[str, Any]:
        if self.exact:
            return {"method": "svd", "exact": True, "rank": self.n}
        captured = float(np.square(self.values).sum())
        return {
            "method": "svd_lowrank",
            "exact": False,
            "rank": int(self.values.size),
            "niter": SKETCH_NITER,
            "covers_kappa": self.values.size / self.n,
            "residual_energy_fraction": max(0.0, 1.0 - captured / self.energy) if self.energy > 0 else 0.0,
            "error": (
                "sampled: each curve point is an upper bound on the exact e(kappa) (Ritz values lie below "
                "the singular values); points past covers_kappa are null; q is a lower bound on the "
                "exact q, null when not reached within the rank"
            ),
        }

    def curve(self, kappa: np.ndarray) -> list[float | None]:
        """e(κ) at each κ: exact, or the sketch's upper bound (None past its rank)."""
        kept = np.floor(np.asarray(kappa, dtype=np.float64) * self.n + 1e-9).astype(np.int64)  # (grid,)
        head = np.concatenate(([0.0], np.cumsum(np.square(self.values.astype(np.float64)))))  # (r + 1,)
        out: list[float | None] = []
        for k in kept:
            if k > self.values.size:
                out.append(None)
            elif self.energy <= 0:
                out.append(1.0 if k == 0 else 0.0)
            else:
                out.append(float(np.sqrt(np.clip((self.energy - head[k]) / self.energy, 0.0, 1.0))))
        return out

    def q(self, eps: float) -> float | None:
        """q(ε) = 1 − k*/n with k* the fewest kept values reaching e ≤ ε (a lower bound when sketched)."""
        head = np.concatenate(([0.0], np.cumsum(np.square(self.values.astype(np.float64)))))  # (r + 1,)
        if self.energy <= 0:
            return 1.0
        ok = np.nonzero(self.energy - head <= eps * eps * self.energy)[0]
        if ok.size == 0:
            return None
        return 1.0 - int(ok[0]) / self.n


def spectrum(X: np.ndarray, *, full: bool = False, seed: int = 0) -> Spectrum:
    """Singular values of X (m, n): exact if ``full`` or small, else a rank-``SKETCH_RANK`` sketch."""
    m, n = X.shape
    if full or float(m) * n * min(m, n) <= EXACT_FLOPS or min(m, n) <= SKETCH_RANK:
        sv = singular_values(X)  # (min(m, n),)
        return Spectrum(sv, True, min(m, n), float(np.square(sv).sum()))
    energy = square_sum(X)  # ‖W‖²_F, exact, without a float64 copy of X
    A = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))  # (m, n), no copy for float32
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws from the global generator: seed a fork
        torch.manual_seed(seed)
        _, S, _ = torch.svd_lowrank(A, q=SKETCH_RANK, niter=SKETCH_NITER)  # (r,)
    return Spectrum(S.double().numpy(), False, min(m, n), energy)
