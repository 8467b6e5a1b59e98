"""Operator norm of a grouped (or depthwise) convolution from the single-group norms of ``opnorm``.

A grouped conv with G groups is block diagonal: group γ maps its C/G input channels to its c_out/G
output channels and nothing else, so ‖A‖_op = max_γ ‖A_γ‖_op (the norm of a block-diagonal operator
is the largest block norm). Each block is an ordinary conv; its norm comes from
``opnorm.conv_op_norm_upper`` (Sedghi, Gupta & Long 2019, Thm 6), a certified upper bound that costs
one small FFT per group, so the result is itself a certified upper bound (docs/bounds-dag.md).
"""

from __future__ import annotations

import numpy as np

from netshrink.compression.bounds.opnorm import conv_op_norm_upper, op_norm
from netshrink.compression.graph.network import Layer

__all__ = ["layer_op_norm"]


def layer_op_norm(
    layer: Layer, input_hw: tuple[int, int] | None = None, *, weight: np.ndarray | None = None
) -> float:
    """‖W‖_op of ``layer`` (or of ``weight``): ``opnorm.op_norm``, split by groups for grouped convs."""
    if layer.conv is None or layer.conv.group == 1:  # dense layers have no conv geometry
        return op_norm(layer, input_hw, weight=weight)
    if input_hw is None:
        raise ValueError(f"op_norm of conv layer {layer.name!r} needs the input spatial size")
    K = np.asarray(layer.weight if weight is None else weight)  # (c_out, C/G, kh, kw)
    G = layer.conv.group
    rows = K.shape[0] // G
    # each slice is one group's ordinary conv; conv_op_norm_upper does not read the group count
    return max(conv_op_norm_upper(K[g * rows : (g + 1) * rows], layer.conv, input_hw) for g in range(G))
