"""Properties of the per-layer budget search's choice (compression/search/mixed.py).

For several targets, with and without compensation:
- the chosen allocation is the smallest measured candidate that met the verification threshold on
  the fit split (no cheaper measured candidate met it), and every measured candidate is judged by
  that threshold (compensated: also on the held-back quarter of the fit split, unseen by its refit);
- ``budget_met`` is exactly "the held-out measurement meets the target", and a met budget ships a
  file whose held-out error/agreement meets the target;
- the shipped draw is the verified one (its draws are the ones the search made for that candidate).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.graph.calibration import Calibration
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.verification import VERIFY_DRAWS, meets_threshold
from netshrink.compression.spec import CompressSpec

CASES = [
    ({"metric": "relative_l2", "max": 0.1}, False),
    ({"metric": "relative_l2", "max": 0.4}, False),
    ({"metric": "relative_l2", "max": 0.2}, True),
    ({"metric": "top1_agreement", "min": 0.9}, False),
    ({"metric": "top1_agreement", "min": 0.97}, True),
]


def _meets(target: dict[str, Any], value: float) -> bool:
    return value <= target["max"] if target["metric"] == "relative_l2" else value >= target["min"]


@pytest.mark.parametrize(("target", "compensate"), CASES)
def test_choice_is_the_smallest_verified_candidate(
    mlp_net: Network, target: dict[str, Any], compensate: bool
) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16)).astype(np.float32)  # (300, 16): fit and held-out splits
    cal = Calibration(X, rng.integers(0, 8, 300), sha256="test")  # labels: the held-out top-1 is measured
    spec = {"target": target, "compensate": compensate, "seed": 0}
    rep = compress(mlp_net, CompressSpec.from_dict(spec), calibration=cal).report
    b, s = rep["budget"], rep["summary"]
    v = b["verification"]
    measured = [t for t in b["trace"] if t["measured"] is not None]
    assert len(measured) == b["measured_candidates"] >= 1

    def reaches(value: float, threshold: float) -> bool:
        return value <= threshold if target["metric"] == "relative_l2" else value >= threshold

    if compensate:  # refit on 3/4 of the fit split, every 4th sample held back from the refit
        assert v["refit_samples"] + v["verification_samples"] == s["evaluation"]["samples_fit"]
        assert v["verification_samples"] == s["evaluation"]["samples_fit"] // 4
    else:
        assert v["refit_samples"] is None and v["threshold_held_back"] is None
    for t in measured:  # each measured candidate is judged by the stated thresholds
        ok = reaches(t["measured"], v["threshold"])
        if compensate:  # and, compensated, on the held-back rows its refit never saw
            ok = ok and reaches(t["measured_held_back"], v["threshold_held_back"])
        else:
            assert t["measured_held_back"] is None
        assert t["meets"] == ok
        assert 1 <= t["draws"] <= (1 if compensate else VERIFY_DRAWS)
    met = [t for t in measured if t["meets"]]
    # held-out: budget_met is the target checked on the held-out split, never on the fit split
    held = s["error"]["relative_l2"]
    if target["metric"] == "top1_agreement":
        held = s["classification"]["top1_agreement"]
    assert s["budget_met"] == b["met"] == _meets(target, held)
    if not met:
        assert b["met"] is False
        return
    smallest = min(met, key=lambda t: t["bytes"])
    chosen = {n: (k, None) for n, k in b["chosen"]["keep"].items()}
    rows = {row["name"]: row for row in b["layers"]}
    assert smallest["setting"] == "; ".join(
        f"{n}: "
        + ("fp32" if r["bits"] is None else f"{r['bits']}b")
        + ("" if r["keep"] >= 1 else f" keep {r['keep']:g}")
        for n, r in rows.items()
    )
    assert all(rows[n]["keep"] == k for n, (k, _) in chosen.items())
    assert not [t for t in met if t["bytes"] < smallest["bytes"]]  # no cheaper measured candidate met
    # the shipped draw is the verified one: its fit errors are that candidate's draws
    draws = s["draws"]
    assert draws["R"] == smallest["draws"]
    if target["metric"] == "relative_l2":
        assert math.isclose(smallest["measured"], draws["fit_relative_l2"]["min"], rel_tol=1e-6) or (
            smallest["draws"] > 1
        )


def test_top1_threshold_is_one_standard_error_above_the_target() -> None:
    X = torch.zeros(400, 3)
    assert meets_threshold("top1_agreement", 0.99, X) == pytest.approx(0.99 + math.sqrt(0.99 * 0.01 / 400))
    assert meets_threshold("relative_l2", 0.1, X) == 0.1
    assert meets_threshold("top1_agreement", 1.0, X) == 1.0
