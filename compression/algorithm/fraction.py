"""Choosing P1's randomized fraction f and the keep probability p for a target density κ.

Ref: docs/method.md §1 "Choosing (f, p) for a target keep fraction κ" (derived). With m randomized
weights out of N and p = 1 − (1−κ)N/m, the expected density is exactly κ and the expected added
error is E(m) = (1−p)/p · S_m = (1−κ)N / (m − (1−κ)N) · S_m, with S_m the sum of the m smallest
base scores w²·E[ẑ_j²]. One pass over the cumulative sums finds the minimizing m.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from netshrink.compression.errors import InvalidSpecError

__all__ = [
    "choose_fraction",
    "expected_error_curve",
    "fixed_fraction",
    "group_max_m",
    "keeps_a_unit",
]


def group_max_m(n_groups: int) -> int:
    """The most groups (neurons/channels) a structured Bernoulli draw randomizes: all but the
    top-score one, which is always kept, so that no draw removes every unit a layer reads (an empty
    layer, which no export can hold). Derived; P1's rule is unchanged otherwise."""
    return max(0, n_groups - 1)


def keeps_a_unit(keep: float, n_groups: int) -> bool:
    """Whether a structured Bernoulli draw at κ = ``keep`` over ``n_groups`` units is feasible with the
    top unit kept: m ≤ G − 1 randomized units must exceed the (1−κ)G removed in expectation, i.e.
    κG > 1 (more than one unit kept on average). κ = 1 prunes nothing."""
    return keep >= 1.0 or keep * n_groups > 1.0


def expected_error_curve(
    base_scores: np.ndarray, keep: float, max_m: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All feasible m (> (1−κ)N, ≤ ``max_m`` when given) and E(m) for each; ``base_scores`` in any
    order. Ref: docs/method.md §1."""
    s = np.sort(np.asarray(base_scores, dtype=np.float64).ravel(), kind="stable")  # (N,)
    N = s.size
    d = (1.0 - keep) * N  # expected number of removed weights
    top = N if max_m is None else min(N, max_m)
    m = np.arange(math.floor(d) + 1, top + 1, dtype=np.int64)  # (M,) feasible m > d
    S = np.concatenate(([0.0], np.cumsum(s)))[m]  # (M,) S_m
    return m, d / (m - d) * S


def choose_fraction(
    base_scores: np.ndarray,
    keep: float,
    *,
    fraction: float | Literal["auto"] = "auto",
    max_m: int | None = None,
) -> tuple[float, float, int]:
    """Return (f, p, m) for target keep fraction κ; ``fraction`` fixes f instead of optimizing it.

    Auto mode minimizes E(m) (smallest m on ties). κ = 1 returns (0, 1, 0): nothing is randomized.
    ``max_m`` caps m (structured draws: ``group_max_m``); ``InvalidSpecError`` when no m ≤ it is
    feasible. Ref: docs/method.md §1 "Choosing (f, p)".
    """
    if not 0.0 < keep <= 1.0:
        raise InvalidSpecError(f"keep must be in (0, 1]; got {keep}", field="prune.keep")
    N = int(np.asarray(base_scores).size)
    if N == 0 or keep >= 1.0:
        return 0.0, 1.0, 0
    if fraction != "auto":
        return fixed_fraction(N, keep, float(fraction), max_m=max_m)
    m, E = expected_error_curve(base_scores, keep, max_m)
    if m.size == 0:  # only with a cap: κN ≤ N − max_m
        raise InvalidSpecError(
            f"prune.keep={keep:g} keeps {keep * N:.3g} of {N} units on average; a neuron/channel draw "
            f"always keeps one and needs more than one on average (keep > {1.0 / N:.3g} here)",
            field="prune.keep",
        )
    best = int(np.argmin(E))  # first minimum = smallest m on ties
    mm = int(m[best])
    return mm / N, 1.0 - (1.0 - keep) * N / mm, mm


def fixed_fraction(N: int, keep: float, f: float, *, max_m: int | None = None) -> tuple[float, float, int]:
    """(f, p, m) for a user-fixed f: m = round(fN), p = 1 − (1−κ)N/m (P1's experiments: f=0.9, p=0.3);
    m at most ``max_m`` when given (structured draws: ``group_max_m``).

    Raises ``InvalidSpecError`` when f ≤ 1 − κ: removing (1−κ)N weights in expectation from only
    fN randomized ones would need p ≤ 0.
    """
    m = round(f * N) if max_m is None else min(round(f * N), max_m)
    d = (1.0 - keep) * N
    if m <= d or m == 0:
        raise InvalidSpecError(
            f"prune.fraction={f} is infeasible for keep={keep}: need f > 1 - keep = {1.0 - keep:.4g}",
            field="prune.fraction",
        )
    return m / N, 1.0 - d / m, m
