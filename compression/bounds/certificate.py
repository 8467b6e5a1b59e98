"""Certified UPPER bounds on operator norms σ = ‖A‖_op, without full SVDs of large matrices.

The bound tiers propagate B_ℓ = L²(σ² B_{ℓ−1} + A_ℓ) and tier W's root form (docs/method.md §3): they
need σ from ABOVE. Power iteration and Lanczos approach σ from below (Ritz values are lower bounds),
so an estimate alone is not a certificate. ``SigmaBound`` records the value the tiers use, how it
holds, and its gap to the Ritz estimate. Candidates, the tightest rigorous one is taken:

- **exact**: a full float64 SVD when the matrix is small (m·n·min(m, n) ≤ ``EXACT_FLOPS``);
- **deterministic**: ‖A‖_F and √(‖A‖₁‖A‖_∞) (Schur's test; Horn & Johnson, Matrix Analysis, 5.6.P21),
  and, for a conv, the per-frequency bound max_ω σ_max(K̂(ω)) of ``opnorm.conv_op_norm_upper``;
- **probabilistic**: Lanczos (Golub–Kahan bidiagonalization, full reorthogonalization, float64) from a
  start drawn uniformly on the sphere. Kuczyński & Woźniakowski (1992), "Estimating the largest
  eigenvalue by the power and Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl.
  13(4):1094–1122, Thm 4.2: for a symmetric positive semi-definite n×n matrix M and k matrix-vector
  products, the Lanczos estimate ξ_k of λ_max(M) satisfies

      P( ξ_k < (1 − ε) λ_max ) ≤ 1.648 √n · exp(−(2k − 1)√ε).

  With M = AᵀA (λ_max = σ², n = n_in) and a failure probability η, solve for ε:
  √ε = ln(1.648√n / η)/(2k − 1); then σ ≤ θ/√(1 − ε) except for a set of start vectors of measure ≤ η.
  k is taken one less than the Krylov dimension (on the safe side of an off-by-one in the reading of
  "k matrix-vector products"). The start is seeded (reproducible bytes); η is the measure of the
  starts for which the certificate would fail, and the report folds the η of every bound it used into
  its failure probability next to δ. The products run in the weight's own precision (float32: no
  second dense copy, half the memory traffic) and an additive margin covers their rounding
  (``rounding_margin``); the Lanczos vectors are float64 with full reorthogonalization.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netshrink.compression.bounds.grouped import layer_op_norm
from netshrink.compression.bounds.opnorm import _conv, _conv_t, conv_op_norm_upper
from netshrink.compression.graph.network import ConvGeometry, Layer

__all__ = [
    "DEFAULT_FAILURE",
    "DEFAULT_STEPS",
    "EXACT_FLOPS",
    "SigmaBound",
    "combine",
    "conv_sigma",
    "dense_sigma",
    "kw_epsilon",
    "lanczos_top",
    "sigma_bound",
]

EXACT_FLOPS = 2**27  # m·n·min(m, n) at most: a full SVD (e.g. 512×512, or 4096×64) is cheap enough
DEFAULT_STEPS = 64  # Golub–Kahan steps (2 products each): the KW slack at n = 4096, η = 1e-4 is 0.6%
DEFAULT_FAILURE = 1e-4  # η per probabilistic certificate
ROUNDING_MARGIN = 1e-9  # relative, on the float64 Ritz value
_SEED = 20260101


@dataclass(frozen=True)
class SigmaBound:
    """An operator norm: ``value`` is a certified upper bound (what the tiers use).

    ``estimate`` is the Ritz / power-iteration value (≤ σ), or σ itself when ``holds == "exact"``.
    ``holds`` is "exact", "deterministic" or "probabilistic" (then with ``failure_probability`` η).
    """

    value: float
    estimate: float | None  # None: no Ritz run (grouped convs: the per-group FFT bound alone)
    method: str  # "svd" | "lanczos_kw" | "frobenius" | "schur" | "fft" | "fft_grouped" | "zero"
    holds: str
    failure_probability: float = 0.0
    steps: int | None = None

    @property
    def gap(self) -> float:
        """value / estimate − 1: how far the certificate sits above the Ritz estimate (0 if exact)."""
        if self.estimate is None:
            return math.inf
        if self.estimate <= 0.0:
            return 0.0 if self.value <= 0.0 else math.inf
        return self.value / self.estimate - 1.0

    def to_dict(self) -> dict[str, Any]:
        gap = self.gap
        return {
            "value": self.value,
            "estimate": self.estimate,
            "method": self.method,
            "holds": self.holds,
            "failure_probability": self.failure_probability,
            "gap": gap if math.isfinite(gap) else None,
            "steps": self.steps,
        }


def kw_epsilon(n: int, k: int, eta: float) -> float:
    """The ε of Kuczyński–Woźniakowski Thm 4.2 with 1.648√n·exp(−(2k−1)√ε) = η (may be ≥ 1: useless)."""
    if k < 1:
        return math.inf
    root = max(0.0, math.log(1.648 * math.sqrt(max(n, 1)) / eta)) / (2 * k - 1)
    return root * root


def lanczos_top(
    mv: Callable[[torch.Tensor], torch.Tensor],
    rmv: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    steps: int,
    *,
    seed: int = _SEED,
) -> tuple[float, int, bool]:
    """Golub–Kahan–Lanczos bidiagonalization of A (x ↦ Ax = ``mv``, y ↦ Aᵀy = ``rmv``), float64.

    Returns (θ, Krylov dimension j, invariant): θ = σ_max(B_j), the largest Ritz value of AᵀA on
    K_j(AᵀA, v₁) square-rooted; ``invariant`` when the Krylov space became invariant (θ is then exact
    for the component the start reaches). Full reorthogonalization of both bases (Golub & Van Loan,
    Matrix Computations, 4th ed., Alg. 10.4.1 with reorthogonalization).
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=g, dtype=torch.float64)  # (n,) uniform direction on the sphere
    v /= v.norm()
    u = mv(v)  # (m,)
    V = torch.zeros(steps, n, dtype=torch.float64)  # right Lanczos vectors, row i = v_{i+1}
    U = torch.zeros(steps, u.shape[0], dtype=torch.float64)  # left Lanczos vectors
    V[0] = v
    alphas: list[float] = []
    betas: list[float] = []
    invariant = False
    # The recurrence's −β_j u_j and −α_j v_j are the projections on the newest basis vector, which the
    # full reorthogonalization removes along with the older ones: each new vector is A v (or Aᵀu)
    # minus its projection on every basis vector so far.
    for j in range(steps):
        u = _reorth(u, U[:j])
        alpha = float(u.norm())
        alphas.append(alpha)
        if not alpha:  # u ∈ span(U): the Krylov space is invariant
            invariant = True
            break
        U[j] = u / alpha
        if j == steps - 1:
            break
        filled = j + 1  # rows of V so far
        r = _reorth(rmv(U[j]), V[:filled])  # (n,)
        beta = float(r.norm())
        floor = 1e-14 * max(alphas)  # a β below this is rounding noise: r ∈ span(V)
        if beta <= floor:  # pragma: no mutate (`<` differs only at β == floor exactly)
            invariant = True
            break
        betas.append(beta)
        V[filled] = r / beta
        u = mv(V[filled])
    j = len(alphas)
    B = np.diag(alphas)  # (j, j) upper bidiagonal: A V_j = U_j B_j
    B[np.arange(j - 1), np.arange(1, j)] = betas  # β_1 … β_{j−1} on the superdiagonal
    theta = float(np.linalg.norm(B, 2))  # σ_max(B_j)
    return theta, j, invariant


