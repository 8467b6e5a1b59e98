"""The per-layer entry point: prune, then quantize, one layer, one draw.

Ref: docs/method.md §1 "Prune and quantize together" (derived): prune first with (f, p), then
stochastically round every surviving weight, including the 1/p-scaled ones, on a grid whose M is
taken from the pruned matrix. Both stages are unbiased given the previous one, so the variances add
and tier E is the sum of the two stages' exact expectations (docs/method.md §3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.algorithm.prune import PruneResult, prune_layer
from netshrink.compression.algorithm.quantize import grouped_scale, quantize_matrix
from netshrink.compression.algorithm.scores import LayerStats
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec, QuantizeSpec

__all__ = ["LayerDraw", "compress_layer"]


@dataclass
class LayerDraw:
    """One random draw of one layer, with everything the bounds and the report need.

    ``f``/``p``/``tau2`` describe the pruning stage (None without randomized pruning); ``k``,
    ``quant_fraction`` and ``M`` the quantization stage. ``tier_E_A`` is None when a stage is a
    deterministic baseline: its error is not zero-mean, so only tier W applies (docs/method.md §1).
    """

    compressed: CompressedWeight
    # (n_out, n_in) per-entry Var(t) of independently drawn entries, kept as float32 (memory, issue 10:
    # a draw is held while the next is drawn); tier_E_A is summed in float64 before the cast
    var: np.ndarray
    group_tau2: np.ndarray | None  # (n_groups,) τ² of randomized groups (structured), else None
    tier_E_A: float | None  # A_ℓ tier E: E_h E_x‖(W − Ŵ) ẑ‖² given ẑ (exact)
    f: float | None
    p: float | None
    k: int | None
    tau2: float | None
    expected_keep: float
    realized_keep: float
    n_randomized: int
    from_greedy_sort: bool  # False when the output-aware score chose the set (tier T drops f)
    quant_fraction: float | None = None
    M: np.ndarray | None = None  # (n_out,) grid maximum per row, from the pruned matrix
    prune_randomized: bool = False
    quant_randomized: bool = False
    granularity: str = "weight"
    shared_draw: str | None = None  # why tiers E/T/P do not apply (kept for callers; unset since coupled)
    # per randomized space of a fixed-count group draw: (units of this layer, τ²/(m−1)), group_prune.py
    group_joint: list[tuple[np.ndarray, float]] | None = None
    coupled: bool = False  # reads a group that a layer upstream reads too: docs/bounds-dag.md coupled rule
    group_draw: bool = False  # pruned by a network-wide dependency-group draw (group_prune.py)
    compensated: bool = False  # refit by algorithm/compensate.py: deterministic given the mask, tier W only
    # compensate: null's per-layer rule (algorithm/layer_held_back.py): refit kept?, held-back objectives
    refit_check: dict[str, Any] | None = None

    @property
    def randomized(self) -> bool:
        """True when every stage is P1's unbiased randomized rule (tiers E, T, P apply)."""
        return self.tier_E_A is not None

    def without_arrays(self) -> LayerDraw:
        """This draw without its per-entry arrays (Ŵ, codes, outliers, Var(t)), each now empty: what
        the report and the uncompensated twin read once the artifact is written (peak RSS, issue 10;
        ``NetworkDraw.without_arrays``). An array read after this fails (its shape is (0,))."""
        c = self.compressed

        def empty(a: np.ndarray) -> np.ndarray:
            return np.empty(0, dtype=a.dtype)

        slim = dataclasses.replace(
            c,
            weight=empty(c.weight),
            codes=None if c.codes is None else empty(c.codes),
            outliers=None if c.outliers is None else empty(c.outliers),
        )
        return dataclasses.replace(self, compressed=slim, var=empty(self.var))


