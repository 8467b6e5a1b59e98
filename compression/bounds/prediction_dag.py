"""The linearized prediction for channel-group draws on a DAG (derived, beyond P1; docs/method.md §3
"A prediction that is not a bound", docs/bounds-dag.md "Channel pruning by dependency groups").

Linearize Φ around the dense model in the group factors s (E s = 1). A group g is read by several
layers ℓ (a residual stream: every block's first conv and projection, the classifier), so

    Φ̂ − Φ ≈ Σ_g (s_g − 1) c_g,   c_g(x) = Σ_ℓ Σ_{u ∈ g at ℓ} J_ℓ(x) W_ℓ,u ẑ_ℓ,u(x)  ∈ R^K,

with J_ℓ the Jacobian of Φ at layer ℓ's pre-activation. Hence

    pred = E_x Σ_{g,h} Cov(s_g, s_h) ⟨c_g, c_h⟩ = Σ_{g,h} Cov_gh M_gh,   M_gh = E_x ⟨c_g(x), c_h(x)⟩,

with Cov_gg = τ²_g and, inside one channel space of a fixed-count draw, Cov_gh = −τ²/(m−1). The
per-layer prediction of ``prediction.predict_groups`` keeps only the diagonal of each layer's own
block; this one adds the cross-reader terms. ⟨δ_k, W_u ẑ_u⟩ for an ungrouped conv is
Σ_pixels ẑ_u ⊙ (Wᵀδ_k)_u (the input gradient of that layer alone), so no per-sample weight
gradient is formed. Always labelled a prediction, never a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch.nn.grad import conv2d_input

from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.scores import column_groups, pad_input
from netshrink.compression.bounds.prediction import zero_probe
from netshrink.compression.graph.network import Layer, Network

__all__ = ["group_covariance", "group_moments", "group_predictions"]


def _unit_contrib(layer: Layer, delta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(s, n_units): ⟨δ, W_u ẑ_u⟩ per sample and input unit (channel, or column block)."""
    W = torch.as_tensor(layer.matrix, dtype=torch.float64)  # (out, in)
    if layer.kind == "dense":
        per_col = (delta.reshape(delta.shape[0], -1) @ W) * z.reshape(z.shape[0], -1)  # (s, in)
        gid = torch.as_tensor(column_groups(layer))
        out = torch.zeros(per_col.shape[0], int(gid[-1]) + 1, dtype=torch.float64)  # (s, n_units)
        return out.index_add_(1, gid, per_col)
    assert layer.conv is not None and layer.conv.group == 1
    g = layer.conv
    zp = pad_input(z, g)  # (s, C, H+pads, W+pads)
    K = W.reshape(layer.weight.shape)  # (c_out, C, kh, kw)
    gin = conv2d_input(zp.shape, K, delta, stride=g.strides, dilation=g.dilations)  # like zp
    return (gin * zp).sum(dim=(2, 3))  # (s, C)


def group_moments(
    run: Callable[..., dict[str, torch.Tensor]],
    net: Network,
    X: torch.Tensor,
    units: Mapping[str, np.ndarray],
    n_groups: int,
    *,
    chunk: int = 256,  # pragma: no mutate (samples per pass: memory only)
) -> np.ndarray:
    """M (n_groups, n_groups) = E_x Σ_k c_g,k c_h,k at the dense model (module docstring).

    ``units`` maps each reader layer to its (n_units,) group ids (−1: not in a group); ``run`` is
    ``Executor.run`` (autograd through the graph, full support).
    """
    readers = [la for la in net.layers if la.name in units]
    M = torch.zeros(n_groups, n_groups, dtype=torch.float64)
    idx = {la.name: torch.as_tensor(units[la.name]) for la in readers}  # (n_units,) int64 group ids
    S = X.shape[0]
    for start in range(0, S, chunk):
        xb = X[start : start + chunk]
        holders: dict[str, torch.Tensor] = {}
        inject = {la.preact: zero_probe(holders, la.name) for la in readers}
        out = run(xb, capture=[la.input for la in readers], inject=inject)
        phi = out[net.logits].flatten(1)  # (s, K)
        zs = {la.name: out[la.input].detach().double().cpu() for la in readers}
        tensors = [holders[la.name] for la in readers]
        for k in range(phi.shape[1]):
            # the graph is kept after the last output too: freed with ``out`` below
            grads = torch.autograd.grad(phi[:, k].sum(), tensors, retain_graph=True)
            C = torch.zeros(xb.shape[0], n_groups, dtype=torch.float64)  # (s, G)
            for i, la in enumerate(readers):
                contrib = _unit_contrib(la, grads[i].detach().double().cpu(), zs[la.name])  # (s, n_units)
                g = idx[la.name]
                grouped = g >= 0  # units in no group (−1) add nothing
                C.index_add_(1, g[grouped], contrib[:, grouped])
            M += C.T @ C
        del out, phi, tensors, holders, zs
    return (M / S).numpy()


def group_covariance(net: Network, layers: Mapping[str, LayerDraw]) -> np.ndarray:
    """Cov(s) (G, G) of a drawn network's group factors, read back from its layer draws."""
    cg = net.channel_groups
    assert cg is not None
    cov = np.zeros((cg.n_groups, cg.n_groups))
    for name, d in layers.items():
        if d.group_tau2 is None or name not in cg.units:
            continue
        units = cg.units[name]
        for u in np.flatnonzero(np.asarray(d.group_tau2) > 0):
            cov[units[u], units[u]] = d.group_tau2[u]
        for uidx, c in d.group_joint or []:
            g = units[uidx]
            block = np.full((g.size, g.size), -c)
            np.fill_diagonal(block, cov[g, g])
            cov[np.ix_(g, g)] = block
    return cov


def group_predictions(net: Network, layers: Mapping[str, LayerDraw], M: np.ndarray) -> dict[str, float]:
    """tr(Cov M) split by group, each group's row reported at its first reader: layer -> share."""
    cg = net.channel_groups
    assert cg is not None
    per_group = (group_covariance(net, layers) * M).sum(axis=1)  # (G,)
    out: dict[str, float] = {}
    for g in np.flatnonzero(per_group != 0):
        first = cg.consumers[int(g)][0]
        out[first] = out.get(first, 0.0) + float(per_group[g])
    return out
