"""The four bound tiers of A_ℓ and their propagation through the network.

Ref: docs/method.md §3 [P1 Lemma 17, Prop 18–20]. With A_ℓ = E_h E_x‖(W_ℓ − Ŵ_ℓ) ẑ_{ℓ−1}‖²:
- step bound      L²(σ² ê_{ℓ−1} + A_ℓ), with the measured upstream error ê_{ℓ−1};
- cumulative      B_ℓ = L²(σ² B_{ℓ−1} + A_ℓ), B_0 = 0; B_m bounds E‖Φ − Φ̂‖².
Tier W (worst case, any method, every draw) uses the root form √B_ℓ = L(σ√B_{ℓ−1} + √A_ℓ).
Tiers: E (exact given ẑ), T (weight-aggregated), P (P1's constant, "paper bound"), W (worst case).
Every σ here is a certified UPPER bound (``certificate.SigmaBound``): Ritz estimates approach σ from
below and would not make the tiers bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.scores import LayerStats, column_groups, column_sq_sums
from netshrink.compression.bounds.certificate import SigmaBound, sigma_bound
from netshrink.compression.bounds.coupled import CoupledTerms, propagate_coupled
from netshrink.compression.graph.network import Layer

__all__ = [
    "TIERS",
    "TierBounds",
    "TierValue",
    "layer_bounds",
    "propagate",
    "propagate_root",
    "tier_P",
    "tier_T",
    "tier_W",
    "tier_W_bound",
    "windows_per_pixel",
]

TIERS = ("E", "T", "P", "W")


@dataclass
class TierValue:
    """One tier at one layer: A_ℓ, the step bound and the cumulative B_ℓ (None = not covered)."""

    A: float | None
    step: float | None
    cumulative: float | None
    reason: str | None = None


@dataclass
class TierBounds:
    """All tiers of one layer plus the inputs they were computed from (docs/method.md §3)."""

    layer: str
    sigma: float
    L: float
    nu: float  # max|W|
    Z2: float  # E_x‖ẑ_{ℓ−1}‖² (times windows_per_pixel for a conv in tiers T and P)
    windows: int
    n_in: int
    n_out: int
    tau2: float | None
    k: int | None
    f: float | None
    compressed: bool
    tiers: dict[str, TierValue] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sigma_bound: SigmaBound | None = None  # how ``sigma`` was certified
    delta_bound: SigmaBound | None = None  # ‖W − Ŵ‖_op's certificate (tier W)
    coupled: CoupledTerms | None = None  # the coupled rule's σ̄, A_dense, A_q (docs/bounds-dag.md)


def propagate(L: float, sigma: float, A: float | None, prev: float | None) -> float | None:
    """L²(σ² prev + A): the step bound (prev = measured ê_{ℓ−1}) or cumulative B_ℓ (prev = B_{ℓ−1})."""
    if A is None or prev is None:
        return None
    return L * L * (sigma * sigma * prev + A)


def propagate_root(L: float, sigma: float, A: float | None, prev: float | None) -> float | None:
    """(L(σ√prev + √A))²: tier W's root form, valid for biased (deterministic) errors too."""
    if A is None or prev is None:
        return None
    return (L * (sigma * math.sqrt(prev) + math.sqrt(A))) ** 2


def windows_per_pixel(layer: Layer) -> int:
    """How many conv windows one input pixel falls in: ⌈kh·g_h/sh⌉·⌈kw·g_w/sw⌉ with g = gcd(d, s).

    Equals docs/method.md's ⌈kh/sh⌉·⌈kw/sw⌉ at dilation 1; the gcd covers dilated kernels, where
    offsets u with u·d ≡ x (mod s) repeat every s/gcd(d, s) taps. 1 for dense layers.
    """
    g = layer.conv  # None exactly for dense layers (graph.py)
    if g is None:
        return 1
    return math.prod(map(_windows_1d, g.kernel_shape, g.strides, g.dilations))


