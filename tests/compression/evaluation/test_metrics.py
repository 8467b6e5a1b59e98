"""The error measures of docs/method.md §2 against hand computations on tiny cases (plain-Python
loops and numbers worked out here, never the implementation's own output)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netshrink.compression.evaluation.metrics import (
    classification,
    loss_bound,
    mean_sq_error,
    mean_sq_norm,
    mse_loss,
    output_error,
    top1,
)

PHI = [[3.0, 4.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0]]  # (S=4, K=2): ‖Φ(x)‖² = 25, 4, 2, 4
PHI_HAT = [[3.0, 3.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]  # ‖Φ−Φ̂‖² = 1, 4, 0, 4


def test_output_error_by_hand() -> None:
    energy = (25 + 4 + 2 + 4) / 4  # 8.75
    mse = (1 + 4 + 0 + 4) / 4  # 2.25
    r = sorted(math.sqrt(d) / math.sqrt(energy) for d in (1, 4, 0, 4))
    pos = 0.95 * (len(r) - 1)  # linear interpolation between order statistics: 2.85
    p95 = r[2] + (pos - 2) * (r[3] - r[2])
    e = output_error(np.array(PHI), np.array(PHI_HAT))
    assert e.reference_energy == pytest.approx(energy)
    assert e.mse == pytest.approx(mse)
    assert e.relative_l2 == pytest.approx(math.sqrt(mse / energy))
    assert e.max == pytest.approx(2 / math.sqrt(energy))
    assert e.p95 == pytest.approx(p95)
    assert e.to_dict() == {
        "relative_l2": e.relative_l2,
        "mse": e.mse,
        "p95": e.p95,
        "max": e.max,
        "reference_energy": e.reference_energy,
    }


def test_output_error_p95_is_not_the_max() -> None:
    """Twenty rows, one outlier: p95 interpolates between the 19th and the 20th order statistic."""
    phi = np.ones((20, 1))
    phi_hat = np.ones((20, 1))
    phi_hat[:, 0] -= np.arange(20) / 10.0  # ‖Φ−Φ̂‖ = 0, 0.1, …, 1.9; E‖Φ‖² = 1
    e = output_error(phi, phi_hat)
    assert e.max == pytest.approx(1.9)
    assert e.p95 == pytest.approx(1.8 + 0.05 * 0.1)  # position 0.95·19 = 18.05


def test_output_error_flattens_each_sample_and_takes_tensors() -> None:
    phi = torch.tensor(PHI).reshape(2, 2, 2)  # two samples of four entries: ‖Φ‖² = 29, 6
    phi_hat = torch.tensor(PHI_HAT).reshape(2, 2, 2)  # ‖Φ−Φ̂‖² = 5, 4
    e = output_error(phi, phi_hat)
    assert e.reference_energy == pytest.approx(17.5)
    assert e.mse == pytest.approx(4.5)
    assert e.max == pytest.approx(math.sqrt(5 / 17.5))


def test_output_error_of_a_zero_reference_is_the_absolute_error() -> None:
    e = output_error(np.zeros((2, 2)), np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert e.reference_energy == 0.0
    assert e.mse == pytest.approx(12.5)
    assert e.relative_l2 == pytest.approx(math.sqrt(12.5))
    assert e.max == pytest.approx(5.0)


def test_mean_sq_error_and_norm_by_hand() -> None:
    z = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 1.0]]])  # (S=2, 2, 2)
    z_hat = torch.tensor([[[1.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, -2.0]]])
    assert mean_sq_error(z, z_hat) == pytest.approx((4 + 9) / 2)
    assert mean_sq_norm(z) == pytest.approx((1 + 4 + 9 + 16 + 1) / 2)
    rows = torch.tensor([[1.0, 2.0], [0.0, 3.0], [1.0, 1.0]])  # (S=3, D=2): the mean runs over 3 rows
    assert mean_sq_norm(rows) == pytest.approx((5 + 9 + 2) / 3)
    assert mean_sq_error(rows, torch.zeros(3, 2)) == pytest.approx((5 + 9 + 2) / 3)


def test_top1_argmax_and_the_sign_of_one_logit() -> None:
    assert top1(np.array([[0.1, 0.9, 0.3], [2.0, -1.0, 1.9]])).tolist() == [1, 0]
    assert top1(np.array([[0.5], [-0.2], [0.0]])).tolist() == [1, 0, 0]  # 0 is not positive
    assert top1(np.array([[0.5], [-0.2]])).dtype == np.int64  # class ids, as argmax gives them


def test_classification_by_hand() -> None:
    eye = np.eye(2)
    phi = eye[[0, 1, 0, 1, 1]]  # classes 0 1 0 1 1
    phi_hat = eye[[0, 0, 1, 1, 0]]  # classes 0 0 1 1 0: agreement 2/5
    labels = np.array([0, 0, 1, 1, 1])  # before: 3/5 right, after: 4/5 right
    want = {"top1_agreement": 0.4, "accuracy_before": 0.6, "accuracy_after": 0.8}
    assert classification(phi, phi_hat, labels) == pytest.approx(want)
    assert classification(phi, phi_hat, labels.reshape(5, 1)) == pytest.approx(want)  # a column
    assert classification(phi, phi_hat, None) == {
        "top1_agreement": 0.4,
        "accuracy_before": None,
        "accuracy_after": None,
    }
    floats = classification(phi, phi_hat, labels.astype(np.float32))  # integral floats are labels
    assert floats["accuracy_before"] == pytest.approx(0.6) and floats["accuracy_after"] == pytest.approx(0.8)
    targets = classification(phi, phi_hat, np.array([0.5, 0.0, 1.0, 1.0, 1.0]))  # regression targets
    assert targets["accuracy_before"] is None and targets["accuracy_after"] is None


def test_mse_loss_one_hot_and_targets_by_hand() -> None:
    phi = np.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.6]])
    # one-hot of [0, 2]: (0.01 + 0.01 + 0) and (0.04 + 0.04 + 0.16)
    assert mse_loss(phi, np.array([0, 2])) == pytest.approx((0.02 + 0.24) / 2)
    binary = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])  # two logits, labels 0 1 1: one-hot too
    assert mse_loss(binary, np.array([0, 1, 1])) == pytest.approx((0.08 + 0.18 + 0.5) / 3)
    reg = np.array([[1.0], [3.0]])
    assert mse_loss(reg, np.array([0.5, 1.0])) == pytest.approx((0.25 + 4.0) / 2)
    two = np.array([[1.0, 2.0], [0.0, 0.0]])
    assert mse_loss(two, np.array([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx((4.0 + 2.0) / 2)


def test_loss_bound_clamps_each_factor_of_the_root_at_zero() -> None:
    """(√L + √B)² with negative rounding noise in either argument treated as 0 inside the root."""
    assert loss_bound(-1.0, 4.0) == pytest.approx(-1.0 + 0.0 + 4.0)
    assert loss_bound(4.0, -1.0) == pytest.approx(4.0 + 0.0 - 1.0)
    assert loss_bound(0.25, 1.0) == pytest.approx(0.25 + 2 * 0.5 + 1.0)


def test_output_error_of_small_outputs_and_of_tensors_that_require_grad() -> None:
    """Φ = [[0.3, 0.4]], Φ̂ = [[0.3, 0.1]]: E‖Φ‖² = 0.25 < 1, so r(x) = 0.3/√0.25 = 0.6 (not 0.3), and
    the same from tensors still attached to an autograd graph."""
    phi, phi_hat = np.array([[0.3, 0.4]]), np.array([[0.3, 0.1]])
    e = output_error(phi, phi_hat)
    assert (e.relative_l2, e.max, e.p95, e.mse) == pytest.approx((0.6, 0.6, 0.6, 0.09))
    t = torch.tensor(phi, requires_grad=True)
    assert output_error(t * 1.0, torch.tensor(phi_hat)).max == pytest.approx(0.6)


def test_float32_outputs_are_reduced_in_float64() -> None:
    """§2's reductions run in float64 also for float32 logits: E‖Φ − Φ̂‖² and E‖Φ‖² against math.fsum
    of the exact float64 squares (a float32 reduction would be off by ~1e-7 here); a float32 target
    vector of a regressor likewise."""
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((50, 7)).astype(np.float32)
    phi_hat = phi + rng.standard_normal((50, 7)).astype(np.float32) / 3
    exact = [
        [float(a) - float(b) for a, b in zip(r, s, strict=True)] for r, s in zip(phi, phi_hat, strict=True)
    ]
    mse = math.fsum(d * d for row in exact for d in row) / 50
    energy = math.fsum(float(a) ** 2 for a in phi.ravel()) / 50
    e = output_error(phi, torch.from_numpy(phi_hat))
    assert e.mse == pytest.approx(mse, rel=1e-13) and e.reference_energy == pytest.approx(energy, rel=1e-13)
    assert mse_loss(phi[:, :1], phi_hat[:, 0]) == pytest.approx(
        math.fsum(row[0] ** 2 for row in exact) / 50, rel=1e-13
    )


def test_the_search_judges_give_output_error_and_classification_numbers() -> None:
    """``relative_l2`` and ``top1_agreement`` (the budget search judges each candidate by them, the
    reference's top-1 made once: issue 11, its cost) are the floats ``output_error`` and
    ``classification`` give, also for a zero reference and for one logit."""
    from netshrink.compression.evaluation.metrics import (
        classification,
        output_error,
        relative_l2,
        top1,
        top1_agreement,
    )

    rng = np.random.default_rng(4)
    for K in (10, 1):
        phi = torch.from_numpy(rng.standard_normal((57, K)).astype(np.float32))
        hat = phi + torch.from_numpy(0.3 * rng.standard_normal((57, K)).astype(np.float32))
        assert relative_l2(phi, hat) == output_error(phi, hat).relative_l2
        assert relative_l2(torch.zeros_like(phi), hat) == output_error(torch.zeros_like(phi), hat).relative_l2
        assert top1_agreement(top1(phi), hat) == classification(phi, hat, None)["top1_agreement"]
