"""Error compensation for one layer: a ridge least-squares refit with GPTQ-style sequential rounding.

Refs: Hassibi & Stork, "Optimal Brain Surgeon" (1993, eq. 5: the update of the remaining weights when
one is removed); Frantar & Alistarh, "Optimal Brain Compression" (OBC, NeurIPS 2022, §3-4, the same
update applied row-wise to quantization); Frantar et al., "GPTQ" (ICLR 2023, Algorithm 1: one fixed
column order for all rows, a Cholesky factor instead of H⁻¹, lazy block updates, dampening λ = 1% of
the mean diagonal; its reference code runs in float32); Frantar & Alistarh, "SparseGPT" (ICML 2023,
Algorithm 1: a mask inside the same loop). docs/compensation.md states the method and which bound still holds.

The objective, on the fit split, is the dense layer's output given the COMPRESSED input (derived):

    min_V E‖y − V·x̂‖²,  y = [W b]·x,  x = [z; 1], x̂ = [ẑ; 1] (im2col columns for a conv).

With H = E[x̂ x̂ᵀ] and B = E[y x̂ᵀ] (out, n) it equals E‖y‖² − 2 tr(B Vᵀ) + tr(V H Vᵀ). Damped
(H_λ = H + λI), the kept columns K (the removed units' columns are 0 in every row, so they drop out)
and the reverse Cholesky factor H_λ,KK = R Rᵀ (R upper triangular, in processing order), it is

    E‖y‖² − ‖G‖² + ‖G − V_K R‖²,  G = B_K R⁻ᵀ   (eq. 1; ‖·‖ Frobenius; plus λ‖V_K‖², the damping).

Column c of V_K R is Σ_{j≤c} v_j R_jc, so eq. 1's last term is minimized column by column, in order:
v_c = (G_c − Σ_{j<c} v_j R_jc) / R_cc, rounded to the grid when the layer is quantized. Unrounded it
is the exact (ridge) least-squares refit V_K = G R⁻¹ = B_K H_λ,KK⁻¹ of the kept columns and the bias
(the bias column, through the constant input, takes the removed units' mean contribution: mean
replacement). Rounded it is GPTQ's loop: the same column order, and R = U⁻¹ for GPTQ's upper Cholesky
factor U of H_λ⁻¹, so v_c here is GPTQ's error-fed value of column c (GPTQ pushes (w − q)/U_cc·U_c,·
onto the later columns; this form sums the same terms when column c is reached). It needs neither
H⁻¹ nor the moments E[x x̂ᵀ] and E[x xᵀ]: y is the dense layer's output, so B = E[y x̂ᵀ] costs
S·n·n_out and no n×n matrix but H and R is formed. The sums run in blocks of ``BLOCK`` columns
(GPTQ's lazy batch): G_c − Σ_{j<i1} v_j R_jc for a whole block is one matrix product.

Precision: float32 throughout (as GPTQ's reference code), with H accumulated in float64 over
row chunks when the design matrix has more than ``_ROWS`` rows (a conv's im2col).
tests/compression/algorithm/test_compensate.py checks the refit against numpy's float64 lstsq.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from netshrink.compression.algorithm.one_thread import one_thread
from netshrink.compression.algorithm.quantize import grid_step
from netshrink.compression.algorithm.scores import im2col
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import QuantizeSpec

__all__ = ["Compensated", "Prepared", "compensate_layer", "dense_output", "design_matrix", "prepare"]

DAMP = 0.01  # GPTQ's percdamp: λ = DAMP · mean(diag H)
BLOCK = 128  # GPTQ's lazy-batch block of columns
_ROWS = 1 << 16  # design-matrix rows per moment chunk
_JITTER = 4  # Cholesky retries, λ ×10 each, when H + λI is not numerically positive definite in float32


@dataclass
class Compensated:
    """The compensated layer: Ŵ (float32, (out, in)), its codes/step when quantized, and the new bias."""

    weight: torch.Tensor  # (out, in) float32, exactly the values the artifact holds
    codes: np.ndarray | None  # (out, in) int8, |codes| <= k
    scale: np.ndarray | None  # (out,) or (1,) float32 step
    M: np.ndarray | None  # (out,) grid maximum per row
    bias: np.ndarray | None  # (out,) float32, None when the layer has no bias


def design_matrix(layer: Layer, Z: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of the im2col matrix: dense (S, n_in); conv (S·P, C·kh·kw)."""
    if layer.kind == "conv":
        assert layer.conv is not None
        cols = im2col(Z, layer.conv)  # (S, C·q, P)
        return cols.transpose(1, 2).reshape(-1, layer.n_in)  # (S·P, n_in)
    return Z.reshape(Z.shape[0], -1)  # (S, n_in)


