"""(f, p) choice (docs/method.md §1 "Choosing (f, p)") against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from netshrink.compression.algorithm.fraction import (
    choose_fraction,
    expected_error_curve,
    fixed_fraction,
    group_max_m,
    keeps_a_unit,
)
from netshrink.compression.errors import InvalidSpecError


def brute_force(scores: np.ndarray, keep: float) -> int:
    """Naive reference: try every integer m in (N(1−κ), N], recompute S_m from scratch."""
    N = scores.size
    best_m, best_E = -1, np.inf
    for m in range(1, N + 1):
        if m <= (1 - keep) * N:
            continue
        p = 1 - (1 - keep) * N / m
        E = (1 - p) / p * float(np.sort(scores)[:m].sum())
        if E < best_E:  # strict: the smallest m wins ties
            best_m, best_E = m, E
    return best_m


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.77, 0.95])
@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(keep: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.standard_t(2.5, size=60) ** 2 * rng.exponential(size=60)  # heavy-tailed w²·E[z²]
    f, p, m = choose_fraction(scores, keep)
    assert m == brute_force(scores, keep)
    assert f == m / 60 and 0 < p <= 1
    assert (1 - f) + f * p == pytest.approx(keep, abs=1e-12)  # expected density is exactly κ


def test_gaussian_weights_give_interior_optimum() -> None:
    w = np.random.default_rng(0).standard_normal(200_000)
    f, p, _ = choose_fraction(w**2, 0.5)
    ms, E = expected_error_curve(w**2, 0.5)
    assert f == pytest.approx(0.70, abs=0.01)
    assert p == pytest.approx(0.29, abs=0.01)
    assert E.min() / E[-1] == pytest.approx(0.54, abs=0.01)  # vs f = 1 (m = N)
    assert ms[-1] == w.size


def test_ties_pick_the_smallest_m() -> None:
    f, p, m = choose_fraction(np.zeros(10), 0.5)  # E(m) = 0 for every feasible m
    assert m == 6 and f == 0.6 and p == pytest.approx(1 - 5 / 6)


def test_fixed_fraction_mode() -> None:
    f, p, m = choose_fraction(np.ones(1000), 0.37, fraction=0.9)
    assert (f, m) == (0.9, 900)
    assert p == pytest.approx(1 - (1 - 0.37) / 0.9)
    with pytest.raises(InvalidSpecError) as exc:
        choose_fraction(np.ones(1000), 0.3, fraction=0.6)  # needs f > 0.7
    assert exc.value.field == "prune.fraction"


def test_keep_one_randomizes_nothing() -> None:
    assert choose_fraction(np.ones(5), 1.0) == (0.0, 1.0, 0)
    with pytest.raises(InvalidSpecError):
        choose_fraction(np.ones(5), 0.0)


def test_a_cap_on_m_keeps_the_top_unit_and_refuses_what_it_cannot_draw() -> None:
    """Structured draws randomize at most G − 1 units (``group_max_m``): E(m) is minimized over the
    capped range, a fixed f is capped too, and κG ≤ 1 (one unit or fewer kept on average) has no
    feasible m left: a spec error naming prune.keep."""
    flat = np.ones(4)  # equal scores: uncapped, the minimum is m = G
    assert choose_fraction(flat, 0.5)[2] == 4
    f, p, m = choose_fraction(flat, 0.5, max_m=group_max_m(4))
    assert m == 3 and p == pytest.approx(1 - 2 / 3) and f == pytest.approx(0.75)
    assert fixed_fraction(4, 0.5, 1.0, max_m=3) == pytest.approx((0.75, 1 - 2 / 3, 3))
    assert keeps_a_unit(0.3, 4) and not keeps_a_unit(0.25, 4) and keeps_a_unit(1.0, 1)
    with pytest.raises(InvalidSpecError, match="keeps 1 of 4 units") as info:
        choose_fraction(flat, 0.25, max_m=group_max_m(4))
    assert info.value.field == "prune.keep"
