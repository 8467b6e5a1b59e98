"""ℓ2 compressibility curves of a weight matrix: magnitude, node and spectral (P2 §3, Def. 2).

For non-negative values v_1..v_n (entry magnitudes, row norms or singular values) sorted in
decreasing order, keeping the largest k = ⌊κn⌋ gives the relative ℓ2 error

    e(κ) = sqrt(Σ_{i>κn} v_(i)²) / ‖v‖₂,      e(0) = 1, e(1) = 0, non-increasing in κ.

The prunable fraction at budget ε is q(ε) = max{1 − κ : e(κ) ≤ ε}, with κ ranging over the exact
grid {0, 1/n, ..., 1}. It is computed from the full sorted cumulative energy, not from a plot grid:
with S_j the sum of the j smallest v², q(ε) = max{j : S_j ≤ ε² S_n} / n.

Gaussian reference (docs/method.md §4): for i.i.d. Gaussian entries the magnitude curve has the
closed form below (the n → ∞ limit, which does not depend on the shape), giving q ≈ 0.265 at ε = 0.1
and ≈ 0.555 at ε² = 0.1. Row norms and singular values do depend on the shape; their reference is a
fixed-seed simulation of a Gaussian matrix of the same shape (``gaussian_curves``).

Ref: [P2] Barsbey et al. (NeurIPS 2021) §3 (ℓ_p-compressibility), Fig. 1; docs/method.md §4.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np

__all__ = [
    "EPS_GRID",
    "REFERENCE_SEED",
    "SortedEnergy",
    "compressibility_curve",
    "curve_sorted",
    "gaussian_magnitude_q",
    "gaussian_q",
    "prunable_fraction",
    "prunable_fraction_sorted",
    "singular_values",
    "sorted_energy",
    "square_sum",
]

EPS_GRID: dict[str, float] = {"eps_0.1": 0.1, "sq_eps_0.1": math.sqrt(0.1)}  # report keys -> ε
REFERENCE_SEED = 0  # the fixed seed of the Gaussian reference simulation
SVD_FLOP_CAP = 1e7  # a ~215x215 simulation: the Marchenko–Pastur shape needs no more (reference only)


class SortedEnergy:
    """S_0..S_n, S_j = sum of the j smallest squared values (float64, S_0 = 0, non-decreasing), kept
    as the sorted squares and every ``BLOCK``-th S_j instead of n + 1 float64 numbers (memory, issue
    10: a 8192×8192 layer's array was 512 MiB). An S_j is summed again from the checkpoint before it,
    adding the same float64 numbers in the same order as one ``np.cumsum`` over all of them, so every
    value equals that array's entry bit for bit (a test compares them).
    """

    BLOCK = 4096

    def __init__(self, sq: np.ndarray) -> None:
        self.sq = sq  # (n,) ascending squares, float32 or float64
        n = sq.size
        self.size = n + 1
        self.checkpoints = np.empty(n // self.BLOCK + 1)  # (n // BLOCK + 1,) S_0, S_BLOCK, S_2·BLOCK...
        self.checkpoints[0] = 0.0
        chunk = self.BLOCK * 256  # entries summed per pass: small float64 temporaries
        for start in range(0, n, chunk):
            part = self._run(start, min(n, start + chunk))  # S_start+1 .. S_end
            first = start // self.BLOCK + 1  # the next checkpoint index at or after start + 1
            idx = np.arange(first * self.BLOCK, min(n, start + chunk) + 1, self.BLOCK)
            self.checkpoints[idx // self.BLOCK] = part[idx - start - 1]
        self.total = float(self._run(max(0, n - 1), n)[-1]) if n else 0.0

    def _run(self, start: int, end: int) -> np.ndarray:
        """S_{start+1} .. S_end, summed sequentially from S_start (start ≥ 0)."""
        b = start // self.BLOCK
        head = self.checkpoints[b] if start == b * self.BLOCK else None
        if head is None:  # start is not a checkpoint: sum from the one before it
            return self._run(b * self.BLOCK, end)[start - b * self.BLOCK :]
        acc = np.empty(end - start + 1)  # (end − start + 1,) float64
        acc[0] = head
        acc[1:] = self.sq[start:end]
        np.cumsum(acc, out=acc)
        return acc[1:]

    def __getitem__(self, j: int | np.ndarray) -> np.ndarray | float:
        """S_j for an index or an array of indices (negative counts from the end)."""
        idx = np.asarray(j, dtype=np.int64) % self.size
        out = np.array([0.0 if i == 0 else float(self._run(int(i) - 1, int(i))[-1]) for i in idx.ravel()])
        return out.reshape(idx.shape) if idx.ndim else float(out[0])

    def searchsorted_right(self, value: float) -> int:
        """``np.searchsorted(S, value, side="right")`` over the full S_0..S_n."""
        c = int(np.searchsorted(self.checkpoints, value, side="right"))  # checkpoints ≤ value: 0..c−1
        if c == 0:
            return 0
        start = (c - 1) * self.BLOCK
        end = min(self.size - 1, start + self.BLOCK)
        part = self._run(start, end) if end > start else np.empty(0)  # S_start+1 .. S_end
        return start + 1 + int(np.searchsorted(part, value, side="right"))


def square_sum(values: np.ndarray, *, chunk: int = 1 << 20) -> float:
    """``float(np.square(values, dtype=np.float64).sum())`` without the float64 copy of ``values``.

    numpy sums a contiguous float64 array pairwise, halving n (the first half rounded down to a
    multiple of 8) down to blocks; the same halving is done here until a part has at most ``chunk``
    entries, which numpy then sums itself, so the result is the same number (a test compares them).
    """
    flat = np.ascontiguousarray(values).ravel()  # (n,), a view of a contiguous array

    def part(lo: int, n: int) -> float:
        if n <= chunk:
            return float(np.square(flat[lo : lo + n], dtype=np.float64).sum())
        half = n // 2
        half -= half % 8
        return part(lo, half) + part(lo + half, n - half)

    return part(0, flat.size)


FLOAT32_SQUARE_MAX = float(np.sqrt(np.finfo(np.float32).max))  # the largest |v| with a finite float32 square


def _square_overflows(v: np.ndarray) -> bool:
    """Whether some |v| squared exceeds float32's range (v: float32, finite: loading checked); max and
    min, not ``abs(v).max()``: no copy of v (memory, issue 10)."""
    return v.size > 0 and max(float(v.max()), -float(v.min())) > FLOAT32_SQUARE_MAX


def sorted_energy(values: np.ndarray) -> SortedEnergy:
    """S_0..S_n: S_j = sum of the j smallest squared values (float64, S_0 = 0, non-decreasing).

    The squares are sorted in the values' own precision (float32 weights stay float32: half the
    memory; sorting numbers gives the same order whatever the algorithm, so it is deterministic),
    and summed in float64 (``SortedEnergy``: checkpoints, no n + 1 float64 array). A float32 array
    holding a value whose square float32 cannot hold (|v| > ~1.8e19: a weight of a noise arm that
    grew while its loss stayed finite, or of an upload) is squared in float64 instead, which holds
    every float32 square.
    """
    v = np.asarray(values)
    dtype = np.float32 if v.dtype == np.float32 and not _square_overflows(v) else np.float64
    sq = np.square(v.astype(dtype, copy=False).ravel())  # (n,)
    sq.sort()  # in place, ascending
    return SortedEnergy(sq)


def prunable_fraction_sorted(S: SortedEnergy, eps: float) -> float:
    """q(ε) from ``sorted_energy`` S (see ``prunable_fraction``)."""
    n = S.size - 1
    if n == 0:
        raise ValueError("cannot measure the compressibility of an empty array")
    j = S.searchsorted_right(eps * eps * S.total) - 1
    return j / n


def curve_sorted(S: SortedEnergy, kappa: np.ndarray) -> np.ndarray:
    """e(κ) from ``sorted_energy`` S (see ``compressibility_curve``)."""
    n = S.size - 1
    if n == 0:
        raise ValueError("cannot measure the compressibility of an empty array")
    kept = np.floor(np.asarray(kappa, dtype=np.float64) * n + 1e-9).astype(np.int64).clip(0, n)  # (grid,)
    if S.total == 0.0:
        return np.where(kept == 0, 1.0, 0.0)  # nothing to lose: e is 0 once anything is kept
    e: np.ndarray = np.sqrt(np.clip(np.asarray(S[n - kept]) / S.total, 0.0, 1.0))  # (grid,)
    return e


def prunable_fraction(values: np.ndarray, eps: float) -> float:
    """q(ε) = max{1 − κ : e(κ) ≤ ε}, exact over κ ∈ {0, 1/n, ..., 1}.

    With S_j the sum of the j smallest squared values, pruning the j smallest gives e² = S_j / S_n,
    so q(ε) = max{j : S_j ≤ ε² S_n} / n (S is non-decreasing, so a binary search finds j).
    An all-zero input is fully prunable (q = 1).
    """
    return prunable_fraction_sorted(sorted_energy(values), eps)


def compressibility_curve(values: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """e(κ) on a plotting grid: keep the ⌊κn⌋ largest values, e = sqrt(S_{n−⌊κn⌋} / S_n)."""
    return curve_sorted(sorted_energy(values), kappa)


def singular_values(M: np.ndarray) -> np.ndarray:
    """Singular values of a 2-D matrix in float64 (no vectors)."""
    sv: np.ndarray = np.linalg.svd(np.asarray(M, dtype=np.float64), compute_uv=False)  # (min(rows, cols),)
    return sv


def _gaussian_pruned_energy(t: float) -> float:
    """E[Z² 1{|Z| < t}] for Z ~ N(0, 1): 2Φ(t) − 1 − 2tφ(t)."""
    return math.erf(t / math.sqrt(2.0)) - 2.0 * t * math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)


def gaussian_magnitude_q(eps: float) -> float:
    """q(ε) of the magnitude curve for i.i.d. Gaussian entries, in the n → ∞ limit (derived).

    Pruning every |w| < t removes the fraction q = P(|Z| < t) = erf(t/√2) and the energy share
    E[Z² 1{|Z| < t}] = erf(t/√2) − 2tφ(t). Solve energy = ε² for t by bisection, return erf(t/√2).
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1], got {eps}")
    lo, hi = 0.0, 40.0
    for _ in range(200):  # the energy share is increasing in t; 200 halvings reach float precision
        mid = 0.5 * (lo + hi)
        if _gaussian_pruned_energy(mid) <= eps * eps:
            lo = mid
        else:
            hi = mid
    return math.erf(lo / math.sqrt(2.0))


