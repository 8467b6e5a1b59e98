"""Bound propagation through a DAG: residual Add, channel Concat, branches (derived).

Ref: docs/bounds-dag.md (the derivation), docs/method.md §3 (the chain recurrences it generalizes).
B_t bounds E‖t − t̂‖² for every tensor t up to Φ, visited in topological order, B = 0 at the input:

- layer ℓ (Gemm/MatMul/Conv, fresh zero-mean draw given its input): B_out = σ_ℓ² B_in + A_ℓ
  (tiers E, T, P; the cross term vanishes because E[Ŵ − W | ẑ] = 0), and tier W's root form
  √B_out = σ_ℓ √B_in + √A_ℓ (Minkowski; holds for every draw, biased or not);
- a layer whose channel-group draw also reaches its input (``coupled``): tiers E, T take the coupled
  rule B_out = (σ̄ √B_in + √A_dense)² + A_q (``bounds/coupled.py``);
- an elementwise, pooling or reshaping node with Lipschitz constant L: B_out = L² B_in;
- Add of two tensors: √B ≤ √B_a + √B_b (Minkowski in L²(draws × inputs); the branches share their
  upstream randomness, so no cross term can be dropped);
- Concat on channels: B = Σ_i B_i (the squared norm of a concatenation is the sum of the parts').
B_Φ bounds E‖Φ − Φ̂‖². A tier whose A_ℓ is None anywhere upstream is None downstream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from netshrink.compression.bounds.coupled import CoupledTerms, propagate_coupled
from netshrink.compression.graph.graph import lipschitz
from netshrink.compression.graph.graph_index import GraphIndex
from netshrink.compression.graph.network import Network

__all__ = ["LayerTerms", "propagate_dag"]

Tiers = dict[str, float | None]
LayerTerms = Mapping[str, tuple[float, Mapping[str, float | None]]]  # layer -> (σ_ℓ, A_ℓ per tier)


def _sqrt_sum(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return sum(math.sqrt(max(v, 0.0)) for v in values if v is not None) ** 2


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def propagate_dag(
    net: Network,
    terms: LayerTerms,
    tiers: tuple[str, ...],
    *,
    coupled: Mapping[str, CoupledTerms] | None = None,
) -> dict[str, Tiers]:
    """B per tier for every tensor up to ``net.logits`` (see the module docstring).

    ``terms`` maps a layer name to (σ_ℓ, {tier: A_ℓ}); a layer missing from it is uncompressed
    (A = 0) with σ_ℓ = 1 only if it is never reached with a non-zero B (else ``KeyError``).
    ``coupled`` gives the coupled rule's terms of the layers that take it (tiers E and T).
    """
    coupled = coupled or {}
    g = GraphIndex(net.model)
    layers = {layer.name: layer for layer in net.layers}
    B: dict[str, Tiers] = {net.input_name: dict.fromkeys(tiers, 0.0)}
    for node in g.ancestors(net.logits):  # a Constant node has no dynamic input: B = 0 on its output
        dyn = g.dynamic_inputs(node)
        ins = [B.get(t, dict.fromkeys(tiers, 0.0)) for t in dyn] or [dict.fromkeys(tiers, 0.0)]
        out: Tiers
        if node.name in layers and node.op_type in ("Gemm", "MatMul", "Conv"):
            sigma, A = terms[node.name] if node.name in terms else (None, dict.fromkeys(tiers, 0.0))
            prev = ins[0]
            out = {}
            for t in tiers:
                if A.get(t) is None or prev[t] is None:
                    out[t] = None
                elif sigma is None:
                    if prev[t] != 0.0:
                        raise KeyError(f"no operator norm for layer {node.name!r}")
                    out[t] = A[t]
                elif node.name in coupled and t in ("E", "T"):
                    out[t] = propagate_coupled(1.0, coupled[node.name], t, prev[t])
                elif t == "W":
                    out[t] = (sigma * math.sqrt(prev[t] or 0.0) + math.sqrt(A[t] or 0.0)) ** 2
                else:
                    out[t] = sigma * sigma * (prev[t] or 0.0) + (A[t] or 0.0)
        elif node.op_type == "Add" and len(dyn) == 2:
            out = {t: _sqrt_sum([b[t] for b in ins]) for t in tiers}
        elif node.op_type == "Concat":
            out = {t: _sum([b[t] for b in ins]) for t in tiers}
        else:
            L2 = lipschitz(node, g) ** 2
            out = {t: (None if ins[0][t] is None else L2 * (ins[0][t] or 0.0)) for t in tiers}
        for name in node.output:
            if name:
                B[name] = out
    return B