def _reorth(x: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """x minus its projection on the orthonormal rows of Q, twice (classical Gram–Schmidt, CGS2)."""
    # two passes leave x orthogonal to Q to working precision (Giraud et al. 2005, "twice is enough"):
    # a third changes x by rounding only
    for _ in range(2):  # pragma: no mutate
        x = x - Q.T @ (Q @ x)  # (n,)
    return x


ABS_BLOCK = 1 << 20  # entries of |W| per row block in ``_abs_sums``


def _abs_sums(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column and row sums of |W| (m, n) in float64, a block of rows at a time (no |W| copy: memory,
    issue 10). The same numbers as ``np.abs(W).sum(axis=0 / 1, dtype=np.float64)``: numpy adds the
    rows in order along axis 0 (so does the loop) and sums each row on its own along axis 1."""
    # the row block only bounds memory: any step ≥ 1 gives the same sums
    step = max(1, ABS_BLOCK // max(1, W.shape[1]))  # pragma: no mutate
    col = np.zeros(W.shape[1])  # (n,)
    rows = []
    for r in range(0, W.shape[0], step):
        A = np.abs(W[r : r + step])  # (b, n) in W's dtype
        rows.append(A.sum(axis=1, dtype=np.float64))  # (b,)
        for a in A:
            col += a  # float64 += float32 row: the row is widened exactly, then added in float64
    return col, np.concatenate(rows)


def _deterministic(W: np.ndarray) -> tuple[float, str, float]:
    """(min(‖W‖_F, √(‖W‖₁‖W‖_∞)), its name, ‖W‖_F), in W's own precision with float64 sums.

    Both are inflated by a relative 1e-5, far above the rounding of float32 pairwise sums.
    """
    col, row = _abs_sums(W)
    schur = float(np.sqrt(col.max() * row.max()))
    fro = float(np.linalg.norm(W.ravel()))
    fro, schur = fro * (1 + 1e-5), schur * (1 + 1e-5)
    value, name = min((fro, "frobenius"), (schur, "schur"))  # a tie goes to "frobenius"
    return value, name, fro


def combine(candidates: list[SigmaBound]) -> SigmaBound:
    """The tightest certificate (smallest value; ties go to the one without a failure probability)."""
    return min(candidates, key=lambda b: (b.value, b.failure_probability))


def dense_sigma(
    W: np.ndarray,
    *,
    steps: int = DEFAULT_STEPS,
    failure: float = DEFAULT_FAILURE,
    exact_flops: float = EXACT_FLOPS,
    seed: int = _SEED,
) -> SigmaBound:
    """A certified upper bound on ‖W‖_op of a 2-D matrix (m, n): exact when small, else the tightest
    of the deterministic norms and the Kuczyński–Woźniakowski Lanczos certificate."""
    W2 = np.asarray(W)  # (m, n)
    m, n = W2.shape
    if not np.any(W2):  # all zero, or empty
        return SigmaBound(0.0, 0.0, "zero", "exact")
    if float(m) * n * min(m, n) <= exact_flops:
        s = float(torch.linalg.matrix_norm(torch.from_numpy(W2).double(), ord=2))
        return SigmaBound(s, s, "svd", "exact")
    if W2.dtype != np.float32:  # float64 stays, anything else (float16, integers) is widened
        W2 = np.asarray(W2, dtype=np.float64)
    det, det_name, fro = _deterministic(W2)
    Wt = torch.from_numpy(np.ascontiguousarray(W2))  # (m, n): the weight itself, no copy
    # AᵀA is n×n; if m < n, run on Aᵀ instead (same σ, smaller Krylov vectors and a smaller √n in KW).
    dim = min(m, n)
    A = Wt if dim == n else Wt.T
    dt = Wt.dtype

    def mv(x: torch.Tensor) -> torch.Tensor:
        return (A @ x.to(dt)).double()

    def rmv(y: torch.Tensor) -> torch.Tensor:
        return (A.T @ y.to(dt)).double()

    theta, j, _ = lanczos_top(mv, rmv, dim, min(steps, dim), seed=seed)
    candidates = [SigmaBound(det, theta, det_name, "deterministic")]
    eps = kw_epsilon(dim, j - 1, failure)
    if eps < 1.0:
        kw = theta * (1.0 + ROUNDING_MARGIN) / math.sqrt(1.0 - eps) + rounding_margin(m, n, fro, dt)
        candidates.append(SigmaBound(kw, theta, "lanczos_kw", "probabilistic", failure, j))
    return combine(candidates)


def rounding_margin(m: int, n: int, fro: float, dtype: torch.dtype) -> float:
    """An additive cover for the products' rounding in ``dtype`` (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., §3.5): ‖fl(Wx) − Wx‖ ≤ γ_k ‖|W||x|‖ ≤ γ_k ‖W‖_F ‖x‖ with k the inner
    dimension, plus the rounding of x itself: (max(m, n) + 3)·u·‖W‖_F with u the unit roundoff."""
    u = float(torch.finfo(dtype).eps) / 2
    return (max(m, n) + 3) * u * fro


def conv_sigma(
    K: np.ndarray,
    geom: ConvGeometry,
    input_hw: tuple[int, int],
    *,
    steps: int = DEFAULT_STEPS,
    failure: float = DEFAULT_FAILURE,
    seed: int = _SEED,
) -> SigmaBound:
    """A certified upper bound on the conv map's norm (K: (c_out, c_in, kh, kw), inputs (c_in, H, W)).

    Candidates: the deterministic per-frequency bound (``conv_op_norm_upper``) and the KW Lanczos
    certificate on the map and its adjoint (n = c_in·H·W); the Ritz value is the estimate of both.
    """
    Kt = torch.from_numpy(np.ascontiguousarray(K, dtype=np.float64))  # (c_out, c_in, kh, kw)
    shape = (1, K.shape[1], *input_hw)
    n = int(np.prod(shape))

    if not np.any(K):
        return SigmaBound(0.0, 0.0, "zero", "exact")
    out_shape = _conv(torch.zeros(shape, dtype=torch.float64), Kt, geom).shape  # (1, c_out, H', W')

    def mv(x: torch.Tensor) -> torch.Tensor:
        return _conv(x.reshape(shape), Kt, geom).reshape(-1)

    def rmv(y: torch.Tensor) -> torch.Tensor:
        return _conv_t(y.reshape(out_shape), Kt, geom, input_hw).reshape(-1)

    theta, j, _ = lanczos_top(mv, rmv, n, min(steps, n), seed=seed)
    candidates = [SigmaBound(conv_op_norm_upper(K, geom, input_hw), theta, "fft", "deterministic")]
    eps = kw_epsilon(n, j - 1, failure)
    if eps < 1.0:
        kw = theta * (1.0 + ROUNDING_MARGIN) / math.sqrt(1.0 - eps)
        candidates.append(SigmaBound(kw, theta, "lanczos_kw", "probabilistic", failure, j))
    return combine(candidates)


def sigma_bound(
    layer: Layer, input_hw: tuple[int, int] | None = None, *, weight: np.ndarray | None = None
) -> SigmaBound:
    """The certified σ of ``layer`` (or of ``weight``, same shape, e.g. W − Ŵ for tier W)."""
    W = np.asarray(layer.weight if weight is None else weight)
    if layer.kind == "conv":
        assert layer.conv is not None  # a conv layer always carries its geometry
        if input_hw is None:
            raise ValueError(f"the operator norm of conv layer {layer.name!r} needs the input spatial size")
        if layer.conv.group > 1:  # block diagonal: max over groups of the per-frequency bound
            value = layer_op_norm(layer, input_hw, weight=W)
            return SigmaBound(value, None, "fft_grouped", "deterministic")
        return conv_sigma(W, layer.conv, input_hw)
    return dense_sigma(W)
