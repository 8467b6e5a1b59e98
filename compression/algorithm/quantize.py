"""Quantization of one layer: P1's randomized greedy stochastic rounding and round-to-nearest.

Ref: docs/method.md §1 [P1 §3.2, Lemma 8]. The grid is {0, ±M/k, …, ±M} with k = 2^(b−1) − 1 and M
taken once from the (already pruned) matrix before scoring: max|W| per layer or M_i per row.
Stochastic rounding to the two neighbouring grid points is unbiased, |t − w| ≤ M/k and
Var(t) = (M/k)² u(1−u) ≤ M²/(4k²). Greedy: one stable float64 sort of Var(t_ij)·E[ẑ_j²] over
the non-zero entries; the m = f·nnz smallest are put on the grid, the others stay float
"outliers" (f < 1). ``rtn`` rounds the same entries to the nearest grid point (deterministic).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from netshrink.compression.algorithm.one_thread import one_thread
from netshrink.compression.algorithm.prune import greedy_order
from netshrink.compression.algorithm.rng import uniform
from netshrink.compression.spec import QuantizeSpec

__all__ = ["QuantizeResult", "grid_step", "grouped_scale", "quantize_matrix"]


@dataclass
class QuantizeResult:
    """Ŵ after quantization. ``tier_E_A`` is None for round-to-nearest (a biased baseline)."""

    weight: torch.Tensor  # (n_out, n_in) float32 Ŵ (exactly the values the artifact holds)
    codes: np.ndarray  # (n_out, n_in) int8, |codes| <= k; 0 at outliers
    scale: np.ndarray  # (n_out,) or (1,) float32 step M/k (rounded up to a float32)
    outliers: np.ndarray | None  # (n_out, n_in) bool, entries kept as float (f < 1)
    # (n_out, n_in) float32 Var(t) of the rounded entries plus ``var_prior`` (the pruning stage's), summed
    # in float64 block by block and then rounded: no full-size float64 array (memory, issue 10)
    var: torch.Tensor
    M: np.ndarray  # (n_out,) float64 grid maximum per row (per-layer: M repeated)
    k: int
    f: float
    n_randomized: int
    tier_E_A: float | None


def grid_step(W: torch.Tensor, k: int, scale: str) -> tuple[torch.Tensor, np.ndarray]:
    """Per-row (or per-layer) step M/k as float64 values that are exact float32 numbers ≥ M/k.

    Rounding the step *up* to float32 keeps |w|/step ≤ k, and Ŵ = codes·step is then exactly what
    ``DequantizeLinear`` computes from the stored float32 scale. Returns (step (out,), M (out,)).

    max_j |w_ij| = max(max_j w_ij, −min_j w_ij), the same number (negation, max and min are exact;
    NaN propagates through both), read from W itself: no |W| temporary, which the former row blocks
    of ``_CHUNK`` entries made (8 MiB each in float64) and which cost 2-3x the two reductions on a
    4096×4096 matrix, more on a transposed view (the refit's, ``compensate.py``; issue 10).
    The final ``abs_`` makes an all-zero row's M +0, as |w| did. A W with no columns (a refit that
    dropped every input unit, ``compensate.py``) has M = 0, as an all-zero row.
    """
    if W.shape[1] == 0:  # amax over an empty dimension is an error in torch
        Mr = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)  # (out,)
    else:
        Mr = torch.maximum(W.amax(dim=1), W.amin(dim=1).neg()).abs_()  # (out,) max_j |w_ij|
    M = Mr if scale == "per_row" else Mr.max().expand(W.shape[0])  # (out,)
    M_np = M.cpu().numpy().astype(np.float64)
    step = M_np / k
    s32 = step.astype(np.float32)
    s32 = np.where(s32.astype(np.float64) < step, np.nextafter(s32, np.float32(np.inf)), s32)  # (out,)
    return torch.as_tensor(s32.astype(np.float64), device=W.device), M_np


def grouped_scale(W: torch.Tensor, bits: int) -> Literal["per_row", "per_layer"]:
    """Per-row or per-layer scale for a grouped/depthwise conv, whose rows are short (9 weights for a
    3×3 depthwise filter), so that a float32 scale per row is a large part of the storage (derived).

    Stochastic rounding's worst-case variance is step²/4 per entry (Lemma 8), so summed over the
    matrix it is n_in Σ_i M_i²/(4k²) with per-row scales and n_out n_in M²/(4k²) with one scale.
    Dropping the per-row scales raises that error by r_err = n_out·M²/Σ_i M_i² − 1 and saves
    r_bytes = 32/(n_in·bits + 32) of the layer's bytes; the per-layer scale is taken when
    r_err ≤ r_bytes (it costs less error than the bytes it saves, relatively). W: (out, in).
    """
    M2 = W.abs().max(dim=1).values.double() ** 2  # (out,)
    total = float(M2.sum())
    if total == 0.0:
        return "per_layer"
    r_err = W.shape[0] * float(M2.max()) / total - 1.0
    r_bytes = 32.0 / (W.shape[1] * bits + 32.0)
    return "per_layer" if r_err <= r_bytes else "per_row"


_CHUNK = 1 << 20  # entries per row block: the float64 temporaries stay small (8 MiB each)
_SUB = 1 << 18  # entries per sub-block of the elementwise passes: 2 MiB float64 scratch, cache-sized


class _Scratch:
    """One worker's float64 sub-block scratch: x (grid units), q (codes), v (Var(t)), t (0/1, 1 − frac),
    u (its sub-block's uniforms)."""

    def __init__(self, h: int, n_in: int, randomized: bool, dev: torch.device) -> None:
        self.x, self.q, self.v, self.t = (
            torch.empty(h, n_in, dtype=torch.float64, device=dev) for _ in range(4)
        )
        # (2, h·in) its sub-blocks' uniforms: one slot in use, the next round's drawn into the other
        self.u = torch.empty(2, h * n_in if randomized else 0, dtype=torch.float64, device=dev)


class _Buffers:
    """``quantize_matrix``'s scratch, allocated once per call and reused by every (sub-)block: a fresh
    8 MiB temporary per operation and block was a page-faulted mapping each time (1.1 GB of minor
    faults per 4096×4096 matrix in a compress run, about half its time), and the passes run over
    sub-blocks of ``_SUB`` entries, which stay in cache, not over the 8 MiB block (issue 10): 0.215
    vs 0.260 s per 4096×4096 matrix on 2 threads, and 18 MiB of scratch, not 49 (peak RSS).

    Each op runs on one torch thread (``one_thread``): on a loaded machine two threads' parallel
    region per op cost 3-4x more. The cores are used one level up instead: ``workers`` Python threads
    (the caller's torch thread count) take a round of consecutive sub-blocks, one each, with its own
    scratch (torch releases the GIL inside each op), and meet once per round, not once per op. The
    sub-blocks are ``_SUB / workers`` entries, so the scratch is the same size with any number of
    workers. ``python -m bench.quantize_threads`` (quiet 2-core machine, 2026-12-04 15:21 UTC, medians
    of 4): a 4096×4096 matrix 0.209 s with one worker, 0.145 s with two (weight only; 0.317 and
    0.231 s with Var(t) and codes). ``test_quantize`` checks that any number of workers gives the
    same bytes."""

    def __init__(self, W: torch.Tensor, bs: int, randomized: bool, with_var: bool, workers: int) -> None:
        n_in, dev, f64 = W.shape[1], W.device, torch.float64
        nb = min(bs, W.shape[0])  # rows per block
        self.rows = max(1, min(bs, _SUB // max(1, workers) // max(1, n_in)))  # rows per sub-block
        self.workers = max(1, min(workers, -(-nb // self.rows)))  # no more workers than sub-blocks
        self.scratch = [_Scratch(self.rows, n_in, randomized, dev) for _ in range(self.workers)]
        self.prod = torch.empty(nb if randomized and with_var else 0, n_in, dtype=f64, device=dev)  # (b, in)


def _scaled_grid_step(
    W: torch.Tensor, c: torch.Tensor, k: int, scale: str
) -> tuple[torch.Tensor, np.ndarray, int]:
    """``grid_step`` and the non-zero count of the float64 matrix W·c (c (in,) per column), from row
    blocks of the product in one scratch buffer: max_j |fl(w_ij c_j)| per row and
    ``count_nonzero(W·c)``, the same numbers as on W·c made whole. Returns (step, M, nnz)."""
    Mr = torch.empty(W.shape[0], dtype=torch.float64, device=W.device)  # (out,)
    blocks = _rows(W)
    x = torch.empty(min(blocks.step, W.shape[0]), W.shape[1], dtype=torch.float64, device=W.device)  # (b, in)
    nnz = 0
    for r in blocks:
        xb = x[: min(blocks.step, W.shape[0] - r)].copy_(W[r : r + blocks.step]).mul_(c)  # (b, in)
        Mr[r : r + xb.shape[0]] = torch.maximum(xb.amax(dim=1), xb.amin(dim=1).neg())
        nnz += int(torch.count_nonzero(xb))
    return (*grid_step(Mr.abs_()[:, None], k, scale), nnz)


def _rows(W: torch.Tensor) -> range:
    """Start rows of the row blocks of about ``_CHUNK`` entries."""
    return range(0, W.shape[0], max(1, _CHUNK // max(1, W.shape[1])))


def quantize_matrix(
    W: torch.Tensor,
    energy: np.ndarray | None,
    col_energy: np.ndarray | None,
    spec: QuantizeSpec,
    gen: torch.Generator,
    *,
    positions: int = 1,
    var_prior: torch.Tensor | None = None,
    weight_only: bool = False,
    col_scale: np.ndarray | None = None,
) -> QuantizeResult:
    """Quantize the (pruned) matrix ``W`` (out, in), float32 or float64. ``energy`` ((1, in) or (out, in))
    ranks the entries (E[ẑ_j²], or the output-aware sensitivity); ``col_energy`` (in,) or (out, in)
    (grouped convs) gives tier E.

    Rows are processed in blocks of about ``_CHUNK`` entries (float64 arithmetic in each block), so
    no full-size float64 temporary exists besides ``var``. The uniforms are drawn block by block in
    row order from the one CPU stream, which torch consumes in order: the draws equal one draw of
    ``W.numel()`` numbers, so the bytes do not depend on the block size (a test checks).
    Inside a block the elementwise passes run over sub-blocks of ``_SUB`` entries into scratch
    buffers allocated once (``_Buffers``): elementwise, so the same numbers; Σ Var(t)·E[ẑ_j²] is still
    one reduction per block. With f = 1 (the default) every non-zero entry goes on the grid: no
    order, no selection mask, and one pass per sub-block computes Var(t), the codes and Ŵ together
    (zeros round to 0 with Var 0, so masking them would change nothing). ``var_prior`` (out, in)
    float64, the pruning stage's Var, is added to each block's Var(t) in float64 before the block is
    stored as float32 (the same values as summing whole float64 arrays and casting once).
    ``weight_only``: Ŵ alone, the same bytes (the same uniforms, divisions, floors, comparisons and
    clamps, in the same blocks); Var(t), the codes and tier E are not made (``var`` and ``codes``
    come back empty, ``tier_E_A`` None): the held-back rule's plain draw, which only its Ŵ judges
    and which rarely ships (algorithm/layer_held_back.py). It reads ``energy`` only to select the
    entries of f < 1 and ``col_energy`` never: both may then be None where f = 1 (no statistics of
    the layer's input needed, issue 11).
    ``col_scale`` (in,) float64, f = 1 only: quantize W's columns times it, the same bytes as for the
    float64 matrix ``W.double() * col_scale`` (each entry is that one product, made block by block into
    scratch): a pruning stage's group draw (``prune_layer(with_weight=False).column_scale``) without
    its (out, in) float64 copy (issue 10).
    """
    k = spec.levels
    c = (
        None if col_scale is None else torch.as_tensor(col_scale, dtype=torch.float64, device=W.device)
    )  # (in,)
    if c is not None and spec.fraction != 1.0:
        raise ValueError("col_scale is for f = 1 (every non-zero entry on the grid)")
    if c is None:
        step, M = grid_step(W, k, spec.scale)  # (out,)
        nnz = int(torch.count_nonzero(W))  # zeros are on the grid already
    else:
        step, M, nnz = _scaled_grid_step(W, c, k, spec.scale)
    safe = torch.where(step > 0, step, torch.ones_like(step))[:, None]  # (out, 1); a zero row is all 0
    m = round(spec.fraction * nnz)
    blocks = _rows(W)
    bs = blocks.step
    sel_t: torch.Tensor | None = None  # (out, in) bool, the entries put on the grid (None: every non-zero)
    outl: np.ndarray | None = None  # (out, in) bool, non-zero entries left as float (f < 1)
    if m < nnz:
        assert energy is not None, "f < 1 ranks the entries by their energy"
        sel_t, outl = _select(W, energy, safe, m, blocks)
    randomized = spec.method == "randomized_greedy"
    full = (0,) if weight_only else W.shape  # weight_only: no Var(t), no codes
    var = torch.empty(full, dtype=torch.float32, device=W.device)  # (out, in) Var(t) = (M/k)² u(1−u)
    codes_t = torch.empty(full, dtype=torch.int8, device=W.device)  # (out, in)
    Wq = torch.empty(W.shape, dtype=torch.float32, device=W.device)  # (out, in) Ŵ
    s32 = step.to(torch.float32)[:, None]  # (out, 1)
    safe2 = safe**2  # (out, 1)
    col = None  # tier E's E[ẑ_j²] (1 or out, in); weight_only reads none
    if not weight_only:
        assert col_energy is not None, "tier E needs the column energies"
        col = torch.as_tensor(col_energy, dtype=torch.float64, device=W.device)
        col = col if col.dim() == 2 else col[None, :]  # (1 or out, in)
    buf = _Buffers(
        W, bs, randomized, not weight_only, torch.get_num_threads() if W.device.type == "cpu" else 1
    )
    n_in = W.shape[1]

    def sub_block(s: int, e: int, o: int, u: torch.Tensor | None, sc: _Scratch) -> None:
        """Rows s..e−1 (row o of the block), their uniforms ``u`` (h, in): elementwise, so any
        worker gives the same numbers."""
        x, q, v, t = sc.x[: e - s], sc.q[: e - s], sc.v[: e - s], sc.t[: e - s]  # (h, in) float64
        # (h, in) in grid units (float64), |x| <= k: w/step, or fl(fl(w·c)/step) with c, as on
        # W·c made whole. W is copied into the scratch first (exact for float32): an operator
        # of mixed dtypes allocates a cast temporary per call, a mapping faulted in each time
        x.copy_(W[s:e])
        if c is not None:
            x.mul_(c)
        x.div_(safe[s:e])
        if u is None:
            torch.round(x, out=q)  # round to nearest
            v.zero_()  # Var 0
        elif weight_only:  # Ŵ only: the same floor, fraction and comparison, no Var(t)
            torch.floor(x, out=q)  # (h, in)
            frac = x.sub_(q)  # (h, in) ∈ [0, 1)
            q.add_(torch.lt(u, frac, out=t))  # stochastic rounding (0/1 in float64)
        else:
            torch.floor(x, out=q)  # (h, in)
            frac = x.sub_(q)  # (h, in) ∈ [0, 1): rounds up with this probability
            torch.mul(safe2[s:e], frac, out=v)  # (h, in) float64 Var(t)
            v.mul_(torch.neg(frac, out=t).add_(1.0))  # · (1 − frac), the same IEEE ops
            if sel_t is not None:
                v.masked_fill_(~sel_t[s:e], 0.0)
            assert col is not None
            torch.mul(v, col if col.shape[0] == 1 else col[s:e], out=buf.prod[o : o + e - s])
            q.add_(torch.lt(u, frac, out=t))  # stochastic rounding (0/1 in float64)
        if not weight_only:
            var[s:e].copy_(v if var_prior is None else v.add_(var_prior[s:e]))  # (h, in) float32
        q.clamp_(-k, k)  # (h, in)
        if sel_t is not None:
            q.masked_fill_(~sel_t[s:e], 0.0)
        if not weight_only:
            codes_t[s:e].copy_(q)  # exact: |q| <= k <= 127
        Wq[s:e].copy_(q).mul_(s32[s:e])  # float32 codes·step (DequantizeLinear's), q's −0 kept

    w = buf.workers
    Round = list[tuple[int, int, int, _Scratch]]  # (first row, end row, row in the block, scratch) each
    rounds: list[tuple[int, int, Round]] = []  # (block start, block rows, one sub-block per worker)
    for r in blocks:
        nb = min(r + bs, W.shape[0]) - r
        subs = [(s, min(s + buf.rows, r + nb), s - r) for s in range(r, r + nb, buf.rows)]
        rounds += [
            (r, nb, [(*a, buf.scratch[j]) for j, a in enumerate(subs[i : i + w])])
            for i in range(0, len(subs), w)
        ]

    def draw(rnd: Round, slot: int) -> list[torch.Tensor | None]:
        """The round's uniforms, sub-block by sub-block in row order: the same stream as one draw."""
        return [
            uniform(gen, (e - s) * n_in, W.device, out=sc.u[slot, : (e - s) * n_in]).view(e - s, n_in)
            if randomized
            else None
            for s, e, _, sc in rnd
        ]

    A = 0.0
    pool = ThreadPoolExecutor(w - 1) if w > 1 else None  # the calling thread is worker 0
    try:
        us = draw(rounds[0][2], 0) if rounds else []
        for i, (r, nb, rnd) in enumerate(rounds):
            with one_thread():  # elementwise passes only (algorithm/one_thread.py); the sum below is not
                if pool is None:
                    for (s, e, o, sc), u in zip(rnd, us, strict=True):
                        sub_block(s, e, o, u, sc)
                    nxt = draw(rounds[i + 1][2], 0) if i + 1 < len(rounds) else []
                else:  # the others run theirs while this thread draws the next round's uniforms
                    jobs = [
                        pool.submit(sub_block, *a[:3], u, a[3]) for a, u in zip(rnd[1:], us[1:], strict=True)
                    ]
                    nxt = draw(rounds[i + 1][2], (i + 1) % 2) if i + 1 < len(rounds) else []
                    sub_block(*rnd[0][:3], us[0], rnd[0][3])
                    for job in jobs:
                        job.result()
            us = nxt
            if randomized and not weight_only and (i + 1 == len(rounds) or rounds[i + 1][0] != r):
                A += float(buf.prod[:nb].sum())  # the whole block's Σ Var(t)·E[ẑ_j²], one reduction as before
    finally:
        if pool is not None:
            pool.shutdown()
    if outl is not None and outl.any():
        outl_t = torch.from_numpy(outl).to(W.device)
        Wq[outl_t] = W[outl_t].to(torch.float32)
    scale = step.cpu().numpy().astype(np.float32)
    return QuantizeResult(
        weight=Wq,
        codes=codes_t.cpu().numpy(),
        scale=scale if spec.scale == "per_row" else scale[:1],
        outliers=outl if outl is not None and outl.any() else None,
        var=var,
        M=M,
        k=k,
        f=float(spec.fraction),
        n_randomized=int(m),
        tier_E_A=positions * A if randomized and not weight_only else None,
    )


def _select(
    W: torch.Tensor, energy: np.ndarray, safe: torch.Tensor, m: int, blocks: range
) -> tuple[torch.Tensor, np.ndarray]:
    """The m non-zero entries of lowest score Var(t_ij)·E[ẑ_j²] (one stable sort), as (on the grid,
    left as float outliers) masks, both (out, in) bool."""
    bs = blocks.step
    var = torch.empty(W.shape, dtype=torch.float64, device=W.device)  # (out, in) Var(t)
    for r in blocks:
        x = W[r : r + bs].to(torch.float64) / safe[r : r + bs]  # (b, in) in grid units
        frac = x.sub_(torch.floor(x))  # (b, in) u ∈ [0, 1)
        v = (safe[r : r + bs] ** 2) * frac
        var[r : r + bs] = v.mul_(1.0 - frac)
    elig = (W != 0).cpu().numpy().ravel()
    idx = np.flatnonzero(elig)
    sel = np.zeros(W.numel(), dtype=bool)
    if m:
        score = (var.cpu().numpy() * energy).ravel()[idx]  # Var(t_ij)·E[ẑ_j²]
        sel[idx[greedy_order(score)[:m]]] = True
        del score
    del idx, var
    outl = (elig & ~sel).reshape(W.shape)
    return torch.from_numpy(sel).to(W.device).reshape(W.shape), outl
