"""The budget search's walk along a path (search/verification.py ``last_meeting``): the boundary it
finds and how many candidates it measures for it."""

from __future__ import annotations

import math

import pytest

from netshrink.compression.search.verification import last_meeting


def _walk(n: int, good: int, next_first: bool, cap: int = 16) -> tuple[int, list[int]]:
    """``last_meeting`` on a path of ``n`` points whose first ``good + 1`` meet (monotone)."""
    verdict: dict[int, bool] = {}
    calls: list[int] = []

    def check(i: int) -> bool:
        assert i not in verdict, "a point is measured once"
        calls.append(i)
        verdict[i] = i <= good
        return verdict[i]

    lo = last_meeting(list(range(n)), check, verdict.get, lambda: len(calls) < cap, next_first=next_first)
    return lo, calls


@pytest.mark.parametrize("n", [2, 3, 5, 11, 14, 28])
@pytest.mark.parametrize("next_first", [False, True])
def test_the_boundary_is_the_last_meeting_point_when_the_error_grows_along_the_path(
    n: int, next_first: bool
) -> None:
    for good in range(n - 1):  # the far end is assumed to fail (measured only next to the boundary)
        lo, calls = _walk(n, good, next_first)
        assert lo == good
        assert len(calls) <= math.ceil(math.log2(n)) + 1 + int(next_first)  # one more: the first move
        assert 0 not in calls  # the start is the last good point: never measured again


@pytest.mark.parametrize("n", [5, 11, 14, 28])
def test_a_later_round_whose_first_move_fails_measures_one_candidate(n: int) -> None:
    lo, calls = _walk(n, 0, next_first=True)
    assert (lo, calls) == (0, [1])
    lo, calls = _walk(n, 0, next_first=False)  # bisection alone: log2(n) measurements
    assert lo == 0 and len(calls) >= 2 and calls[-1] == 1


def test_the_measurement_cap_stops_the_walk() -> None:
    lo, calls = _walk(28, 20, next_first=True, cap=2)
    assert len(calls) == 2 and lo in calls