@dataclass
class Prepared:
    """What the refit needs that depends only on the layer and its two inputs, not on mask or bits.

    A budget search refits the same layer, given the same upstream draw, for many settings of the
    layer itself; ``prepare`` once per (upstream draw, layer) and pass it to every such refit.
    """

    H: torch.Tensor  # (n, n) float32 E[x̂ x̂ᵀ] (undamped), n = n_in (+1 with a bias)
    B: torch.Tensor  # (out, n) float32 E[y x̂ᵀ], y = [W b] x the dense layer's output
    lam: float  # λ = DAMP · mean(diag H)

    @property
    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for t in (self.H, self.B))


def dense_output(layer: Layer, Z_dense: torch.Tensor) -> torch.Tensor | None:
    """y = [W b]·x (N, out) float32 on the design rows of z = ``Z_dense``, computed as ``prepare`` and
    the held-back objective compute it when the rows are one chunk (None when they are more).

    It depends on the dense input only, not on the candidate: a budget search computes it once per
    layer and passes it to every refit of that layer (``prepare(y=...)``), the same numbers."""
    Xd = design_matrix(layer, Z_dense)  # (N, n_in)
    if Xd.shape[0] > _ROWS:
        return None
    W = torch.as_tensor(layer.matrix, dtype=torch.float32, device=Z_dense.device)  # (out, in)
    y = Xd[0:_ROWS].to(torch.float32) @ W.T  # (N, out)
    if layer.bias is not None:
        y += torch.as_tensor(layer.bias, dtype=torch.float32, device=Z_dense.device)
    return y


