"""Heavy-tail diagnostics per weight tensor, as uploaded: the report's ``diagnostics`` entries.

Each tensor is read with rows as units (docs/method.md §4): a dense weight (out, in) as is, a conv
weight (out, in, kh, kw) as (out·in, kh·kw) "kernels". ``Network.raw_weights`` already holds the
weights in canonical PyTorch orientation, before any BatchNorm folding (``compression/graph/network.py``).

One entry (docs/report-format.md, "diagnostics"):

    {"name", "rows", "cols", "low_confidence",
     "alpha": {"multivariate", "univariate", "spread": [min, max], "per_block": {"K₁": α̂}},
     "curves": {"kappa": [...], "magnitude": [...], "node": [...], "spectral": [...]},
     "q": {"magnitude": {"eps_0.1", "sq_eps_0.1"}, "node": {...}, "spectral": {...}},
     "gaussian_reference": {"magnitude": {...}, "node": {...}, "spectral": {...}}}

Every number is a plain Python float (or None where α̂ is undefined, below 4 rows), so the dict is
JSON-ready with ``allow_nan=False``.

Ref: docs/method.md §4; [P2] Barsbey et al. (NeurIPS 2021); [P3] Wan et al. (ICML 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netshrink.compression.diagnostics.compressibility import (
    EPS_GRID,
    SortedEnergy,
    curve_sorted,
    gaussian_q,
    prunable_fraction_sorted,
    sorted_energy,
)
from netshrink.compression.diagnostics.spectral import spectrum
from netshrink.compression.diagnostics.tails import TailIndex, estimate_alpha, estimate_alpha_univariate
from netshrink.compression.errors import InvalidWeightsError
from netshrink.compression.graph.network import Network

__all__ = [
    "KAPPA_GRID",
    "LOW_CONFIDENCE_ROWS",
    "diagnose_network",
    "diagnose_tensor",
    "network_tails",
    "tail_summary",
    "tensor_rows",
    "tensor_tails",
    "TensorTails",
]

LOW_CONFIDENCE_ROWS = 64  # docs/method.md §4: "Mark a layer 'low confidence' below 64 rows"
KAPPA_GRID = np.linspace(0.0, 1.0, 51)  # kept fraction κ, for plots only (q is exact, see compressibility)
_CURVE_DIGITS = 6  # curves are for plots: 6 decimals keep the report small


def tensor_rows(weight: np.ndarray) -> np.ndarray:
    """The (rows, cols) view of docs/method.md §4.

    Dense (out, in) as is; conv (out, in, *k) -> (out·in, ∏k)."""
    w = np.asarray(weight)
    if w.ndim == 2:
        return w  # (out, in)
    if w.ndim >= 3:
        return w.reshape(w.shape[0] * w.shape[1], -1)  # (out·in, kh·kw) kernels
    raise InvalidWeightsError(f"a weight tensor needs at least 2 dimensions, got shape {w.shape}")


UNIVARIATE_MAX_ENTRIES = 2**18  # α̂ univariate: 5 seeded samples of 262,144 entries above that
MULTIVARIATE_MAX_ENTRIES = 2**22  # α̂ multivariate: rows sampled so that rows·cols stays below this


def _q(S: SortedEnergy) -> dict[str, float]:
    return {key: prunable_fraction_sorted(S, eps) for key, eps in EPS_GRID.items()}


def _curve(S: SortedEnergy) -> list[float]:
    return [round(float(e), _CURVE_DIGITS) for e in curve_sorted(S, KAPPA_GRID)]


HISTOGRAM_BINS = 61


def _sampling(t: TailIndex) -> dict[str, Any]:
    return {
        "sampled": t.sampled,
        "sample_rows": t.sample_rows,
        "rows": t.n_rows,
        "standard_error": t.standard_error,
    }


def _checked_rows(name: str, rows: np.ndarray) -> np.ndarray:
    X = np.asarray(rows)  # (N, d), the weights' own dtype: no float64 copy of the whole tensor
    if X.ndim != 2 or X.size == 0:
        raise InvalidWeightsError(f"{name}: expected a non-empty 2-D array of rows, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise InvalidWeightsError(f"{name}: the weights contain NaN or Inf")
    return X


@dataclass(frozen=True)
class _Tails:
    """The parts of a tensor's entry without an SVD: q(ε) and e(κ) of the magnitude and node curves,
    and both α̂."""

    q: dict[str, dict[str, float]]  # "magnitude" / "node" -> EPS_GRID key -> q(ε)
    curves: dict[str, list[float]]  # "magnitude" / "node" -> e(κ) on KAPPA_GRID
    multi: TailIndex
    uni: TailIndex


def _tails(X: np.ndarray, seed: int, full: bool) -> _Tails:
    """The magnitude and node curves and both α̂ of rows X (N, d). Each sorted energy is read and
    released before the next part runs (its sorted squares are a float32 copy of X: memory, issue 10)."""
    n_cols = X.shape[1]
    q: dict[str, dict[str, float]] = {}
    curves: dict[str, list[float]] = {}
    for key in ("magnitude", "node"):  # entries (N·d values), then row norms (N values)
        S = sorted_energy(X if key == "magnitude" else row_norms(X))  # S_0..S_n of the sorted squares
        q[key], curves[key] = _q(S), _curve(S)
        del S
    multi_cap = None if full else max(4, MULTIVARIATE_MAX_ENTRIES // max(1, n_cols))
    multi = estimate_alpha(X, seed=seed, max_rows=multi_cap)
    uni = estimate_alpha_univariate(X, seed=seed, max_rows=None if full else UNIVARIATE_MAX_ENTRIES)
    return _Tails(q, curves, multi, uni)


def row_norms(X: np.ndarray) -> np.ndarray:
    """‖row‖₂ of X (N, d) in float64, squared and summed a block of rows at a time: each row's sum is
    the same numbers in the same order as one ``np.square(X, dtype=float64).sum(axis=1)``, without its
    N·d float64 temporary (memory, issue 10)."""
    out = np.empty(X.shape[0])  # (N,)
    step = max(1, (1 << 20) // max(1, X.shape[1]))  # rows per block: ≤ 8 MiB of float64
    for r in range(0, X.shape[0], step):
        out[r : r + step] = np.square(X[r : r + step], dtype=np.float64).sum(axis=1)
    return np.sqrt(out, out=out)


def tail_summary(name: str, rows: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """The SVD-free part of ``diagnose_tensor``, with the same numbers for the same ``seed``:
    α̂ (multivariate, univariate), the magnitude and node curves and their q(ε).

    No spectral curve, Gaussian reference or histogram: the finetune report measures three models
    per job and needs none of them, and the spectrum (an SVD, cubic) dominated its cost
    (bench/finetune_speed.py). Ref: docs/method.md §4; [P3] Wan et al. (ICML 2024).
    """
    X = _checked_rows(name, rows)
    t = _tails(X, seed, False)
    return {
        "name": name,
        "rows": int(X.shape[0]),
        "alpha": {"multivariate": t.multi.alpha, "univariate": t.uni.alpha},
        "q": {"magnitude": t.q["magnitude"], "node": t.q["node"]},
        "curves": {
            "kappa": [round(float(k), _CURVE_DIGITS) for k in KAPPA_GRID],
            "magnitude": t.curves["magnitude"],
            "node": t.curves["node"],
        },
        "low_confidence": bool(X.shape[0] < LOW_CONFIDENCE_ROWS),
    }


@dataclass(frozen=True)
class TensorTails:
    """The SVD-free, BLAS-free part of one tensor's entry (``tensor_tails``): numpy sorts, sums and
    row samples only, so it may run on another thread (diagnostics/background.py) with the same bytes."""

    tails: _Tails
    histogram: dict[str, list[float] | list[int]]


def tensor_tails(name: str, rows: np.ndarray, *, seed: int = 0, full: bool = False) -> TensorTails:
    """``diagnose_tensor``'s parts without the spectrum and the Gaussian reference (both call LAPACK)."""
    X = _checked_rows(name, rows)
    return TensorTails(_tails(X, seed, full), weight_histogram(X))