def compress_layer(
    layer: Layer,
    stats: LayerStats,
    *,
    prune: PruneSpec | None,
    quantize: QuantizeSpec | None,
    keep: float,
    generator: torch.Generator,
    sensitivity: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    pruned: PruneResult | None = None,
) -> LayerDraw:
    """Compress ``layer`` once. ``sensitivity`` (n_out, n_in) = E_x[ẑ_j² g_i] switches both stages to
    the output-aware score (docs/method.md §3); for structured pruning an (n_groups,) array of
    E_x‖J W_g ẑ_g‖² is also accepted (then quantization keeps the layer-local score).
    Randomness: pruning draws first, then rounding, both from ``generator``.
    A grouped/depthwise conv asked for per-row scales gets them only when they pay for their bytes
    (``quantize.grouped_scale``). ``pruned`` replaces the pruning stage by a result drawn elsewhere
    (dependency groups shared by several layers, ``algorithm/group_prune.py``).
    """
    W = torch.as_tensor(layer.matrix, device=device)  # (out, in) float32, no copy on CPU
    var: torch.Tensor | None = None  # (out, in) Var(t) of the stages that ran (float32 once quantized)
    group_tau2: np.ndarray | None = None
    A: float | None = 0.0
    f = p = tau2 = None
    exp_keep = real_keep = 1.0
    n_rand = 0
    greedy = sensitivity is None
    dropped: np.ndarray | None = None
    joint = None
    p_rand = q_rand = False
    if pruned is not None:
        greedy = False
    if prune is not None:
        pr = pruned or prune_layer(
            layer, stats, prune, keep, generator, sensitivity=sensitivity, device=device
        )
        W, var, group_tau2, A = pr.weight, pr.var, pr.group_tau2, pr.tier_E_A
        f, p, tau2, exp_keep, real_keep = pr.f, pr.p, pr.tau2, pr.expected_keep, pr.realized_keep
        n_rand, dropped, p_rand = pr.m, pr.dropped_groups, pr.tier_E_A is not None
        joint = pr.group_joint
        del pr  # its float64 Var(t) lives on in ``var`` only
    codes = scale = outliers = M = None
    k = bits = None
    qf = None
    if (
        quantize is not None
        and layer.conv is not None
        and layer.conv.group != 1
        and quantize.scale == "per_row"
    ):
        quantize = dataclasses.replace(quantize, scale=grouped_scale(W, quantize.width))
    if quantize is not None:
        entrywise = sensitivity is not None and np.asarray(sensitivity).size == layer.n_out * layer.n_in
        energy = np.asarray(sensitivity, np.float64) if entrywise else stats.energy
        qr = quantize_matrix(
            W,
            energy.reshape(-1, layer.n_in),
            stats.col_energy,
            quantize,
            generator,
            positions=stats.positions,
            var_prior=var,
        )
        W, var = qr.weight, qr.var  # float32, the pruning stage's Var included
        codes, scale, outliers, M, k, bits, qf = (
            qr.codes,
            qr.scale,
            qr.outliers,
            qr.M,
            qr.k,
            quantize.width,
            qr.f,
        )
        A = None if (A is None or qr.tier_E_A is None) else A + qr.tier_E_A
        n_rand = n_rand if prune is not None else qr.n_randomized
        q_rand = qr.tier_E_A is not None
        del qr
    shape = layer.weight.shape
    var32 = None if var is None else var.to(torch.float32)  # the float64 Var(t) is freed below
    var = None
    cw = CompressedWeight(
        layer=layer.name,
        weight=W.to(torch.float32).cpu().numpy().reshape(shape),
        codes=None if codes is None else codes.reshape(shape),
        scale=scale,
        bits=bits,
        outliers=None if outliers is None else outliers.reshape(shape),
        dropped_inputs=dropped,
    )
    return LayerDraw(
        compressed=cw,
        var=(torch.zeros(W.shape) if var32 is None else var32).cpu().numpy(),  # float32
        group_tau2=group_tau2,
        tier_E_A=A,
        f=f,
        p=p,
        k=k,
        tau2=tau2,
        expected_keep=exp_keep,
        realized_keep=real_keep,
        n_randomized=n_rand,
        from_greedy_sort=greedy,
        quant_fraction=qf,
        M=M,
        prune_randomized=p_rand,
        quant_randomized=q_rand,
        granularity="weight" if prune is None else prune.granularity,
        group_joint=joint,
    )
