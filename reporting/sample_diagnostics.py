"""The heavy-tail diagnostics section of the sample report (``reporting.sample``), computed exactly.

Seeded synthetic weight matrices give the curves, q(ε) and histograms, with the α̂ values the
sample states; docs/method.md §4 defines each quantity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_KAPPA = np.linspace(0.0, 1.0, 41)
_GAUSSIAN_Q_MAG = {"eps_0.1": 0.265, "sq_eps_0.1": 0.555}  # docs/method.md §4, i.i.d. Gaussian reference


def tail_energy_curve(values: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """e(κ) = sqrt(Σ_{i>κN} v_(i)²) / ‖v‖₂ for magnitudes sorted descending. Ref: docs/method.md §4."""
    v2 = np.sort(np.abs(values.ravel()) ** 2)[::-1]  # (N,) descending energy
    tail = np.concatenate([np.cumsum(v2[::-1])[::-1], [0.0]])  # tail[k] = Σ_{i>=k} v2[i], (N+1,)
    kept = np.floor(kappa * v2.size).astype(int)
    e: np.ndarray = np.sqrt(tail[kept] / tail[0])  # (len(kappa),)
    return e


def _q(values: np.ndarray, eps: float) -> float:
    """q(ε) = max{1−κ : e(κ) ≤ ε}, exact on the sorted cumulative energy. Ref: docs/method.md §4."""
    v2 = np.sort(np.abs(values.ravel()) ** 2)  # (N,) ascending
    frac = np.cumsum(v2) / v2.sum()  # energy of the k smallest entries
    dropped = int(np.searchsorted(frac, eps**2, side="right"))
    return dropped / v2.size


def _diagnostic(name: str, W: np.ndarray, alpha: tuple[float, float, float, float]) -> dict[str, Any]:
    """One heavy-tail diagnostics entry for a weight matrix W of shape (out, in)."""
    rows = W.shape[0]
    row_norms = np.linalg.norm(W, axis=1)  # (out,)
    sv = np.linalg.svd(W, compute_uv=False)  # (min(out, in),)
    parts = {"magnitude": W, "node": row_norms, "spectral": sv}
    curves: dict[str, list[float]] = {"kappa": [round(float(k), 4) for k in _KAPPA]}
    q: dict[str, dict[str, float]] = {}
    for key, v in parts.items():
        curves[key] = [round(float(e), 5) for e in tail_energy_curve(v, _KAPPA)]
        q[key] = {"eps_0.1": round(_q(v, 0.1), 4), "sq_eps_0.1": round(_q(v, 0.1**0.5), 4)}
    counts, edges = np.histogram(W.ravel(), bins=48)
    multi, uni, lo, hi = alpha
    return {
        "name": name,
        "rows": rows,
        "cols": W.shape[1],
        "low_confidence": rows < 64,
        "alpha": {"multivariate": multi, "univariate": uni, "spread": [lo, hi], "per_block": {"2": multi}},
        "curves": curves,
        "q": q,
        "gaussian_reference": {"magnitude": dict(_GAUSSIAN_Q_MAG)},
        "histogram": {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]},
    }


def diagnostics() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    w1 = rng.standard_t(3.0, size=(256, 64)) * 0.08  # (out, in) heavier tails: trained first layer
    w2 = rng.standard_t(5.0, size=(128, 256)) * 0.05  # (out, in)
    w3 = rng.standard_normal(size=(10, 128)) * 0.1  # (out, in) Gaussian-like classifier
    return [
        _diagnostic("fc1", w1, (1.78, 1.86, 1.71, 1.84)),
        _diagnostic("fc2", w2, (1.91, 1.94, 1.85, 1.97)),
        _diagnostic("fc3", w3, (1.99, 2.0, 1.93, 2.0)),
    ]
