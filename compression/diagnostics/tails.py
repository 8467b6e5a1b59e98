"""Tail index α̂ of a weight tensor: the Mohammadi–Mohammadpour–Ogata (MMO) estimator.

If the rows X_1..X_N of a matrix are i.i.d. symmetric α-stable vectors, a sum of K₁ of them has the
law of K₁^{1/α}·X_1, hence E ln‖Y‖ − E ln‖X‖ = ln K₁ / α exactly, for any row width. The estimator
replaces both expectations by sample means (MMO 2015, Cor. 2.4; P2 §4 and its code, which uses
row vectors of the weight matrix as the units).

Procedure (docs/method.md §4, "Tail index α̂"):
  1. centre the rows by the column-wise median;
  2. for K₁ ∈ {2, 5, 10, 20, 50, 100, 500, 1000, ⌊√N⌋} with 2 ≤ K₁ ≤ N/2, drop the last N mod K₁
     rows and sum the rest in consecutive blocks of K₁: Y_i;
  3. 1/α̂ = (mean ln‖Y_i‖ − mean ln‖X_i‖) / ln K₁;
  4. median over K₁, then median over 5 row permutations, then cap at 2.

The univariate version runs the same procedure on all entries (minus their median) as 1-D rows.

At scale (docs/method.md §4 adapted for large layers; derived): above ``max_rows`` rows, each of the
5 permutations is a fresh seeded sample of ``max_rows`` rows drawn without replacement (in random
order, so its consecutive blocks are random blocks), centred by the column-wise median of the first
sample. The estimator is then the same on a sub-sample; the result says it is sampled, with the
sample size and the standard error of the median over the 5 samples (≈ 1.2533·sd/√5, the normal
approximation of a median's standard error).
Row norms must not be used as the units: their tail index is not α (the estimator collapses to ≈1).

α̂ ≈ 2 means Gaussian-like tails; a lower α̂ means heavier tails, hence more compressible by P2's
theory. It is a diagnostic, not a test.

Ref: Mohammadi, Mohammadpour & Ogata (2015), "On estimating the tail index and the spectral measure
of multivariate α-stable distributions", Metrika 78(5):549–561; [P2] Barsbey et al. (NeurIPS 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLOCK_SIZES",
    "N_PERMUTATIONS",
    "TailIndex",
    "block_sizes",
    "estimate_alpha",
    "estimate_alpha_univariate",
]

BLOCK_SIZES: tuple[int, ...] = (2, 5, 10, 20, 50, 100, 500, 1000)  # plus ⌊√N⌋, docs/method.md §4
N_PERMUTATIONS = 5
ALPHA_CAP = 2.0
_EPS = float(np.spacing(1.0))  # guards ln 0 for all-zero rows, as in P2's code


@dataclass(frozen=True)
class TailIndex:
    """An α̂ estimate: the headline value and the per-block-size values it is the median of.

    ``alpha`` is None when there are fewer than 4 rows (no admissible K₁). ``per_block`` maps K₁ to the
    median over permutations of that K₁'s estimate, capped at 2 (an estimate 1/α̂ ≤ 0 also reads 2).
    """

    alpha: float | None
    per_block: dict[int, float]
    n_rows: int
    sample_rows: int = 0  # rows used per permutation (= n_rows unless sampled)
    standard_error: float | None = None  # of the median over permutations / samples
    per_permutation: tuple[float, ...] = ()

    @property
    def sampled(self) -> bool:
        return 0 < self.sample_rows < self.n_rows

    @property
    def spread(self) -> tuple[float, float] | None:
        """[min, max] of the per-block estimates: how much α̂ depends on K₁."""
        if not self.per_block:
            return None
        values = list(self.per_block.values())
        return (min(values), max(values))


def block_sizes(n_rows: int) -> list[int]:
    """The admissible K₁: {2, 5, ..., 1000, ⌊√N⌋} ∩ [2, N/2], sorted, without duplicates."""
    candidates = {*BLOCK_SIZES, math.isqrt(n_rows)}
    return sorted(k for k in candidates if 2 <= k and 2 * k <= n_rows)


def _inverse_alpha(X: np.ndarray, k: int, mean_log_x: float) -> float:
    """1/α̂ for one block size K₁ = k on already centred and permuted rows X (N, d)."""
    n_blocks = X.shape[0] // k
    Y = X[: n_blocks * k].reshape(n_blocks, k, X.shape[1]).sum(axis=1)  # (N // K₁, d)
    mean_log_y = float(np.mean(np.log(np.linalg.norm(Y, axis=1) + _EPS)))
    return (mean_log_y - mean_log_x) / math.log(k)


def _alpha_from_inverse(inv: float) -> float:
    """α̂ = 1/inv, read as +∞ when inv ≤ 0 (no growth of the block sums at all)."""
    return 1.0 / inv if inv > 0.0 else math.inf


def estimate_alpha(
    rows: np.ndarray,
    *,
    seed: int = 0,
    n_permutations: int = N_PERMUTATIONS,
    max_rows: int | None = None,
) -> TailIndex:
    """Multivariate MMO tail index of the rows of a 2-D array (N, d), capped at 2.

    The permutations (or, above ``max_rows`` rows, the samples) come from
    ``np.random.default_rng(seed)``, so the result is deterministic.
    Ref: docs/method.md §4 steps 1–4; MMO (2015) Cor. 2.4.
    """
    X = np.asarray(rows)
    if X.ndim != 2:
        raise ValueError(f"rows must be 2-D (N, d), got shape {X.shape}")
    n = X.shape[0]
    s = n if max_rows is None or n <= max_rows else int(max_rows)
    ks = block_sizes(s)
    if not ks:
        return TailIndex(alpha=None, per_block={}, n_rows=n, sample_rows=s)
    rng = np.random.default_rng(seed)
    alphas = np.empty((n_permutations, len(ks)))  # (perm, K₁)
    if s == n:
        Xc = X.astype(np.float64) - np.median(X.astype(np.float64), axis=0, keepdims=True)  # (N, d), step 1
        # ln‖X_i‖ does not depend on the row order: one mean serves every permutation.
        mean_log_x = float(np.mean(np.log(np.linalg.norm(Xc, axis=1) + _EPS)))
        for p in range(n_permutations):
            Xp = Xc[rng.permutation(n)]  # (N, d)
            for j, k in enumerate(ks):
                alphas[p, j] = _alpha_from_inverse(_inverse_alpha(Xp, k, mean_log_x))
    else:
        med: np.ndarray | None = None
        for p in range(n_permutations):
            idx = rng.choice(n, size=s, replace=False)  # (s,) a seeded sample, in random order
            Xp = X[idx].astype(np.float64)  # (s, d)
            if med is None:
                med = np.median(Xp, axis=0, keepdims=True)  # (1, d) from the first sample
            Xp -= med
            mean_log_x = float(np.mean(np.log(np.linalg.norm(Xp, axis=1) + _EPS)))
            for j, k in enumerate(ks):
                alphas[p, j] = _alpha_from_inverse(_inverse_alpha(Xp, k, mean_log_x))
    per_perm = np.minimum(np.median(alphas, axis=1), ALPHA_CAP)  # (perm,): median over K₁
    alpha = min(float(np.median(per_perm)), ALPHA_CAP)
    per_block = {k: min(float(np.median(alphas[:, j])), ALPHA_CAP) for j, k in enumerate(ks)}
    se = None
    if n_permutations > 1 and np.all(np.isfinite(per_perm)):
        se = 1.2533 * float(np.std(per_perm, ddof=1)) / math.sqrt(n_permutations)
    return TailIndex(
        alpha=alpha,
        per_block=per_block,
        n_rows=n,
        sample_rows=s,
        standard_error=se,
        per_permutation=tuple(float(a) for a in per_perm),
    )


def estimate_alpha_univariate(
    values: np.ndarray, *, seed: int = 0, n_permutations: int = N_PERMUTATIONS, max_rows: int | None = None
) -> TailIndex:
    """Univariate MMO tail index of all entries (flattened) minus their median, capped at 2.

    The same procedure as ``estimate_alpha`` on the entries as 1-D rows; N is the number of entries.
    """
    flat = np.asarray(values).reshape(-1, 1)  # (N, 1)
    return estimate_alpha(flat, seed=seed, n_permutations=n_permutations, max_rows=max_rows)