def prepare(
    layer: Layer, Z: torch.Tensor, Z_dense: torch.Tensor, damp: float = DAMP, *, y: torch.Tensor | None = None
) -> Prepared:
    """H = E[x̂ x̂ᵀ] and B = E[y x̂ᵀ] for ``layer`` given ẑ = ``Z`` and z = ``Z_dense`` (row chunks).

    ``y``: ``dense_output(layer, Z_dense)`` when the caller already has it (one chunk only)."""
    dev = Z.device
    with_bias = layer.bias is not None
    W = torch.as_tensor(layer.matrix, dtype=torch.float32, device=dev)  # (out, in)
    b = None if not with_bias else torch.as_tensor(layer.bias, dtype=torch.float32, device=dev)  # (out,)
    X = design_matrix(layer, Z)  # (N, n_in)
    N, n = X.shape[0], layer.n_in + int(with_bias)
    # z's design rows only where y is made here (a conv's im2col of the dense input otherwise)
    Xd = design_matrix(layer, Z_dense) if N > _ROWS or y is None else X  # (N, n_in)

    def chunk(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = X[i : i + _ROWS].to(torch.float32)  # (r, n_in)
        y = Xd[i : i + _ROWS].to(torch.float32) @ W.T  # (r, out)
        if b is not None:
            y += b
            a = torch.cat([a, torch.ones(a.shape[0], 1, device=dev)], 1)  # (r, n)
        return a, y

    if N <= _ROWS and y is not None:  # one chunk, y given: only the design rows are made
        a = X.to(torch.float32)  # (N, n_in)
        if b is not None:
            a = torch.cat([a, torch.ones(a.shape[0], 1, device=dev)], 1)  # (N, n)
        H = a.T @ a  # (n, n) float32
        B = y.T @ a  # (out, n) float32
        del a
    elif N <= _ROWS:  # one chunk: the products are H and B (no zeros to add them to, no float64 copy)
        a, y = chunk(0)
        H = a.T @ a  # (n, n) float32
        B = y.T @ a  # (out, n) float32
        del a, y
    else:  # float64 sums over row chunks
        H = torch.zeros(n, n, dtype=torch.float64, device=dev)
        B = torch.zeros(layer.n_out, n, dtype=torch.float64, device=dev)
        for i in range(0, N, _ROWS):
            a, y = chunk(i)
            H += a.T @ a  # (n, n)
            B += y.T @ a  # (out, n)
            del a, y
    H = H.div_(N).to(torch.float32)
    B = B.div_(N).to(torch.float32)
    lam = damp * max(float(torch.diagonal(H).to(torch.float64).mean()), 1e-12)
    return Prepared(H, B, lam)


# a dense layer this wide, with dropped units and no cached moments, forms only its kept columns'
KEPT_MIN_INPUTS = 256  # H_KK and B_K (kept_moments.py); a narrower one costs little either way


def _reverse_cholesky(H: torch.Tensor, order: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Upper-triangular R with H_KK + λI = R Rᵀ, K = ``order`` (lower Cholesky of the reversed order).

    If float32 Cholesky fails (not numerically positive definite), λ becomes max(10λ, 10⁻⁵·mean
    diag H_KK), at most ``_JITTER`` times.
    """
    # (m, m) H_KK in reversed order, a copy (order None: all of H, one flip: the same values, no gathers)
    A = H.flip(0, 1) if order is None else H.index_select(0, order.flip(0)).index_select(1, order.flip(0))
    floor = 1e-5 * max(float(torch.diagonal(A).to(torch.float64).mean()), 1e-12)
    added = 0.0
    for _ in range(_JITTER + 1):
        A.diagonal().add_(lam - added)
        added = lam
        L, info = torch.linalg.cholesky_ex(A)  # (m, m) lower
        if int(info) == 0:
            del A
            return L.flip(0, 1)  # (m, m) upper
        del L
        lam = max(10.0 * lam, floor)
    raise FloatingPointError("H + λI is not positive definite in float32 even after the jitter")


def compensate_layer(
    layer: Layer,
    Z: torch.Tensor,
    Z_dense: torch.Tensor,
    *,
    kept: torch.Tensor | None,
    first: np.ndarray | None,
    quantize: QuantizeSpec | None,
    damp: float = DAMP,
    prepared: Prepared | None = None,
    y: torch.Tensor | None = None,
) -> Compensated:
    """Refit ``layer`` given its compressed input ``Z`` (ẑ) and dense input ``Z_dense`` (z), fit split.

    ``kept`` (out, in) bool: entries that may stay non-zero (None: all); ``first``: column indices
    removed for every row (dropped units), left out of the refit; ``quantize``: round kept entries on
    the b-bit grid (eq. 1 column by column, error fed forward), else keep them float. ``prepared``:
    ``prepare``'s result for these inputs, when the caller already has it (the budget search's cache);
    else ``y``: ``dense_output(layer, Z_dense)``, when the caller has that (``prepare``'s ``y``).
    """
    dev = Z.device
    n_out, n_in = layer.n_out, layer.n_in
    with_bias = layer.bias is not None
    removed = np.zeros(0, np.int64) if first is None else np.unique(np.asarray(first, np.int64))
    cols = np.setdiff1d(np.arange(n_in), removed)  # the kept input columns, natural order
    cols_t = torch.as_tensor(cols, device=dev)  # (mk,)
    order = torch.as_tensor(np.concatenate([cols, [n_in] if with_bias else []]).astype(np.int64), device=dev)
    mk = int(cols.size)  # weight columns refit; the bias column (when there is one) is last, index mk
    sel = order  # rows and columns of pr.H and pr.B read by the refit
    kept_only = layer.kind == "dense" and layer.n_in >= KEPT_MIN_INPUTS and int(Z.shape[0]) <= _ROWS
    if prepared is None and removed.size and kept_only:
        from netshrink.compression.algorithm.kept_moments import prepare_kept

        pr = prepare_kept(layer, Z, Z_dense, order, damp, y=y)  # H_KK, B_K only (kept_moments.py)
        sel = torch.arange(int(order.numel()), device=dev)  # (m,) already in ``order``
    else:
        pr = prepared if prepared is not None else prepare(layer, Z, Z_dense, damp, y=y)
    ident = bool(torch.equal(sel, torch.arange(int(pr.B.shape[1]), device=dev)))  # every column, in order
    R = _reverse_cholesky(pr.H, None if ident else sel, pr.lam)  # (m, m) upper, H_λ,KK = R Rᵀ
    Bt = (pr.B.clone() if ident else pr.B.index_select(1, sel)).T  # (m, out) B_Kᵀ copy, column-major
    if prepared is None:
        del pr  # its H and B are not needed again: free them before the solves
    # in place (the same LAPACK solve on the same column-major data): no third (m, out) matrix next
    # to R, Bt and the row-major Vt (peak RSS, issue 10: 4.3x -> 3.5x the layer's float32 bytes)
    torch.linalg.solve_triangular(R, Bt, upper=True, out=Bt)  # (m, out) Gᵀ = R⁻¹ B_Kᵀ
    Vt = Bt.contiguous()  # (m, out) row-major: a column of V is a contiguous row (``_sequential``)
    del Bt
    maskt = None  # (mk, out) entries forced to 0 inside the kept columns (an unstructured mask)
    if kept is not None:
        kk = kept.index_select(1, cols_t)  # (out, mk)
        maskt = None if bool(kk.all()) else (~kk).T.contiguous()
        del kk
    step = codest = M = scale = None
    k = 0
    if quantize is None and maskt is None:
        Vt = torch.linalg.solve_triangular(R.T, Vt, upper=False)  # (m, out) exact: Vᵀ = R⁻ᵀ Gᵀ
    else:
        if quantize is not None:
            k = quantize.levels
            Vs = torch.linalg.solve_triangular(R.T, Vt, upper=False)[:mk]  # (mk, out) unrounded Vᵀ
            if maskt is not None:
                Vs.masked_fill_(maskt, 0.0)
            step64, M = grid_step(Vs.T, k, quantize.scale)  # (out,) exact float32 values
            del Vs
            step = torch.where(step64 > 0, step64, torch.ones_like(step64)).to(torch.float32)  # (out,)
            codest = torch.zeros(mk, n_out, dtype=torch.int8, device=dev)  # (mk, out)
        _sequential(Vt, R, mk, step, k, codest, maskt)  # Gᵀ → Vᵀ in place
    del R
    What = torch.zeros(n_out, n_in, dtype=torch.float32, device=dev)  # (out, in)
    What.index_copy_(1, cols_t, Vt[:mk].T)
    codes = None
    if step is not None and codest is not None:
        full = torch.zeros(n_out, n_in, dtype=torch.int8, device=dev)  # (out, in)
        full.index_copy_(1, cols_t, codest.T)
        codes = full.cpu().numpy()
        sc = step.cpu().numpy()
        scale = sc if quantize is not None and quantize.scale == "per_row" else sc[:1]
    bias = None if not with_bias else Vt[mk].cpu().numpy().astype(np.float32)
    return Compensated(What, codes, scale, M, bias)


def _sequential(
    Vt: torch.Tensor,
    R: torch.Tensor,
    mk: int,
    step: torch.Tensor | None,
    k: int,
    codest: torch.Tensor | None,
    maskt: torch.Tensor | None,
) -> None:
    """Eq. 1 column by column: v_c = (G_c − Σ_{j<c} v_j R_jc)/R_cc, rounded/masked for c < ``mk``.

    In place on transposes (a column of V is a contiguous row): ``Vt`` holds Gᵀ (m, out) on entry and
    Vᵀ on return. GPTQ's lazy batch: the sum over earlier blocks is one product per block, the sum
    inside a block a rank-1 update per column. Fills ``codest`` (mk, out) when quantizing. R: (m, m).
    """
    m = Vt.shape[0]
    diag = torch.diagonal(R).tolist()
    for i1 in range(0, m, BLOCK):
        i2 = min(i1 + BLOCK, m)
        T = Vt[i1:i2]  # (b, out) G rows of this block; rows < i1 are final V rows
        if i1:
            T.addmm_(R[:i1, i1:i2].T, Vt[:i1], alpha=-1)  # − Σ_{j<i1} R_j,block v_j
        # one thread: a parallel region per column op costs more than the op (algorithm/one_thread.py)
        with one_thread(), torch.inference_mode():  # no autograd bookkeeping per op (same numbers)
            (_block_cpu if T.device.type == "cpu" else _block)(T, R, i1, i2, diag, mk, step, k, codest, maskt)


def _block(
    T: torch.Tensor,
    R: torch.Tensor,
    i1: int,
    i2: int,
    diag: list[float],
    mk: int,
    step: torch.Tensor | None,
    k: int,
    codest: torch.Tensor | None,
    maskt: torch.Tensor | None,
) -> None:
    """Columns i1..i2 − 1 of eq. 1 in order, in place: T (b, out) holds G_c − Σ_{j<i1} R_jc v_j.

    Per column, the fewest tensor ops that give the same float32 numbers (its cost is the ops'
    overhead: a column has ``out`` entries): the rows of T and of R's block are views made once, the
    codes are rounded into a block buffer ``Q`` in place (w/step, round, clamp, mask) and cast to
    int8 once per block, and the rounded value is written back as Q·step. The arithmetic, and its
    order, is the former one's: the same division, rounding, clamp, product and rank-1 update.
    """
    quant = step is not None and codest is not None
    rows = T.unbind(0)  # (out,) views, one per column of the block
    Rrows = R[i1:i2, i1:i2].unbind(0)  # (b,) views: row c of R inside the block
    n_q = max(0, min(i2, mk) - i1)  # columns of this block that are weight columns (not the bias)
    Q = torch.empty(n_q, T.shape[1], dtype=T.dtype, device=T.device) if quant and n_q else None  # (n_q, out)
    for i in range(i2 - i1):
        c = i1 + i
        w = rows[i].div_(diag[c])  # (out,) the error-fed value of column c
        if c < mk:
            if Q is not None and step is not None:
                q = Q[i]  # (out,) this column's codes, as floats
                torch.div(w, step, out=q).round_().clamp_(-k, k)  # integer codes
                if maskt is not None:
                    q.masked_fill_(maskt[c], 0.0)
                torch.mul(q, step, out=w)  # (out,) exactly codes·step in float32
            elif maskt is not None:
                w.masked_fill_(maskt[c], 0.0)
        if i + 1 < i2 - i1:
            T[i + 1 :].addr_(Rrows[i][i + 1 :], w, alpha=-1)  # (b − i − 1, out)
    if Q is not None and codest is not None:
        codest[i1 : i1 + n_q] = Q.to(torch.int8)  # (n_q, out)


def _block_cpu(
    T: torch.Tensor,
    R: torch.Tensor,
    i1: int,
    i2: int,
    diag: list[float],
    mk: int,
    step: torch.Tensor | None,
    k: int,
    codest: torch.Tensor | None,
    maskt: torch.Tensor | None,
) -> None:
    """``_block`` on the CPU, the same float32 numbers bit for bit: the per-column elementwise ops
    (the division by R_cc, w/step, rounding half to even, the clamp, the mask, codes·step) run as
    numpy ufuncs on the same memory, a fraction of a torch op's dispatch cost on a column of
    ``out`` entries (the budget search refits a layer per candidate: issue 11, its cost). Each is
    one IEEE operation per entry in both libraries. The rank-1 update stays torch's ``addr_``: its
    kernel may fuse the multiply-add, which numpy cannot reproduce. Checked against ``_block`` in
    tests/compression/algorithm/test_compensate.py."""
    quant = step is not None and codest is not None
    rows = T.unbind(0)  # (out,) torch views, one per column of the block (for ``addr_``)
    Tn = T.numpy()  # (b, out) the same memory
    Rrows = R[i1:i2, i1:i2].unbind(0)  # (b,) views: row c of R inside the block
    n_q = max(0, min(i2, mk) - i1)  # columns of this block that are weight columns (not the bias)
    Q = np.empty((n_q, Tn.shape[1]), dtype=Tn.dtype) if quant and n_q else None  # (n_q, out)
    stepn = None if step is None else step.numpy()  # (out,)
    maskn = None if maskt is None else maskt.numpy()  # (mk, out) bool
    lo, hi = Tn.dtype.type(-k), Tn.dtype.type(k)
    dg = np.asarray(diag[i1:i2], dtype=Tn.dtype)  # (b,) R_cc: float32 values, exact
    for i in range(i2 - i1):
        c = i1 + i
        w = Tn[i]  # (out,)
        np.divide(w, dg[i], out=w)  # the error-fed value of column c
        if c < mk:
            if Q is not None and stepn is not None:
                q = Q[i]  # (out,) this column's codes, as floats
                np.divide(w, stepn, out=q)
                np.rint(q, out=q)  # half to even, as torch.round
                np.maximum(q, lo, out=q)
                np.minimum(q, hi, out=q)  # torch's clamp_(-k, k)
                if maskn is not None:
                    np.copyto(q, 0.0, where=maskn[c])
                np.multiply(q, stepn, out=w)  # (out,) exactly codes·step in float32
            elif maskn is not None:
                np.copyto(w, 0.0, where=maskn[c])
        if i + 1 < i2 - i1:
            T[i + 1 :].addr_(Rrows[i][i + 1 :], rows[i], alpha=-1)  # (b − i − 1, out)
    if Q is not None and codest is not None:
        codest[i1 : i1 + n_q] = torch.from_numpy(Q).to(torch.int8)  # (n_q, out)
