"""What the report says about one draw (docs/method.md §3 "What `bound_holds` means", "Probability").

Hand computations on numbers chosen so that every branch differs: a draw above the mean bound B but
below B/δ holds; a draw above B/δ does not; tier W is judged by B itself.
"""

from __future__ import annotations

import pytest

from netshrink.compression.report.report import bound_verdict, end_to_end_bounds


def test_markov_bound_is_b_over_delta() -> None:
    out = end_to_end_bounds({"E": 2.0, "T": 4.0, "P": None, "W": 50.0}, mse=1.0, energy=8.0, delta=0.1)
    assert out["E"]["probability_bound"] == pytest.approx(20.0)  # B/δ = 2/0.1, not B·δ = 0.2
    assert out["T"]["probability_bound"] == pytest.approx(40.0)
    assert out["W"]["probability_bound"] is None  # W holds on every draw: no Markov step
    assert out["P"] == {
        "value": None,
        "relative": None,
        "probability_bound": None,
        "holds": None,
        "below_mean_bound": None,
        "measured_over_bound": None,
    }
    assert out["E"]["relative"] == pytest.approx(0.5)  # √(2/8)


@pytest.mark.parametrize(
    ("mse", "holds", "below"),
    [(1.5, True, True), (3.0, True, False), (19.9, True, False), (20.5, False, False)],
)
def test_a_draw_is_judged_by_b_over_delta_and_the_raw_comparison_is_kept(
    mse: float, holds: bool, below: bool
) -> None:
    out = end_to_end_bounds({"E": 2.0, "T": None, "P": None, "W": 50.0}, mse=mse, energy=8.0, delta=0.1)
    assert out["E"]["holds"] is holds
    assert out["E"]["below_mean_bound"] is below
    assert out["E"]["measured_over_bound"] == pytest.approx(mse / 2.0)
    verdict = bound_verdict(out, 0.1)
    assert verdict["tier"] == "E" and verdict["holds"] is holds and verdict["below_mean_bound"] is below
    assert verdict["measured_over_mean_bound"] == pytest.approx(mse / 2.0)
    assert "1 - delta = 0.9" in verdict["meaning"]


def test_tier_w_is_judged_by_b_itself() -> None:
    out = end_to_end_bounds({"E": None, "T": None, "P": None, "W": 5.0}, mse=6.0, energy=8.0, delta=0.1)
    assert out["W"]["holds"] is False  # 6 > 5, although 6 < 5/δ
    out = end_to_end_bounds({"E": None, "T": None, "P": None, "W": 5.0}, mse=5.0, energy=8.0, delta=0.1)
    assert out["W"]["holds"] is True