def _windows_1d(k: int, s: int, d: int) -> int:
    """Windows one input row falls in along one axis: ⌈k·gcd(d, s)/s⌉ (≤ k since gcd(d, s) ≤ s)."""
    return -(-k * math.gcd(d, s) // s)


def _max_group_op2(layer: Layer, granularity: str) -> float:
    """max_j ‖W[:, j]‖² (entries), or max_g ‖W_g‖²_op over groups of columns (neurons, channels)."""
    if granularity == "weight":
        return float(column_sq_sums(layer.matrix).max())  # no float64 copies (memory, issue 10)
    gid = column_groups(layer)
    G = int(gid[-1]) + 1
    if gid.size == G:  # one column per group: the same norms, without float64 copies
        return float(column_sq_sums(layer.matrix).max())
    W = np.asarray(layer.matrix, np.float64)  # (out, in)
    blocks = W.reshape(W.shape[0], G, gid.size // G).transpose(1, 0, 2)  # (G, out, g)
    return float((np.linalg.norm(blocks, 2, axis=(1, 2)) ** 2).max())  # max_g σ_max(W_g)²


def _group_width(layer: Layer, granularity: str) -> int:
    """Columns per draw: 1 for weights and single-column neurons; H·W behind a Flatten; kh·kw for a conv."""
    if granularity == "weight":
        return 1
    gid = column_groups(layer)
    return gid.size // (int(gid[-1]) + 1)


def tier_T(layer: Layer, draw: LayerDraw, stats: LayerStats) -> float | None:
    """Tier T (derived): pruning f τ² max_j‖W[:,j]‖² Z², quantization f Σ_i M_i²/(4k²) Z², summed.

    Z² is multiplied by the windows per pixel for a conv; the factor f is dropped when the set was
    not chosen by the greedy sort of the same scores. A fixed-count group draw (Cov −τ²/(m−1) within
    a space) multiplies the pruning term by max m/(m−1), the factor that its tier E can reach
    (docs/bounds-dag.md "Fixed-count draws"). None for the baselines. T ≥ E always.
    """
    if not draw.randomized:
        return None
    Z2 = stats.z2 * windows_per_pixel(layer)
    A = 0.0
    if draw.prune_randomized and draw.tau2 is not None and draw.f is not None:
        f = draw.f if draw.from_greedy_sort else 1.0
        gt = draw.group_tau2
        joint = draw.group_joint or []  # set only with group_tau2 (group_prune.prune_units)
        infl = max((1.0 + c / float(gt[idx[0]]) for idx, c in joint), default=1.0)  # type: ignore[index]
        A = f * infl * draw.tau2 * _max_group_op2(layer, draw.granularity) * Z2
    if draw.quant_randomized and draw.M is not None and draw.k is not None:
        fq = (draw.quant_fraction or 1.0) if draw.from_greedy_sort else 1.0
        A += fq * float((draw.M**2).sum()) / (4.0 * draw.k**2) * Z2
    return A


def tier_P(layer: Layer, draw: LayerDraw, stats: LayerStats) -> tuple[float | None, str | None]:
    """P1's constant (Prop 18–20): 2f Z² τ² ν² n_out / (1−f), τ² = (1−p)/p or 1/k². "Paper bound".

    Undefined at f = 1 (returns None with the reason), and for the baselines. Not a bound for draws of
    groups of several columns (conv channels, Flatten→Gemm blocks): None with the reason there; for
    single weights or single columns P ≥ T since max_j‖W[:,j]‖² ≤ n_out·ν² and 2/(1−f) ≥ 1.
    """
    if not draw.randomized:
        return None, "baselines carry only tier W"
    Z2 = stats.z2 * windows_per_pixel(layer)
    n_out = layer.n_out
    A = 0.0
    if draw.prune_randomized and draw.tau2 is not None and draw.f is not None:
        if draw.f >= 1.0:
            return None, "P1's constant 2f/(1-f) is undefined at f = 1 (pruning)"
        width = _group_width(layer, draw.granularity)
        if width > 1:
            return None, (
                f"P1's constant is not a bound for draws of groups of {width} columns (one draw per "
                "neuron/channel block): a block's ‖W_g‖²_op can exceed n_out·ν², so P could sit below E"
            )
        nu = float(np.abs(layer.matrix).max())
        A = 2 * draw.f * Z2 * draw.tau2 * nu**2 * n_out / (1 - draw.f)
    if draw.quant_randomized and draw.M is not None and draw.k is not None:
        fq = draw.quant_fraction  # None: not recorded, taken as f = 1
        if fq is None or fq >= 1.0:
            return None, "P1's constant 2f/(1-f) is undefined at f = 1 (quantization)"
        A += 2 * fq * Z2 * float(draw.M.max()) ** 2 * n_out / (draw.k**2 * (1 - fq))
    return A, None


def tier_W(
    layer: Layer, draw: LayerDraw, stats: LayerStats, input_hw: tuple[int, int] | None = None
) -> float:
    """Tier W (derived): ‖W − Ŵ‖²_op · E_x‖ẑ‖², for every draw and the baselines (root form)."""
    return tier_W_bound(layer, draw, stats, input_hw)[0]


def tier_W_bound(
    layer: Layer, draw: LayerDraw, stats: LayerStats, input_hw: tuple[int, int] | None = None
) -> tuple[float, SigmaBound]:
    """Tier W's A_ℓ with the certificate of ‖W − Ŵ‖_op it used (an upper bound, see ``certificate``).

    A compensated layer also changes its bias by Δb, added at each of the P output positions: by
    Minkowski's inequality in L²(x), √A ≤ ‖W − Ŵ‖_op √E_x‖ẑ‖² + √P ‖Δb‖ (docs/compensation.md).
    """
    # float32 for dense layers (half the memory and traffic; the subtraction's rounding, ≤ u‖Δ‖_F, is
    # inside the certificate's rounding margin), float64 for convs.
    dt = np.float32 if layer.kind == "dense" else np.float64
    # (out, in, ...); one ufunc call casts in buffered blocks: no copies of W and Ŵ next to Δ (issue 10)
    delta = np.subtract(layer.weight, draw.compressed.weight, dtype=dt)
    cert = sigma_bound(layer, input_hw, weight=delta)
    del delta
    root = cert.value * math.sqrt(stats.z2)
    b_hat = draw.compressed.bias
    if b_hat is not None and layer.bias is not None:
        db = np.subtract(b_hat, layer.bias, dtype=np.float64)  # (out,), exact for float32 biases
        root += math.sqrt(stats.positions) * float(np.linalg.norm(db))
    return root**2, cert


def layer_bounds(
    layer: Layer,
    stats: LayerStats | None,
    draw: LayerDraw | None,
    *,
    sigma: float,
    measured_prev: float,
    prev: TierBounds | None,
    input_hw: tuple[int, int] | None = None,
    sigma_cert: SigmaBound | None = None,
    coupled: CoupledTerms | None = None,
) -> TierBounds:
    """All tiers for one layer. A layer that is not compressed (``draw`` None) propagates with A = 0.

    ``measured_prev`` is the measured upstream error ê_{ℓ−1}; ``prev`` the previous layer's bounds
    (None for the first layer: B_0 = 0). ``sigma`` must be an upper bound on ‖W‖_op; ``sigma_cert``
    says how it was certified (recorded in the report). ``coupled`` (a layer whose group draw also
    reaches its input) switches tiers E and T to the coupled rule, ``bounds.coupled``. Ref:
    docs/method.md §3, docs/bounds-dag.md.
    """
    L = float(layer.lipschitz)
    tb = TierBounds(
        layer=layer.name,
        sigma=sigma,
        L=L,
        nu=float(np.abs(layer.weight).max()),
        Z2=0.0 if stats is None else stats.z2 * windows_per_pixel(layer),
        windows=windows_per_pixel(layer),
        n_in=layer.n_in,
        n_out=layer.n_out,
        tau2=None if draw is None else draw.tau2,
        k=None if draw is None else draw.k,
        f=None if draw is None else draw.f,
        compressed=draw is not None,
        sigma_bound=sigma_cert,
    )
    A: dict[str, float | None] = dict.fromkeys(TIERS, 0.0)
    reasons: dict[str, str | None] = dict.fromkeys(TIERS)
    if draw is not None:
        assert stats is not None, "a compressed layer needs its input statistics"
        A["E"] = draw.tier_E_A
        A["T"] = tier_T(layer, draw, stats)
        A["P"], reasons["P"] = tier_P(layer, draw, stats)
        if draw.compensated:
            reasons["E"] = reasons["T"] = reasons["P"] = (
                "compensated (refit on the fit split): not zero-mean, only tier W applies"
            )
        elif draw.tier_E_A is None:
            reasons["E"] = reasons["T"] = "deterministic baseline: not zero-mean, only tier W applies"
        if draw.group_draw and A["P"] is not None:
            A["P"], reasons["P"] = None, "P1's constant is for its per-layer rule, not dependency-group draws"
        if draw.shared_draw is not None:
            for t in ("E", "T", "P"):
                A[t], reasons[t] = None, draw.shared_draw
        if draw.coupled and draw.shared_draw is None:
            if coupled is None:
                not_computed = "coupled group draw: the coupled rule's terms were not computed"
                for t in ("E", "T"):
                    if A[t] is not None:  # a tier already null (a baseline) keeps its own reason
                        A[t], reasons[t] = None, not_computed
            else:
                tb.coupled = coupled
                for t in ("E", "T"):
                    A[t] = coupled.A[t] if A[t] is not None else None
        try:
            A["W"], tb.delta_bound = tier_W_bound(layer, draw, stats, input_hw)
        except ValueError as exc:
            A["W"], reasons["W"] = None, str(exc)
        if layer.kind == "conv" and A["P"] is not None:
            tb.notes.append("P: outside P1's assumptions (P1 proves it for stride-1 circular convolutions)")
    for t in TIERS:
        before = 0.0 if prev is None else prev.tiers[t].cumulative
        if tb.coupled is not None and t in ("E", "T"):
            c = tb.coupled
            cum = None if A[t] is None else propagate_coupled(L, c, t, before)
            step = None if A[t] is None else propagate_coupled(L, c, t, measured_prev)
        else:
            prop = propagate_root if t == "W" else propagate
            cum, step = prop(L, sigma, A[t], before), prop(L, sigma, A[t], measured_prev)
        # a reason upstream comes with a null bound there, hence a null cumulative bound here
        reason = reasons[t] or (prev.tiers[t].reason if prev else None)
        tb.tiers[t] = TierValue(A[t], step, cum, reason)
    return tb
