"""Lipschitz constant of a Gemm/MatMul by a fixed matrix that is not a compressed layer.

A MatMul whose *first* operand is the initializer (``y = C @ x``: token or spatial mixing, the
transposed orientation some exporters write) or whose weight is not a float matrix is no layer, but
it still scales the error that reaches it: ‖C X − C X̂‖_F ≤ ‖C‖₂ ‖X − X̂‖_F, slice by slice
(docs/method.md §3, the Lipschitz table; a batched C of shape (…, m, k) counts every slice, since
a broadcast x meets each of them: ‖Y‖²_F ≤ Σ_b ‖C_b‖₂² ‖X‖²_F). Gemm multiplies by |α|; its bias
is a constant and moves nothing. The spectral norm is LAPACK's, in float64, inflated by a relative
1e-6 so that rounding can only make it larger: it must bound from above, never estimate.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from netshrink.compression.graph.graph_index import GraphIndex, attr

__all__ = ["FIXED_LINEAR_OPS", "fixed_linear_lipschitz", "fixed_operand"]

FIXED_LINEAR_OPS = frozenset({"Gemm", "MatMul"})
ROUNDING_SLACK = 1e-6


def fixed_operand(node: onnx.NodeProto, g: GraphIndex) -> np.ndarray | None:
    """The constant multiplicand of a Gemm/MatMul with one dynamic operand among its first two."""
    pair = list(node.input[:2])
    consts = [t for t in pair if t in g.consts]
    if node.op_type not in FIXED_LINEAR_OPS or len(pair) != 2 or len(consts) != 1:
        return None
    return g.consts[consts[0]]


def fixed_linear_lipschitz(node: onnx.NodeProto, g: GraphIndex) -> float:
    """L of ``node`` on its dynamic operand: |α| · ‖C‖₂ (see the module docstring)."""
    C = fixed_operand(node, g)
    if C is None:
        raise ValueError(f"{node.op_type} '{node.name}' has no single constant multiplicand")
    C64 = np.asarray(C, dtype=np.float64)
    if C64.ndim <= 1:
        norm = float(np.linalg.norm(C64))  # a vector: x·c or c·x, L = ‖c‖₂
    else:
        slices = C64.reshape(-1, *C64.shape[-2:])  # (batch, m, k)
        sig = np.linalg.norm(slices, ord=2, axis=(1, 2))  # (batch,) largest singular value per slice
        norm = float(math.sqrt(float(np.sum(sig**2))))
    alpha = abs(float(attr(node, "alpha", 1.0))) if node.op_type == "Gemm" else 1.0  # type: ignore[arg-type]
    return alpha * norm * (1.0 + ROUNDING_SLACK)