def diagnose_tensor(
    name: str, rows: np.ndarray, *, seed: int = 0, full: bool = False, tails: TensorTails | None = None
) -> dict[str, Any]:
    """The ``diagnostics`` entry of one weight matrix given as rows (N, d).

    ``seed`` drives the α̂ row permutations / samples and the spectral sketch; the Gaussian reference
    uses its own fixed seed. ``full`` computes every part exactly (α̂ on all rows, every singular
    value: cubic); by default α̂ is estimated from seeded samples above ``UNIVARIATE_MAX_ENTRIES`` /
    ``MULTIVARIATE_MAX_ENTRIES`` and the spectral curve is sketched above ``spectral.EXACT_FLOPS``,
    and the entry says so (``sampling``). The magnitude and node curves are always exact.
    ``tails``: this tensor's ``tensor_tails`` for the same ``seed`` and ``full``, computed earlier
    (diagnostics/background.py); the entry is the same, only the SVD part runs here.
    Ref: docs/method.md §4 (curves, q(ε), Gaussian reference, α̂, low confidence).
    """
    X = _checked_rows(name, rows)
    n_rows, n_cols = X.shape
    tt = tensor_tails(name, X, seed=seed, full=full) if tails is None else tails
    t = tt.tails
    multi, uni = t.multi, t.uni
    spec = spectrum(X, full=full, seed=seed)
    spread = multi.spread
    return {
        "name": name,
        "rows": int(n_rows),
        "cols": int(n_cols),
        "low_confidence": bool(n_rows < LOW_CONFIDENCE_ROWS),
        "alpha": {
            "multivariate": multi.alpha,
            "univariate": uni.alpha,
            "spread": None if spread is None else [spread[0], spread[1]],
            "per_block": {str(k): v for k, v in multi.per_block.items()},
            "standard_error": {"multivariate": multi.standard_error, "univariate": uni.standard_error},
        },
        "curves": {
            "kappa": [round(float(k), _CURVE_DIGITS) for k in KAPPA_GRID],
            "magnitude": t.curves["magnitude"],
            "node": t.curves["node"],
            "spectral": [None if e is None else round(e, _CURVE_DIGITS) for e in spec.curve(KAPPA_GRID)],
        },
        "q": {
            "magnitude": t.q["magnitude"],
            "node": t.q["node"],
            "spectral": {key: spec.q(eps) for key, eps in EPS_GRID.items()},
        },
        "gaussian_reference": gaussian_q((n_rows, n_cols)),
        "histogram": tt.histogram,
        "sampling": {
            "full": full,
            "alpha_multivariate": _sampling(multi),
            "alpha_univariate": _sampling(uni),
            "spectral": spec.describe(),
        },
    }


