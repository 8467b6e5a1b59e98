"""Quantization: stochastic rounding is unbiased on the grid; RTN is nearest; outliers (docs/method.md §1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.algorithm.quantize import grid_step, quantize_matrix
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.spec import QuantizeSpec

torch.set_num_threads(1)
DRAWS = 2000


def _W(seed: int = 0) -> torch.Tensor:
    W = np.random.default_rng(seed).standard_normal((6, 7))
    W[2, 3] = 0.0  # an exact zero stays exactly zero
    return torch.from_numpy(W)


def test_stochastic_rounding_is_unbiased_and_on_the_grid() -> None:
    W = _W()
    ones, spec = np.ones((1, 7)), QuantizeSpec(bits=3)
    runs = [quantize_matrix(W, ones, ones[0], spec, generator(0, 0, d)) for d in range(DRAWS)]
    r0 = runs[0]
    assert r0.k == 3 and r0.codes.dtype == np.int8 and r0.outliers is None and r0.scale.dtype == np.float32
    samples = np.stack([r.weight.double().numpy() for r in runs])  # (D, out, in), Ŵ is float32
    se = np.sqrt(r0.var.numpy() / DRAWS) + 1e-12
    assert (np.abs(samples.mean(0) - W.numpy()) / se).max() < 4.5
    step = r0.scale.astype(np.float64)[:, None]  # (out, 1)
    assert np.all(step >= r0.M[:, None] / 3)  # rounded up: |w|/step <= k
    for r in runs[:100]:
        assert np.abs(r.codes).max() <= 3
        np.testing.assert_array_equal(
            r.weight.numpy(), (r.codes.astype(np.float32) * r.scale[:, None]).astype(np.float64)
        )
        assert np.all(np.abs(r.weight.numpy() - W.numpy()) <= step * (1 + 1e-6))  # |t − w| <= M/k
    assert r0.weight[2, 3] == 0.0 and r0.var[2, 3] == 0.0
    x = W.numpy() / step
    u = x - np.floor(x)
    var64 = step**2 * u * (1 - u)  # (out, in) float64, the implementation's operations in its order
    np.testing.assert_array_equal(r0.var.numpy(), var64.astype(np.float32))  # stored as float32
    assert np.all(var64 <= r0.M[:, None] ** 2 / (4 * 9) + 1e-15)


def test_per_layer_scale_uses_global_max() -> None:
    W = _W(1)
    ones = np.ones((1, 7))
    r = quantize_matrix(W, ones, ones[0], QuantizeSpec(bits=4, scale="per_layer"), generator(0, 0, 0))
    assert r.scale.shape == (1,)
    np.testing.assert_allclose(r.M, np.abs(W.numpy()).max())


def test_rtn_is_deterministic_nearest() -> None:
    W, ones = _W(2), np.ones((1, 7))
    spec = QuantizeSpec(bits=4, method="rtn")
    a = quantize_matrix(W, ones, ones[0], spec, generator(0, 0, 0))
    b = quantize_matrix(W, ones, ones[0], spec, generator(5, 5, 5))
    assert np.array_equal(a.codes, b.codes) and a.tier_E_A is None and not a.var.any()
    step = a.scale.astype(np.float64)[:, None]
    np.testing.assert_array_equal(a.codes, np.round(W.numpy() / step).astype(np.int8))
    assert np.all(np.abs(a.weight.numpy() - W.numpy()) <= step / 2 * (1 + 1e-6))


def test_fraction_below_one_keeps_top_score_weights_as_float_outliers() -> None:
    W, energy = _W(3), np.linspace(0.1, 3.0, 7)
    r = quantize_matrix(W, energy[None], energy, QuantizeSpec(bits=2, fraction=0.75), generator(0, 0, 0))
    assert r.outliers is not None
    nnz = int((W.numpy() != 0).sum())
    assert r.n_randomized == round(0.75 * nnz) and r.outliers.sum() == nnz - r.n_randomized
    step = grid_step(W, 1, "per_row")[0].numpy()[:, None]
    x = W.numpy() / step
    score = step**2 * (x - np.floor(x)) * (1 - x + np.floor(x)) * energy[None]  # Var(t)·E[ẑ_j²]
    rounded = ~r.outliers & (W.numpy() != 0)
    assert score[r.outliers].min() >= score[rounded].max()  # outliers = the top scores
    np.testing.assert_array_equal(r.weight.numpy()[r.outliers], W.numpy().astype(np.float32)[r.outliers])
    assert not r.codes[r.outliers].any()
    var64 = np.where(rounded, score / energy[None], 0.0)  # (out, in) float64 Var(t) of the rounded entries
    assert r.tier_E_A == pytest.approx(float((var64 * energy[None]).sum()), rel=1e-12)
    assert r.var.dtype == torch.float32  # stored as float32 (memory), the float64 values rounded once
    np.testing.assert_allclose(r.var.numpy(), var64.astype(np.float32), rtol=1e-6, atol=0)


def test_row_blocks_do_not_change_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uniforms drawn block by block (bounded memory) equal one draw for the whole matrix."""
    from netshrink.compression.algorithm import quantize

    W, ones = torch.from_numpy(np.random.default_rng(4).standard_normal((37, 29))), np.ones((1, 29))
    spec = QuantizeSpec(bits=4)
    whole = quantize_matrix(W, ones, ones[0], spec, generator(1, 2, 3))
    monkeypatch.setattr(quantize, "_CHUNK", 29 * 3)  # blocks of 3 rows
    blocks = quantize_matrix(W, ones, ones[0], spec, generator(1, 2, 3))
    np.testing.assert_array_equal(whole.codes, blocks.codes)
    np.testing.assert_array_equal(whole.var.numpy(), blocks.var.numpy())
    assert whole.tier_E_A == pytest.approx(blocks.tier_E_A, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_at_f1_is_stochastic_rounding_of_the_stream(dtype: torch.dtype) -> None:
    """f = 1 (one fused pass, no selection mask): codes = ⌊x⌋ + [u < x − ⌊x⌋] with the generator's
    uniforms in row order, zeros stay 0, W itself is not modified, and tier E = Σ Var(t)·E[ẑ_j²]."""
    W = _W(5).to(dtype)
    W[4] = 0.0  # a zero row: step 0, codes 0, Var 0
    before = W.clone()
    energy = np.linspace(0.5, 2.0, 7)
    r = quantize_matrix(W, energy[None], energy, QuantizeSpec(bits=3), generator(2, 1, 0))
    assert torch.equal(W, before)
    step = r.scale.astype(np.float64)[:, None]  # (out, 1)
    x = W.double().numpy() / np.where(step > 0, step, 1.0)
    u = torch.rand(W.numel(), generator=generator(2, 1, 0), dtype=torch.float64).numpy().reshape(W.shape)
    lo = np.floor(x)
    np.testing.assert_array_equal(r.codes, np.clip(lo + (u < x - lo), -3, 3).astype(np.int8))
    assert not r.codes[4].any() and not r.var.numpy()[4].any() and r.outliers is None
    assert r.n_randomized == int((W.numpy() != 0).sum())
    f = x - lo
    var64 = np.where(step > 0, step**2 * f * (1 - f), 0.0)  # (out, in) float64 Var(t)
    assert r.tier_E_A == pytest.approx(float((var64 * energy[None]).sum()), rel=1e-12)
    np.testing.assert_array_equal(r.var.numpy(), var64.astype(np.float32))  # stored as float32


def _former_quantize(W: torch.Tensor, col: np.ndarray, spec: QuantizeSpec, gen: torch.Generator) -> tuple:
    """The former f = 1 loop, whole row blocks with fresh temporaries: the reference for the bytes."""
    from netshrink.compression.algorithm.quantize import _rows

    k = spec.levels
    step, _ = grid_step(W, k, spec.scale)
    safe = torch.where(step > 0, step, torch.ones_like(step))[:, None]  # (out, 1)
    var = torch.empty(W.shape, dtype=torch.float32)
    codes = torch.empty(W.shape, dtype=torch.int8)
    Wq = torch.empty(W.shape, dtype=torch.float32)
    s32 = step.to(torch.float32)[:, None]
    c = torch.as_tensor(col, dtype=torch.float64)[None, :]  # (1, in)
    blocks, A = _rows(W), 0.0
    for r in blocks:
        sl = slice(r, r + blocks.step)
        x = W[sl].to(torch.float64, copy=True).div_(safe[sl])  # (b, in)
        if spec.method == "rtn":
            q, v = torch.round(x), torch.zeros_like(x)
        else:
            u = torch.rand(x.numel(), generator=gen, dtype=torch.float64).reshape(x.shape)
            q = torch.floor(x)
            frac = x.sub_(q)
            v = torch.mul(safe[sl] ** 2, frac)
            v.mul_(1.0 - frac)
            A += float((v * c).sum())
            q.add_(u < frac)
        var[sl].copy_(v)
        q = q.clamp_(-k, k)
        codes[sl].copy_(q)
        Wq[sl].copy_(q).mul_(s32[sl])
    return Wq.numpy().tobytes(), codes.numpy().tobytes(), var.numpy().tobytes(), A


@pytest.mark.parametrize("sub", [1, 3 * 29, 1 << 18])  # sub-blocks of one row, of 3 rows, the default
@pytest.mark.parametrize(
    "spec", [QuantizeSpec(bits=8), QuantizeSpec(bits=2), QuantizeSpec(bits=4, method="rtn")]
)
def test_sub_blocks_and_scratch_buffers_keep_the_former_bytes(
    sub: int, spec: QuantizeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sub-blocks into reused scratch (issue 10: no page-faulted temporaries) give the former loop's
    bytes: Ŵ with its signed zeros (RTN rounds −0.3 to −0), codes, Var(t), and tier E exactly."""
    from netshrink.compression.algorithm import quantize

    rng = np.random.default_rng(7)
    W = torch.from_numpy((rng.standard_normal((41, 29)) * rng.uniform(0.1, 3.0, (41, 1))).astype(np.float32))
    W[5] = 0.0  # a zero row: step 0
    col = rng.uniform(0.5, 2.0, 29)
    monkeypatch.setattr(quantize, "_CHUNK", 29 * 8)  # blocks of 8 rows (the last one short)
    monkeypatch.setattr(quantize, "_SUB", sub)
    r = quantize_matrix(W, col[None], col, spec, generator(4, 2, 1))
    w, c, v, A = _former_quantize(W, col, spec, generator(4, 2, 1))
    assert (r.weight.numpy().tobytes(), r.codes.tobytes(), r.var.numpy().tobytes()) == (w, c, v)
    assert r.tier_E_A == (None if spec.method == "rtn" else A)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sub", [3 * 29, 1 << 18])  # sub-blocks of 3 rows, the default
@pytest.mark.parametrize(
    "spec",
    [
        QuantizeSpec(bits=4),
        QuantizeSpec(bits=2, scale="per_layer"),
        QuantizeSpec(bits=8, method="rtn"),
        QuantizeSpec(bits=4, fraction=0.9),
    ],
)
def test_weight_only_gives_the_same_weight_bytes(
    dtype: torch.dtype, sub: int, spec: QuantizeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``weight_only`` (the held-back rule's plain draw, issue 11) makes Ŵ from the same uniforms,
    blocks and operations: the same bytes, signed zeros included; no Var(t), codes or tier E."""
    from netshrink.compression.algorithm import quantize

    rng = np.random.default_rng(11)
    W = torch.from_numpy(rng.standard_normal((41, 29)) * rng.uniform(0.1, 3.0, (41, 1))).to(dtype)
    W[5] = 0.0  # a zero row: step 0
    W[7, :5] = 0.0
    col = rng.uniform(0.5, 2.0, 29)
    monkeypatch.setattr(quantize, "_CHUNK", 29 * 8)  # blocks of 8 rows (the last one short)
    monkeypatch.setattr(quantize, "_SUB", sub)
    full = quantize_matrix(W, col[None], col, spec, generator(5, 1, 2))
    light = quantize_matrix(W, col[None], col, spec, generator(5, 1, 2), weight_only=True)
    assert light.weight.numpy().tobytes() == full.weight.numpy().tobytes()
    if spec.fraction == 1.0:  # nothing ranked, no tier E: no statistics needed
        bare = quantize_matrix(W, None, None, spec, generator(5, 1, 2), weight_only=True)
        assert bare.weight.numpy().tobytes() == full.weight.numpy().tobytes()
    assert light.var.numel() == 0 and light.codes.size == 0 and light.tier_E_A is None


def test_grid_step_is_the_max_abs_without_a_full_size_temporary() -> None:
    """grid_step's M is max_j |w_ij| exactly (zero rows +0, negative rows, NaN, transposed views),
    read from W by two reductions: no operator allocates a |W| block (issue 10; the former row
    blocks of |W| allocated 8 MiB each in float64)."""
    rng = np.random.default_rng(7)
    W = torch.from_numpy(rng.standard_normal((512, 2048)))  # (512, 2048) float64, 8 MiB
    W[0] = 0.0
    W[1] = -0.0
    W[2] = -torch.abs(W[2])  # the largest |w| is a negative entry
    W[3, 5] = float("nan")
    for m in (W, W.T.contiguous().T, W.to(torch.float32)):
        _, M = grid_step(m, 7, "per_row")
        ref = m.abs().amax(dim=1).numpy().astype(np.float64)
        np.testing.assert_array_equal(M, ref)
        assert np.signbit(M[:2]).sum() == 0  # +0 for the zero rows, as |w| gives
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        grid_step(W, 7, "per_row")
    biggest = max((e.cpu_memory_usage for e in prof.events()), default=0)  # bytes one operator allocated
    assert biggest < W.numel() * W.element_size() // 64


@pytest.mark.parametrize("scale", ["per_row", "per_layer"])
def test_grid_step_of_a_matrix_without_columns_is_zero(scale: str) -> None:
    """A refit that dropped every input unit rounds a (out, 0) matrix: M and the step are +0 per row,
    as for an all-zero row (torch's amax raises over an empty dimension)."""
    step, M = grid_step(torch.zeros(3, 0), 7, scale)  # (3, 0)
    np.testing.assert_array_equal(M, np.zeros(3))
    assert step.shape == (3,) and not step.any()


@pytest.mark.parametrize("weight_only", [True, False])
@pytest.mark.parametrize(
    "spec",
    [QuantizeSpec(bits=4), QuantizeSpec(bits=2, scale="per_layer"), QuantizeSpec(bits=8, method="rtn")],
)
def test_column_scale_gives_the_bytes_of_the_scaled_float64_matrix(
    spec: QuantizeSpec, weight_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``col_scale`` (a group draw's 1/p, 0 and 1 per column, issue 10) quantizes float32 W as the
    float64 matrix W·c made whole: the same Ŵ, codes, Var(t), steps and tier E, signed zeros included,
    over blocks and sub-blocks that do not divide the matrix; f < 1 is refused."""
    from netshrink.compression.algorithm import quantize

    rng = np.random.default_rng(12)
    W = torch.from_numpy((rng.standard_normal((41, 29)) * rng.uniform(0.1, 3.0, (41, 1))).astype(np.float32))
    W[5] = 0.0  # a zero row: step 0
    W[7, :5] = -0.0
    c = np.where(rng.uniform(size=29) < 0.3, 0.0, np.where(rng.uniform(size=29) < 0.5, 1.0, 1 / 0.37))
    c[0] = 0.0  # column 0 dropped: the row whose only large entry sits there gets a smaller step
    W[9, 0] = 50.0
    col = rng.uniform(0.5, 2.0, 29)
    monkeypatch.setattr(quantize, "_CHUNK", 29 * 8)  # blocks of 8 rows (the last one short)
    monkeypatch.setattr(quantize, "_SUB", 3 * 29)
    whole = W.double() * torch.from_numpy(c)  # (41, 29) what prune_layer's W̃ was
    want = quantize_matrix(whole, col[None], col, spec, generator(3, 1, 4), weight_only=weight_only)
    got = quantize_matrix(W, col[None], col, spec, generator(3, 1, 4), weight_only=weight_only, col_scale=c)
    assert got.weight.numpy().tobytes() == want.weight.numpy().tobytes()
    assert (
        got.codes.tobytes() == want.codes.tobytes()
        and got.var.numpy().tobytes() == want.var.numpy().tobytes()
    )
    assert np.array_equal(got.M, want.M) and np.array_equal(got.scale, want.scale)
    assert got.tier_E_A == want.tier_E_A and got.n_randomized == want.n_randomized
    assert float(got.M[9]) < 50.0  # the dropped column's entry set no step
    with pytest.raises(ValueError, match="f = 1"):
        quantize_matrix(
            W, col[None], col, QuantizeSpec(bits=4, fraction=0.9), generator(0, 0, 0), col_scale=c
        )


@pytest.mark.parametrize("weight_only", [True, False])
@pytest.mark.parametrize("scaled", [False, True])
def test_the_sub_block_passes_allocate_nothing_per_sub_block(
    weight_only: bool, scaled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The elementwise passes run in the scratch buffers: no operator allocates a sub-block-sized
    temporary per sub-block (issue 10: an operator of mixed dtypes, float32 W / float64 step or
    float64 + bool, made a cast temporary each time, a mapping faulted in on every call: 128 MiB
    of page faults per pass over a 4096² float32 matrix)."""
    from netshrink.compression.algorithm import quantize

    rng = np.random.default_rng(8)
    W = torch.from_numpy(rng.standard_normal((512, 256)).astype(np.float32))  # (512, 256) float32
    col = np.ones(256)
    c = np.where(rng.uniform(size=256) < 0.5, 0.0, 2.0) if scaled else None
    monkeypatch.setattr(quantize, "_SUB", 16 * 256)  # 32 sub-blocks of 16 rows
    sub_bytes = 16 * 256 * 8  # one float64 sub-block
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        quantize_matrix(
            W, col[None], col, QuantizeSpec(bits=4), generator(1, 1, 1), weight_only=weight_only, col_scale=c
        )
    sized = [e for e in prof.events() if sub_bytes // 2 <= e.cpu_memory_usage <= sub_bytes]
    assert len(sized) <= 6, [e.name for e in sized]  # the scratch buffers, made once


@pytest.mark.parametrize(
    "spec",
    [QuantizeSpec(bits=4), QuantizeSpec(bits=3, fraction=0.8), QuantizeSpec(bits=8, method="rtn")],
)
@pytest.mark.parametrize("workers", [2, 3])
def test_sub_block_workers_give_the_bytes_of_one(
    spec: QuantizeSpec, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sub-blocks of a block go to as many Python threads as torch has (each op on one torch
    thread, issue 10): Ŵ, codes, Var(t) with a prior, and tier E are the bytes one worker gives,
    over blocks whose sub-blocks do not split evenly between the workers."""
    from netshrink.compression.algorithm import quantize

    rng = np.random.default_rng(13)
    W = torch.from_numpy((rng.standard_normal((83, 37)) * rng.uniform(0.1, 3.0, (83, 1))).astype(np.float32))
    prior = torch.from_numpy(rng.uniform(0.0, 0.01, (83, 37)))  # (83, 37) float64
    col = rng.uniform(0.5, 2.0, 37)
    monkeypatch.setattr(quantize, "_CHUNK", 37 * 17)  # blocks of 17 rows (the last one short)
    monkeypatch.setattr(quantize, "_SUB", 37 * 3)  # 6 sub-blocks of 3 rows per block
    runs = []
    for n in (1, workers):
        torch.set_num_threads(n)
        try:
            runs.append(quantize_matrix(W, col[None], col, spec, generator(6, 2, 1), var_prior=prior))
        finally:
            torch.set_num_threads(1)
    one, many = runs
    assert many.weight.numpy().tobytes() == one.weight.numpy().tobytes()
    assert (
        many.codes.tobytes() == one.codes.tobytes()
        and many.var.numpy().tobytes() == one.var.numpy().tobytes()
    )
    assert many.tier_E_A == one.tier_E_A
