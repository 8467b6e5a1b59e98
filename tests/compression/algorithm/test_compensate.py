"""Compensation of one layer: least-squares refit, GPTQ rounding, mean replacement (docs/compensation.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.compensate import Compensated, compensate_layer, design_matrix
from netshrink.compression.algorithm.layer_compensated import compress_layer_compensated
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.algorithm.scores import layer_stats
from netshrink.compression.graph.network import ConvGeometry, Layer
from netshrink.compression.spec import PruneSpec, QuantizeSpec
from tests import factories as F

torch.set_num_threads(1)


_dense = F.correlated_dense_layer


def _objective(
    layer: Layer, Z: torch.Tensor, Zd: torch.Tensor, W_hat: np.ndarray, b_hat: np.ndarray
) -> float:
    """E‖(W zd + b) − (Ŵ ẑ + b̂)‖² computed directly (dense layer)."""
    W = torch.from_numpy(layer.matrix.astype(np.float64))
    assert layer.bias is not None
    y = Zd @ W.T + torch.from_numpy(layer.bias.astype(np.float64))
    y_hat = Z @ torch.from_numpy(W_hat.astype(np.float64)).T + torch.from_numpy(b_hat.astype(np.float64))
    return float(((y - y_hat) ** 2).sum(1).mean())


def test_structured_refit_is_the_least_squares_solution_and_lowers_the_fit_error() -> None:
    layer, Z = _dense()
    drop = np.array([1, 4, 7])
    kept = torch.ones(layer.n_out, layer.n_in, dtype=torch.bool)
    kept[:, drop] = False
    c = compensate_layer(layer, Z, Z, kept=kept, first=drop, quantize=None, damp=1e-10)
    assert c.bias is not None and c.codes is None
    assert np.all(c.weight.numpy()[:, drop] == 0)
    # The exact least-squares solution over the kept columns and the bias (numpy's lstsq).
    keep_cols = np.setdiff1d(np.arange(layer.n_in), drop)
    A = np.concatenate([Z.numpy()[:, keep_cols], np.ones((Z.shape[0], 1))], 1)  # (S, kept + 1)
    assert layer.bias is not None
    Y = Z.numpy() @ layer.matrix.T.astype(np.float64) + layer.bias  # (S, out)
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]  # (kept + 1, out)
    np.testing.assert_allclose(c.weight.numpy()[:, keep_cols], sol[:-1].T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c.bias, sol[-1], rtol=1e-4, atol=1e-4)
    # The refit never does worse on the fit split than deleting the units and keeping the rest.
    masked = layer.matrix.copy()
    masked[:, drop] = 0
    before = _objective(layer, Z, Z, masked, layer.bias)
    after = _objective(layer, Z, Z, c.weight.numpy(), c.bias)
    assert after < before


def test_mean_replacement_moves_the_removed_units_mean_into_the_bias() -> None:
    """Inputs uncorrelated with the kept ones: the bias absorbs exactly W[:, j]·E[ẑ_j] (mean replacement)."""
    rng = np.random.default_rng(3)
    S = 20000
    Z = torch.from_numpy(rng.standard_normal((S, 4)) + np.array([0.0, 2.0, 0.0, -1.0]))  # (S, 4) independent
    W = rng.standard_normal((3, 4)).astype(np.float32)
    layer = Layer("fc", 1, "dense", W, np.zeros(3, np.float32), "w", "b", structured=True)
    kept = torch.ones(3, 4, dtype=torch.bool)
    kept[:, 1] = False
    c = compensate_layer(layer, Z, Z, kept=kept, first=np.array([1]), quantize=None, damp=1e-10)
    assert c.bias is not None
    np.testing.assert_allclose(c.bias, W[:, 1] * Z[:, 1].mean().item(), rtol=0.02, atol=0.02)


def test_gptq_rounding_is_on_the_grid_and_beats_round_to_nearest() -> None:
    layer, Z = _dense(n_out=16, n_in=40, seed=1)
    q = QuantizeSpec(bits=3)
    c = compensate_layer(layer, Z, Z, kept=None, first=None, quantize=q)
    assert c.codes is not None and c.scale is not None and c.bias is not None
    assert np.abs(c.codes).max() <= q.levels
    np.testing.assert_array_equal(
        c.weight.numpy().astype(np.float32), c.codes.astype(np.float32) * c.scale[:, None]
    )
    rtn = np.round(layer.matrix / c.scale[:, None]).clip(-q.levels, q.levels) * c.scale[:, None]
    assert layer.bias is not None
    gptq = _objective(layer, Z, Z, c.weight.numpy(), c.bias)
    assert gptq < 0.7 * _objective(layer, Z, Z, rtn, layer.bias)


def test_refit_targets_the_dense_output_given_the_compressed_input() -> None:
    """With ẑ ≠ z the refit fits W z + b from ẑ: better than the same refit fitted to W ẑ + b."""
    layer, Zd = _dense(seed=2)
    Z = Zd * 0.8 + 0.1  # (S, n_in) a distorted upstream
    dense_target = compensate_layer(layer, Z, Zd, kept=None, first=None, quantize=None, damp=1e-10)
    local_target = compensate_layer(layer, Z, Z, kept=None, first=None, quantize=None, damp=1e-10)
    assert dense_target.bias is not None and local_target.bias is not None
    a = _objective(layer, Z, Zd, dense_target.weight.numpy(), dense_target.bias)
    b = _objective(layer, Z, Zd, local_target.weight.numpy(), local_target.bias)
    assert a < 1e-4 * b  # z is an affine function of ẑ here: the dense target is met exactly


def test_conv_channel_drop_is_deterministic_given_the_mask_and_mask_follows_the_draw() -> None:
    rng = np.random.default_rng(0)
    K = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    layer = Layer(
        "conv",
        1,
        "conv",
        K,
        np.zeros(4, np.float32),
        "w",
        "b",
        conv=ConvGeometry((3, 3), pads=(1, 1, 1, 1)),
        structured=True,
    )
    Z = torch.from_numpy(np.abs(rng.standard_normal((20, 3, 6, 6))))  # (S, C, H, W)
    assert design_matrix(layer, Z).shape == (20 * 36, 27)
    stats = layer_stats(layer, Z, groups=True)
    prune = PruneSpec(keep=0.5, granularity="channel")
    draws = [
        compress_layer_compensated(
            layer,
            stats,
            Z,
            Z,
            prune=prune,
            quantize=QuantizeSpec(bits=4),
            keep=0.5,
            generator=generator(5, 1, d),
        )
        for d in (0, 0, 1)
    ]
    a, b, _ = draws
    assert a.compensated and a.tier_E_A is None and a.compressed.bias is not None
    np.testing.assert_array_equal(a.compressed.weight, b.compressed.weight)
    dropped = a.compressed.dropped_inputs
    assert dropped is not None and dropped.size
    assert np.all(a.compressed.weight[:, dropped] == 0)


def test_a_prepared_refit_is_the_refit() -> None:
    """``prepare`` once, refit many masks (the budget search's cache): the same weights and objective."""
    from netshrink.compression.algorithm.compensate import prepare

    layer, Z = _dense()
    Zd = Z + 0.1 * torch.randn(Z.shape, generator=torch.Generator().manual_seed(1), dtype=Z.dtype)
    pr = prepare(layer, Z, Zd)
    first = np.array([1, 4, 7])
    kept = torch.ones(layer.n_out, layer.n_in, dtype=torch.bool)
    kept[:, torch.as_tensor(first)] = False
    for q in (None, QuantizeSpec(bits=4)):
        a = compensate_layer(layer, Z, Zd, kept=kept, first=first, quantize=q)
        b = compensate_layer(layer, Z, Zd, kept=kept, first=first, quantize=q, prepared=pr)
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
        assert bool((b.weight[:, torch.as_tensor(first)] == 0).all())  # the removed columns stay 0


def _relu_layer(n_in: int, n_out: int, S: int, seed: int) -> tuple[Layer, torch.Tensor]:
    """A dense layer fed by correlated ReLU features with a non-zero mean (ill-conditioned H)."""
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    A = rng.standard_normal((16, n_in))  # low-rank mixing: 16 latent factors
    Z = np.maximum(rng.standard_normal((S, 16)) @ A + 0.1 * rng.standard_normal((S, n_in)), 0.0)
    return Layer("fc", 1, "dense", W, b, "w", "b", structured=True), torch.from_numpy(Z.astype(np.float32))


@pytest.mark.parametrize(("n_in", "S"), [(60, 400), (200, 120)])  # more samples than inputs, and fewer
def test_float32_refit_matches_float64_ridge_least_squares(n_in: int, S: int) -> None:
    """The float32 refit against numpy's float64 solution of the same damped problem (λ = 1%).

    Stated tolerance (docs/compensation.md "Precision"): the fit objective within 1e-4 relative of
    the float64 optimum's, and the weights within 1e-3 of the largest weight.
    """
    layer, Z = _relu_layer(n_in, 24, S, seed=n_in)
    Zd = torch.relu(Z + 0.05 * torch.randn(Z.shape, generator=torch.Generator().manual_seed(0)))
    drop = np.arange(0, n_in, 5)
    kept = torch.ones(layer.n_out, n_in, dtype=torch.bool)
    kept[:, drop] = False
    c = compensate_layer(layer, Z, Zd, kept=kept, first=drop, quantize=None)
    keep_cols = np.setdiff1d(np.arange(n_in), drop)
    assert layer.bias is not None and c.bias is not None
    A = np.concatenate([Z.numpy().astype(np.float64), np.ones((S, 1))], 1)  # (S, n_in + 1)
    H = A.T @ A / S
    lam = 0.01 * np.diag(H).mean()
    K = np.append(keep_cols, n_in)
    Y = Zd.numpy().astype(np.float64) @ layer.matrix.T.astype(np.float64) + layer.bias  # (S, out)
    # Ridge least squares as an augmented lstsq: [A_K; √(λS) I] v = [Y; 0]
    Aa = np.concatenate([A[:, K], np.sqrt(lam * S) * np.eye(K.size)], 0)
    Ya = np.concatenate([Y, np.zeros((K.size, Y.shape[1]))], 0)
    ref = np.linalg.lstsq(Aa, Ya, rcond=None)[0].T  # (out, |K|)
    got = np.concatenate([c.weight.numpy()[:, keep_cols], c.bias[:, None]], 1).astype(np.float64)
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    f_ref = _objective(layer, Z.double(), Zd.double(), _scatter(ref, keep_cols, n_in), ref[:, -1])
    f_got = _objective(layer, Z.double(), Zd.double(), c.weight.numpy(), c.bias)
    assert abs(f_got - f_ref) <= 1e-4 * f_ref
    # and the refit never raises the fit error above deleting the units and keeping the rest
    masked = layer.matrix.copy()
    masked[:, drop] = 0
    assert f_got < _objective(layer, Z.double(), Zd.double(), masked, layer.bias)


def _scatter(V: np.ndarray, cols: np.ndarray, n_in: int) -> np.ndarray:
    out = np.zeros((V.shape[0], n_in))
    out[:, cols] = V[:, : cols.size]
    return out


def _gptq_reference(V: np.ndarray, H: np.ndarray, step: np.ndarray, k: int) -> np.ndarray:
    """GPTQ, Algorithm 1 (Frantar et al. 2023) as published, float64, one column at a time, no mask.

    V: (out, n) the unconstrained minimizer V* = B H_λ⁻¹, H: (n, n) damped; the last column (bias) stays
    float. Returns the rounded (out, n).
    """
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper, H⁻¹ = UᵀU
    V = V.copy()
    Q = np.zeros_like(V)
    n = V.shape[1]
    for c in range(n):
        w = V[:, c]
        q = w.copy() if c == n - 1 else np.clip(np.round(w / step), -k, k) * step
        Q[:, c] = q
        err = (w - q) / U[c, c]
        V[:, c:] -= np.outer(err, U[c, c:])
    return Q


def test_sequential_rounding_is_gptq_algorithm_1() -> None:
    """The triangular-solve form (eq. 1) rounds as GPTQ's published loop does, given the same step."""
    layer, Z = _relu_layer(70, 12, 500, seed=4)
    q = QuantizeSpec(bits=4)
    c = compensate_layer(layer, Z, Z, kept=None, first=None, quantize=q)
    assert c.codes is not None and c.scale is not None and c.bias is not None and layer.bias is not None
    A = np.concatenate([Z.numpy().astype(np.float64), np.ones((Z.shape[0], 1))], 1)  # (S, n)
    H = A.T @ A / Z.shape[0]
    H += 0.01 * np.diag(H).mean() * np.eye(H.shape[0])
    Wa = np.concatenate([layer.matrix, layer.bias[:, None]], 1).astype(np.float64)  # (out, n)
    Vstar = Wa @ (A.T @ A / Z.shape[0]) @ np.linalg.inv(H)  # (out, n) = B H_λ⁻¹
    step = c.scale.astype(np.float64)[:, None]  # (out, 1)
    ref = _gptq_reference(Vstar, H, step[:, 0], q.levels)
    ref_codes = np.round(ref[:, :-1] / step).astype(np.int64)
    agree = float((ref_codes == c.codes).mean())
    assert agree >= 0.99  # float32 vs float64: a code at a rounding boundary may differ
    f_ref = _objective(layer, Z.double(), Z.double(), ref[:, :-1], ref[:, -1])
    f_got = _objective(layer, Z.double(), Z.double(), c.weight.numpy(), c.bias)
    assert abs(f_got - f_ref) <= 0.02 * f_ref


def test_a_singular_H_still_factors_after_the_jitter() -> None:
    """Duplicated inputs make H singular; at λ = 10⁻¹² float32 Cholesky fails and λ grows until it
    factors. The refit is finite and still fits the layer's output (relative error < 10⁻³)."""
    from netshrink.compression.algorithm.compensate import _reverse_cholesky, prepare

    rng = np.random.default_rng(0)
    Z0 = np.abs(rng.standard_normal((200, 6)))
    Z = torch.from_numpy(np.concatenate([Z0, Z0[:, :3]], 1).astype(np.float32))  # (200, 9), rank 6
    W = rng.standard_normal((4, 9)).astype(np.float32)
    layer = Layer("fc", 1, "dense", W, np.zeros(4, np.float32), "w", "b", structured=True)
    pr = prepare(layer, Z, Z, damp=1e-12)
    A = pr.H.clone()
    A.diagonal().add_(pr.lam)
    assert int(torch.linalg.cholesky_ex(A).info) != 0  # the plain factorization does fail
    R = _reverse_cholesky(pr.H, torch.arange(10), pr.lam)  # (10, 10)
    assert bool(torch.isfinite(R).all()) and bool((torch.tril(R, -1) == 0).all())
    c = compensate_layer(layer, Z, Z, kept=None, first=None, quantize=None, damp=1e-12)
    assert c.bias is not None
    err = _objective(layer, Z.double(), Z.double(), c.weight.numpy(), c.bias)
    energy = float(((Z.double() @ torch.from_numpy(W).double().T) ** 2).sum(1).mean())
    assert np.isfinite(c.weight.numpy()).all() and err < 1e-6 * energy


def test_every_column_in_order_factors_from_one_flip_with_the_same_bits() -> None:
    """``order=None`` (no column removed: the flipped copy of H) gives the gathered copy's factor."""
    from netshrink.compression.algorithm.compensate import _reverse_cholesky

    a = torch.from_numpy(np.random.default_rng(3).standard_normal((80, 37)).astype(np.float32))
    H = a.T @ a / 80  # (37, 37)
    assert torch.equal(_reverse_cholesky(H, None, 0.01), _reverse_cholesky(H, torch.arange(37), 0.01))


def _former_block(T, R, i1, i2, diag, mk, step, k, codest, maskt):  # type: ignore[no-untyped-def]
    """The column loop as it was before its per-column ops were cut (the reference for the test below)."""
    for i in range(i2 - i1):
        c = i1 + i
        w = T[i].div_(diag[c])
        if c < mk:
            if step is not None and codest is not None:
                r = torch.round(w / step).clamp_(-k, k)
                if maskt is not None:
                    r.masked_fill_(maskt[c], 0.0)
                codest[c] = r.to(torch.int8)
                w.copy_(r.mul_(step))
            elif maskt is not None:
                w.masked_fill_(maskt[c], 0.0)
        if i + 1 < i2 - i1:
            T[i + 1 :].addr_(R[c, c + 1 : i2], w, alpha=-1)


def _refit_case(rng: np.random.Generator, case: int, W: np.ndarray, S: int):  # type: ignore[no-untyped-def]
    """A refit problem around W (out, in) for ``case``: a bias or none, S rows of inputs, and by the
    case's residues an unstructured mask, dropped columns, and 2/4/8 bits per row or per tensor (or
    no quantization)."""
    n_out, n_in = W.shape
    b = rng.standard_normal(n_out).astype(np.float32) if case % 3 else None
    layer = Layer("fc", 1, "dense", W, b, "w", None if b is None else "b", structured=True)
    Z = torch.from_numpy(np.abs(rng.standard_normal((S, n_in))).astype(np.float32))  # (S, n_in)
    Zd = Z + 0.1 * torch.from_numpy(rng.standard_normal((S, n_in)).astype(np.float32))  # (S, n_in)
    kept = torch.from_numpy(rng.random((n_out, n_in)) > 0.3) if case % 4 == 1 else None  # (out, in)
    first = np.flatnonzero(rng.random(n_in) < 0.3) if case % 4 == 2 else None
    q = (
        None
        if case % 6 == 5
        else QuantizeSpec(bits=(2, 4, 8)[case % 3], scale=("per_row", "per_tensor")[case % 2])
    )
    return layer, Z, Zd, kept, first, q


@pytest.mark.parametrize("case", range(12))
def test_column_loop_gives_the_former_loops_numbers_bit_for_bit(
    case: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leaner column loop (fewer tensor ops per column) rounds, masks and feeds the error forward
    exactly as the former one: the same codes, weights and bias, bit for bit, across blocks (n_in
    past BLOCK), unstructured masks, dropped columns, per-row and per-tensor steps, with and without
    a bias, and without quantization."""
    from netshrink.compression.algorithm import compensate

    rng = np.random.default_rng(case)
    n_out, n_in, S = int(rng.integers(1, 24)), int(rng.integers(2, 300)), int(rng.integers(20, 300))
    W = rng.standard_normal((n_out, n_in)).astype(np.float32)
    layer, Z, Zd, kept, first, q = _refit_case(rng, case, W, S)
    got = compensate_layer(layer, Z, Zd, kept=kept, first=first, quantize=q)
    monkeypatch.setattr(compensate, "_block", _former_block)
    monkeypatch.setattr(compensate, "_block_cpu", _former_block)
    want = compensate_layer(layer, Z, Zd, kept=kept, first=first, quantize=q)
    _assert_same_refit(got, want, q)


def _assert_same_refit(got: Compensated, want: Compensated, q: QuantizeSpec | None) -> None:
    assert torch.equal(got.weight, want.weight)
    assert (got.codes is None) == (want.codes is None) and (q is None) == (got.codes is None)
    if got.codes is not None and want.codes is not None:
        assert np.array_equal(got.codes, want.codes)
    assert (got.bias is None and want.bias is None) or np.array_equal(got.bias, want.bias)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", range(24))
def test_cpu_column_loop_is_the_torch_loop_bit_for_bit(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU loop (numpy elementwise ops on the same memory, issue 11) gives the torch loop's (the
    one a CUDA device runs) codes, weights and bias bit for bit: widths on and off the SIMD width
    (1-300 outputs), several blocks, unstructured masks, dropped columns, 2/4/8 bits, per-row and
    per-tensor steps, no quantization, and steps of 0 (an all-zero row)."""
    from netshrink.compression.algorithm import compensate

    rng = np.random.default_rng(100 + case)
    n_out, n_in, S = int(rng.integers(1, 300)), int(rng.integers(2, 400)), int(rng.integers(20, 400))
    W = (rng.standard_normal((n_out, n_in)) * 10.0 ** rng.uniform(-3, 2)).astype(np.float32)
    if case % 5 == 4:
        W[0] = 0.0  # a zero row: its step is 0 (replaced by 1)
    layer, Z, Zd, kept, first, q = _refit_case(rng, case, W, S)
    calls: list[str] = []
    cpu_block = compensate._block_cpu

    def spy(*args: object) -> None:
        calls.append("cpu")
        cpu_block(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(compensate, "_block_cpu", spy)
    got = compensate_layer(layer, Z, Zd, kept=kept, first=first, quantize=q)
    assert bool(calls) == (q is not None or kept is not None)  # the CPU loop ran (else: the exact solve)
    monkeypatch.setattr(compensate, "_block_cpu", compensate._block)
    want = compensate_layer(layer, Z, Zd, kept=kept, first=first, quantize=q)
    _assert_same_refit(got, want, q)


def test_a_quantized_refit_that_drops_every_input_unit_leaves_the_bias() -> None:
    """Every input unit dropped (a budget search on inputs that carry no signal reached this): the
    refit has no weight column left to round (before, ``grid_step`` raised on an empty amax). Ŵ is 0,
    its codes are 0, and the bias takes the mean of W ẑ, the whole dense output's mean."""
    layer, Z = _dense(n_out=4, n_in=6, seed=2)
    kept = torch.zeros(4, 6, dtype=torch.bool)
    c = compensate_layer(
        layer, Z, Z, kept=kept, first=np.arange(6), quantize=QuantizeSpec(bits=4), damp=1e-10
    )
    assert c.codes is not None and not c.codes.any() and not c.weight.any()
    assert c.scale is not None and np.all(c.scale == 1.0)  # the zero step's stand-in, as for a zero row
    assert layer.bias is not None and c.bias is not None
    mean_out = (Z @ torch.from_numpy(layer.matrix.astype(np.float64)).T).mean(0).numpy() + layer.bias
    np.testing.assert_allclose(c.bias, mean_out, rtol=1e-4, atol=1e-4)