def weight_histogram(X: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[float] | list[int]]:
    """Counts of the entries on a symmetric grid around 0 (for report.html's log-y histogram)."""
    lim = float(max(abs(X.max()), abs(X.min()))) or 1.0  # max |x|, without an |X| copy
    counts, edges = np.histogram(X.ravel(), bins=bins, range=(-lim, lim))  # (bins,), (bins+1,)
    return {"edges": [round(float(e), 8) for e in edges], "counts": [int(c) for c in counts]}


def network_tails(net: Network, *, seed: int = 0, full: bool = False) -> dict[str, TensorTails]:
    """``tensor_tails`` of every weight ``diagnose_network`` reads, by name (one tensor at a time)."""
    return {
        name: tensor_tails(name, tensor_rows(weight), seed=seed, full=full)
        for name, weight in net.raw_weights.items()
        if np.ndim(weight) >= 2
    }


def diagnose_network(
    net: Network, *, seed: int = 0, full: bool = False, tails: dict[str, TensorTails] | None = None
) -> list[dict[str, Any]]:
    """One ``diagnose_tensor`` entry per weight in ``net.raw_weights`` (as uploaded), in its order.

    Tensors with fewer than 2 dimensions (biases, scales) are not weight matrices and are skipped.
    ``tails``: ``network_tails(net, seed=seed, full=full)``, computed earlier (same entries).
    """
    return [
        diagnose_tensor(
            name, tensor_rows(weight), seed=seed, full=full, tails=None if tails is None else tails[name]
        )
        for name, weight in net.raw_weights.items()
        if np.ndim(weight) >= 2
    ]
