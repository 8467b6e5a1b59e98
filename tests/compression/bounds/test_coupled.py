"""The coupled rule (``bounds/coupled.py``, docs/bounds-dag.md "Coupled groups") by hand on a tiny
dense layer: σ̄ against numpy's SVD of W·diag(s̄), A_dense, A_q and their tier-T forms written out, and
the step L²((σ̄ √B + √A_dense)² + A_q). The Monte-Carlo check of the whole rule on residual CNNs is
``test_dag.py::test_mean_error_over_draws_below_the_dag_bound`` (slow)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.layer_compress import LayerDraw, compress_layer
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.bounds.certificate import SigmaBound
from netshrink.compression.bounds.coupled import CoupledTerms, coupled_terms, propagate_coupled
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec

W = np.array(
    [[0.5, -1.0, 0.25, 2.0], [1.5, 0.0, -0.75, 0.5], [-0.25, 1.0, 1.25, -0.5]], dtype=np.float32
)  # (n_out=3, n_in=4)
X_DENSE = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, -1.0, 3.0, 1.0]], dtype=torch.float64)  # (S=2, 4)
X_HAT = torch.tensor([[0.5, 1.0, 1.0, 0.0], [2.0, -1.0, 1.0, 1.0]], dtype=torch.float64)  # (S=2, 4)


def _dense_draw() -> tuple[Layer, LayerDraw]:
    """The dense layer W and a seeded keep-0.5 draw of it on X_DENSE, whose group fields each test
    then replaces by hand."""
    layer = Layer("fc", 1, "dense", W, None, "w", None)
    stats = layer_stats(layer, X_DENSE, groups=False)
    prune = PruneSpec(keep=0.5, fraction=0.75)
    draw = compress_layer(layer, stats, prune=prune, quantize=None, keep=0.5, generator=generator(0, 1, 0))
    return layer, draw


def test_propagate_coupled_by_hand() -> None:
    cert = SigmaBound(1.5, 1.5, "svd", "exact")
    terms = CoupledTerms(1.5, {"E": 0.3, "T": None}, {"E": 0.05, "T": 0.06}, cert)
    want = 4.0 * ((1.5 * math.sqrt(0.5) + math.sqrt(0.3)) ** 2 + 0.05)
    assert propagate_coupled(2.0, terms, "E", 0.5) == pytest.approx(want)
    assert propagate_coupled(2.0, terms, "E", 0.0) == pytest.approx(4.0 * (0.3 + 0.05))
    assert propagate_coupled(2.0, terms, "T", 0.5) is None  # A_dense not covered
    assert propagate_coupled(2.0, terms, "E", None) is None  # upstream not covered
    no_fresh = CoupledTerms(1.5, {"E": 0.3}, {"E": None}, cert)
    assert propagate_coupled(2.0, no_fresh, "E", 0.5) is None


def test_coupled_terms_by_hand() -> None:
    """Columns 0 and 2 drawn as groups with τ² = 2 (s̄ = 1/p = 3), the others kept; no joint space, no
    quantization. σ̄ = ‖W diag(3, 1, 3, 1)‖_op; A_dense = Σ_u τ²_u ‖W[:, u]‖² E_x u_u² on the dense
    input; A_q = Σ_ij Var_ij E_x ẑ_j² on the compressed one; T_dense = f τ² max_j‖W[:, j]‖² E_x‖u‖²."""
    layer, base = _dense_draw()
    var = np.array([[0.1, 0.0, 0.2, 0.0], [0.0, 0.3, 0.0, 0.0], [0.4, 0.0, 0.0, 0.5]])
    u_tau2 = np.array([2.0, 0.0, 2.0, 0.0])
    draw = dataclasses.replace(
        base, group_tau2=u_tau2, group_joint=None, var=var, prune_randomized=True, quant_randomized=False
    )
    stats_hat = layer_stats(layer, X_HAT, groups=False)
    ct = coupled_terms(layer, draw, stats_hat, X_DENSE, None)

    Wd = W.astype(np.float64)
    sigma_bar = float(np.linalg.norm(Wd * np.array([3.0, 1.0, 3.0, 1.0]), 2))
    assert ct.sigma_bar == pytest.approx(sigma_bar, rel=1e-12) and ct.cert.value == ct.sigma_bar
    col2 = (Wd**2).sum(axis=0)  # ‖W[:, j]‖²
    u2 = (X_DENSE.numpy() ** 2).mean(axis=0)  # E_x u_j²
    assert ct.A["E"] == pytest.approx(float((u_tau2 * col2 * u2).sum()), rel=1e-12)
    zhat2 = (X_HAT.numpy() ** 2).mean(axis=0)  # E_x ẑ_j²
    assert ct.fresh["E"] == pytest.approx(float((var * zhat2[None, :]).sum()), rel=1e-12)
    assert (draw.f, draw.tau2, draw.from_greedy_sort) == (pytest.approx(0.75), pytest.approx(2.0), True)
    Z2 = float((X_DENSE.numpy() ** 2).sum(axis=1).mean())  # E_x‖u‖² = 8.625
    assert ct.A["T"] == pytest.approx(0.75 * 2.0 * col2.max() * Z2, rel=1e-12)
    assert ct.fresh["T"] == 0.0

    # a quantization stage drawn after the groups (3 bits, per-row grid maxima M = 2, half the
    # weights): tier T's A_q is f_q ΣM²/(4k²) E_x‖ẑ‖² on the compressed input; A_dense keeps pruning only
    quant = dataclasses.replace(draw, quant_randomized=True, M=np.full(3, 2.0), k=3, quant_fraction=0.5)
    cq = coupled_terms(layer, quant, stats_hat, X_DENSE, None)
    Z2_hat = float((X_HAT.numpy() ** 2).sum(axis=1).mean())
    assert cq.fresh["T"] == pytest.approx(0.5 * 12.0 / (4 * 9) * Z2_hat, rel=1e-12)
    assert cq.A["T"] == pytest.approx(ct.A["T"], rel=1e-12)
    assert cq.fresh["E"] == pytest.approx(ct.fresh["E"], rel=1e-12)


def test_coupled_terms_of_a_fixed_count_space_by_hand() -> None:
    """Columns 0 and 2 form one fixed-count space (m = 2: Cov = −τ²/(m−1) = −τ²), τ² = float32(2/3):
    A_dense = τ²(e_0 + e_2) + τ²(e_0 + e_2 − E_x‖W_0 u_0 + W_2 u_2‖²) with e_u = ‖W[:, u]‖² E_x u_u², all
    in float64 from the float32 τ² (σ̄ too: s̄ = 1 + τ², not rounded to float32)."""
    layer, base = _dense_draw()
    t32 = np.float32(2 / 3)
    tau2 = float(t32)  # the float32 value, exactly, in float64
    u_tau2 = np.array([t32, 0.0, t32, 0.0], dtype=np.float32)
    joint = [(np.array([0, 2]), tau2)]
    draw = dataclasses.replace(
        base, group_tau2=u_tau2, group_joint=joint, prune_randomized=True, quant_randomized=False
    )
    ct = coupled_terms(layer, draw, layer_stats(layer, X_HAT, groups=False), X_DENSE, None)

    Wd, U = W.astype(np.float64), X_DENSE.numpy()
    e = (Wd**2).sum(axis=0) * (U**2).mean(axis=0)  # e_u
    pair = float((((U[:, [0, 2]] @ Wd[:, [0, 2]].T) ** 2).sum(axis=1)).mean())  # E_x‖W_0 u_0 + W_2 u_2‖²
    want = tau2 * (e[0] + e[2]) + tau2 * (e[0] + e[2] - pair)
    assert ct.A["E"] == pytest.approx(max(want, 0.0), rel=1e-12)
    s_bar = np.array([1.0 + tau2, 1.0, 1.0 + tau2, 1.0])
    assert ct.sigma_bar == pytest.approx(float(np.linalg.norm(Wd * s_bar, 2)), rel=1e-12)


def test_coupled_terms_of_a_conv_reader() -> None:
    """A 2×2 conv reading two channels, channel 0 drawn with τ² = 1 (s̄ = 2): σ̄ certifies the norm of
    the conv map of K·diag(s̄) on the 3×3 input (its Toeplitz matrix's σ by numpy's SVD) from above,
    and the certificate's Ritz estimate is that σ."""
    from netshrink.compression.graph.network import ConvGeometry
    from tests.compression.bounds.test_opnorm import toeplitz

    K = np.arange(-11.5, 12.5, 1.0, dtype=np.float32).reshape(3, 2, 2, 2) / 4  # (c_out, C, kh, kw)
    Z = torch.tensor(np.linspace(-1.0, 1.0, 36).reshape(2, 2, 3, 3))  # (S, C, H, W)
    geom = ConvGeometry((2, 2))
    conv = Layer("c", 1, "conv", K, None, "w", None, conv=geom)
    stats = layer_stats(conv, Z, groups=False)
    base = compress_layer(
        conv, stats, prune=PruneSpec(keep=0.5, fraction=0.75), quantize=None, keep=0.5,
        generator=generator(0, 1, 0),
    )  # fmt: skip
    draw = dataclasses.replace(
        base, group_tau2=np.array([1.0, 0.0]), group_joint=None, quant_randomized=False
    )
    ct = coupled_terms(conv, draw, stats, Z, (3, 3))
    scaled = K.astype(np.float64) * np.array([2.0, 1.0])[None, :, None, None]
    exact = float(np.linalg.norm(toeplitz(scaled, geom, (3, 3)), 2))
    assert ct.sigma_bar >= exact * (1 - 1e-9) and ct.cert.value == ct.sigma_bar
    assert ct.cert.estimate == pytest.approx(exact, rel=1e-6)  # the Ritz value of that map: converged
