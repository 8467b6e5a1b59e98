"""What a compressed tensor costs in bytes: packed widths and the sparse break-even rule.

Ref: docs/method.md §5 ("Storage that really shrinks").

Sparse break-even (derived). A tensor of N entries in a ``b``-bit container costs ``N·b/8`` bytes
dense. ONNX ``sparse_initializer`` (and our state-dict sparse form) stores the ``nnz = d·N`` values
plus one int64 flat index each: ``d·N·(b/8 + 8)`` bytes. Sparse is smaller iff

    d < (b/8) / (b/8 + 8) = b / (b + 64)

which gives 32/96 = 1/3 for float32, 8/72 = 1/9 for int8 and 4/68 = 1/17 for int4 (the ≈33%, 11%
and 6% of docs/method.md §5). Above it, dense zeros are the smaller file: unstructured pruning alone
then saves no bytes, and the report must say so.
"""

from __future__ import annotations

import math

INDEX_BITS = 64  # ONNX sparse tensors (and our state-dict sparse form) carry int64 flat indices


def sparse_break_even(container_bits: int) -> float:
    """Density below which values + int64 indices take fewer bytes than the dense tensor: b/(b+64)."""
    if container_bits <= 0:
        raise ValueError(f"container_bits must be positive, got {container_bits}")
    return container_bits / (container_bits + INDEX_BITS)


BREAK_EVEN_FP32 = sparse_break_even(32)  # 1/3
BREAK_EVEN_INT8 = sparse_break_even(8)  # 1/9
BREAK_EVEN_INT4 = sparse_break_even(4)  # 1/17


def sparse_saves_bytes(density: float, container_bits: int) -> bool:
    """True when a sparse (values + int64 indices) tensor is strictly smaller than the dense one.

    Ref: docs/method.md §5; derivation in this module's docstring.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return density < sparse_break_even(container_bits)


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` entries packed at ``bits`` per entry (int4: two per byte)."""
    return math.ceil(n * bits / 8)