def gaussian_q(shape: tuple[int, int], *, seed: int = REFERENCE_SEED) -> dict[str, dict[str, float]]:
    """The Gaussian reference q(ε) for a matrix of this (rows, cols) shape (cached; a fresh copy)."""
    return copy.deepcopy(_gaussian_q(tuple(shape), seed))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _gaussian_q(shape: tuple[int, int], seed: int) -> dict[str, dict[str, float]]:
    """The Gaussian reference q(ε) for a matrix of this (rows, cols) shape, at the report's ε.

    - magnitude: the closed form ``gaussian_magnitude_q`` (shape-free n → ∞ limit);
    - node: row norms of i.i.d. N(0, 1) rows, ‖row‖² ~ χ²_cols, drawn with ``seed``;
    - spectral: singular values of an i.i.d. N(0, 1) matrix of the same shape, drawn with ``seed``.
      Above ``SVD_FLOP_CAP`` the matrix is shrunk with the same aspect ratio: its spectrum then follows
      the same Marchenko–Pastur law, which depends on the aspect ratio alone.
    """
    rows, cols = shape
    rng = np.random.default_rng(seed)
    row_norms = np.sqrt(rng.chisquare(cols, size=rows))  # (rows,), exact law of Gaussian row norms
    shrink = max(1.0, (rows * cols * min(rows, cols) / SVD_FLOP_CAP) ** (1.0 / 3.0))
    sim_shape = (max(1, round(rows / shrink)), max(1, round(cols / shrink)))
    sv = singular_values(rng.standard_normal(sim_shape))  # (min(sim_shape),)
    return {
        "magnitude": {key: gaussian_magnitude_q(eps) for key, eps in EPS_GRID.items()},
        "node": {key: prunable_fraction(row_norms, eps) for key, eps in EPS_GRID.items()},
        "spectral": {key: prunable_fraction(sv, eps) for key, eps in EPS_GRID.items()},
    }
