"""The refit's kept-column moments (``kept_moments.prepare_kept``): H_KK, B_K and λ as ``prepare``
gives them, and ``compensate_layer`` without a cached ``Prepared`` uses them (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm import compensate, kept_moments
from netshrink.compression.spec import QuantizeSpec
from tests import factories as F

torch.set_num_threads(1)


def _case(n_out: int = 9, n_in: int = 300, S: int = 200) -> tuple:
    layer, Z = F.correlated_dense_layer(n_out=n_out, n_in=n_in, S=S)
    Z = Z.to(torch.float32)
    return layer, Z, Z * 1.1 + 0.05


def _order(n_in: int, removed: np.ndarray) -> torch.Tensor:
    cols = np.setdiff1d(np.arange(n_in), removed)
    return torch.as_tensor(np.concatenate([cols, [n_in]]).astype(np.int64))  # kept, then the bias


def test_gram_diagonal_is_the_diagonal_of_the_product() -> None:
    """Blocks of 128 columns, the last one overlapping: every entry is Σ_s a_sj² (float32 sums)."""
    A = torch.randn(150, 300, generator=torch.Generator().manual_seed(3))  # (N, n)
    got = kept_moments.gram_diagonal(A)  # (n,)
    want = (A.double() ** 2).sum(0)  # (n,) float64 reference
    assert got.shape == (300,)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=0)
    assert torch.equal(kept_moments.gram_diagonal(A[:, :50]), torch.diagonal(A[:, :50].T @ A[:, :50]))


def test_kept_moments_are_the_kept_rows_and_columns_of_prepare() -> None:
    """H_KK, B_K in ``order`` and λ over all n columns (not only the kept ones), within float32."""
    layer, Z, Zd = _case()
    removed = np.arange(0, 300, 3)  # a third of the units dropped: their diagonal still counts in λ
    order = _order(300, removed)
    full = compensate.prepare(layer, Z, Zd)
    got = kept_moments.prepare_kept(layer, Z, Zd, order)
    H = full.H.index_select(0, order).index_select(1, order)  # (m, m)
    B = full.B.index_select(1, order)  # (out, m)
    assert got.H.shape == (201, 201) and got.B.shape == (9, 201)
    assert torch.allclose(got.H, H, rtol=1e-5, atol=1e-5) and torch.allclose(got.B, B, rtol=1e-5, atol=1e-5)
    assert got.lam == pytest.approx(full.lam, rel=1e-6)
    kept_only = compensate.DAMP * float(torch.diagonal(H).double().mean())
    assert abs(got.lam - kept_only) > 1e-3 * full.lam  # the dropped columns' diagonal is in λ
    y = compensate.dense_output(layer, Zd)
    given = kept_moments.prepare_kept(layer, Z, Zd, order, y=y)
    assert torch.equal(given.H, got.H) and torch.equal(given.B, got.B) and given.lam == got.lam


@pytest.mark.parametrize("quantize", [None, QuantizeSpec(bits=4)])
def test_a_refit_without_a_cache_entry_matches_the_full_moments(quantize: QuantizeSpec | None) -> None:
    """``compensate_layer`` with dropped units and no ``prepared`` reads the kept moments: the refit
    is the one from the full H and B (passed as ``prepared``), to float32 rounding."""
    layer, Z, Zd = _case()
    removed = np.arange(1, 300, 4)
    full = compensate.prepare(layer, Z, Zd)
    a = compensate.compensate_layer(layer, Z, Zd, kept=None, first=removed, quantize=quantize)
    b = compensate.compensate_layer(layer, Z, Zd, kept=None, first=removed, quantize=quantize, prepared=full)
    assert torch.allclose(a.weight, b.weight, rtol=1e-4, atol=1e-4)
    assert a.bias is not None and b.bias is not None
    assert np.allclose(a.bias, b.bias, rtol=1e-4, atol=1e-4)
    assert not a.weight[:, removed].any()
    if quantize is not None:
        assert a.codes is not None and b.codes is not None
        assert np.mean(a.codes == b.codes) > 0.99  # a code may flip at a rounding boundary


def test_a_refit_without_a_cache_entry_forms_only_the_kept_moments(monkeypatch: pytest.MonkeyPatch) -> None:
    """No full (n, n) H is formed when units are dropped and nothing is cached; with nothing dropped
    (or a cached entry) ``prepare`` runs as before."""
    layer, Z, Zd = _case()
    calls: list[str] = []
    real_prepare, real_kept = compensate.prepare, kept_moments.prepare_kept
    monkeypatch.setattr(compensate, "prepare", lambda *a, **k: calls.append("full") or real_prepare(*a, **k))
    monkeypatch.setattr(
        kept_moments, "prepare_kept", lambda *a, **k: calls.append("kept") or real_kept(*a, **k)
    )
    compensate.compensate_layer(layer, Z, Zd, kept=None, first=np.arange(10), quantize=None)
    compensate.compensate_layer(layer, Z, Zd, kept=None, first=None, quantize=None)
    assert calls == ["kept", "full"]
