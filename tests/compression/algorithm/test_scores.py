"""Layer statistics against naive loops (docs/method.md §1 scores, "Unstructured conv weights")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.scores import column_groups, layer_stats
from netshrink.compression.graph.network import ConvGeometry, Layer

torch.set_num_threads(1)


def _dense(W: np.ndarray, group: int = 1) -> Layer:
    return Layer("d", 1, "dense", W.astype(np.float32), None, "w", None, structured=True, input_group=group)


def _conv(K: np.ndarray, geom: ConvGeometry) -> Layer:
    return Layer("c", 1, "conv", K.astype(np.float32), None, "w", None, conv=geom, structured=True)


@pytest.mark.parametrize("g", [1, 2, 3])
def test_dense_stats_match_naive(g: int) -> None:
    rng = np.random.default_rng(0)
    W, X = rng.standard_normal((5, 6)), rng.standard_normal((40, 6))
    st = layer_stats(_dense(W, group=g), torch.from_numpy(X), groups=True)
    Wf = W.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(st.col_energy, (X**2).mean(0), rtol=1e-12)
    assert st.z2 == pytest.approx((X**2).sum(1).mean(), rel=1e-12)
    assert (st.n_samples, st.positions) == (40, 1)
    blocks = [slice(g * b, g * b + g) for b in range(6 // g)]
    naive = [np.mean([np.sum((Wf[:, blk] @ x[blk]) ** 2) for x in X]) for blk in blocks]
    assert st.group_energy is not None
    np.testing.assert_allclose(st.group_energy, naive, rtol=1e-12)


def test_no_groups_when_not_asked_and_groups_must_divide() -> None:
    st = layer_stats(_dense(np.ones((2, 3))), torch.ones(4, 3), groups=False)
    assert st.group_energy is None
    with pytest.raises(ValueError, match="does not divide"):
        layer_stats(_dense(np.ones((2, 3)), group=2), torch.ones(4, 3), groups=True)


def test_conv_stats_match_naive_patches() -> None:
    rng = np.random.default_rng(1)
    geom = ConvGeometry((3, 2), strides=(2, 1), pads=(1, 0, 2, 1))
    K, Z = rng.standard_normal((4, 2, 3, 2)), rng.standard_normal((6, 2, 5, 4))
    layer = _conv(K, geom)
    st = layer_stats(layer, torch.from_numpy(Z), groups=True)
    Zp = np.pad(Z, ((0, 0), (0, 0), (1, 2), (0, 1)))  # (top, bottom), (left, right)
    Ho, Wo = (Zp.shape[2] - 3) // 2 + 1, Zp.shape[3] - 2 + 1
    patches = np.stack(
        [Zp[:, :, 2 * i : 2 * i + 3, j : j + 2].reshape(6, -1) for i in range(Ho) for j in range(Wo)], axis=2
    )  # (S, C·kh·kw, P) in (c, u, v) order
    assert st.positions == Ho * Wo
    np.testing.assert_allclose(st.col_energy, (patches**2).mean(axis=(0, 2)), rtol=1e-12)
    assert st.z2 == pytest.approx((Z**2).sum(axis=(1, 2, 3)).mean(), rel=1e-12)
    Kf = K.astype(np.float32).astype(np.float64)
    naive = []
    for c in range(2):
        blk = Kf[:, c].reshape(4, -1)  # (out, kh·kw)
        y = np.einsum("ok,skp->sop", blk, patches[:, c * 6 : (c + 1) * 6])  # K[:, c] ∗ ẑ_c
        naive.append((y**2).sum(axis=(1, 2)).mean())
    assert st.group_energy is not None
    np.testing.assert_allclose(st.group_energy, naive, rtol=1e-12)
    assert column_groups(layer).tolist() == [0] * 6 + [1] * 6


@pytest.mark.parametrize("kind", ["dense1", "dense3", "conv"])
def test_group_energy_added_later_is_the_same_bytes(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``with_group_energy`` (the budget search adds a structured layer's group energies only when a
    candidate prunes it, issue 11) gives ``layer_stats(groups=True)``'s numbers bit for bit, also
    when the samples are summed in several chunks."""
    from netshrink.compression.algorithm import scores
    from netshrink.compression.algorithm.scores import with_group_energy

    rng = np.random.default_rng(5)
    if kind == "conv":
        layer = _conv(rng.standard_normal((4, 3, 3, 3)), ConvGeometry((3, 3), pads=(1, 1, 1, 1)))
        Z = torch.from_numpy(rng.standard_normal((9, 3, 5, 5)))
        monkeypatch.setattr(scores, "_BUDGET", 3 * 27 * 25)  # chunks of 3 samples
    else:
        layer = _dense(rng.standard_normal((5, 6)), group=1 if kind == "dense1" else 3)
        Z = torch.from_numpy(rng.standard_normal((40, 6)).astype(np.float32))
        monkeypatch.setattr(scores, "_BUDGET", 7 * 6 * 3)  # chunks of 7 samples
    want = layer_stats(layer, Z, groups=True)
    plain = layer_stats(layer, Z, groups=False)
    got = with_group_energy(layer, Z, plain)
    assert plain.group_energy is None and want.group_energy is not None and got.group_energy is not None
    assert got.group_energy.tobytes() == want.group_energy.tobytes()
    assert got.col_energy.tobytes() == want.col_energy.tobytes() and got.z2 == want.z2
    assert with_group_energy(layer, Z, want) is want


def test_weight_col_sq_is_made_once_per_weight_array() -> None:
    """Σ_i W_ij² depends on the weight alone: the budget search's structured draws of one layer share
    it (issue 10), the same float64 bytes as computing it afresh; a new weight array gets its own."""
    from netshrink.compression.algorithm import scores

    rng = np.random.default_rng(3)
    layer = _dense(rng.standard_normal((7, 5)))
    first = scores.weight_col_sq(layer, torch.device("cpu"))
    assert scores.weight_col_sq(layer, torch.device("cpu")) is first
    assert first.numpy().tobytes() == scores._col_sq(layer.matrix, torch.device("cpu")).numpy().tobytes()
    np.testing.assert_allclose(first.numpy(), (layer.matrix.astype(np.float64) ** 2).sum(0), rtol=1e-15)
    layer.weight = rng.standard_normal((7, 5)).astype(np.float32)
    fresh = scores.weight_col_sq(layer, torch.device("cpu"))
    assert fresh is not first
    np.testing.assert_allclose(fresh.numpy(), (layer.matrix.astype(np.float64) ** 2).sum(0), rtol=1e-15)
