"""The sparse break-even rule (``algorithm/cost.py``): the constants follow b/(b+64), and the rule
agrees with the bytes ONNX really serializes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from netshrink.compression.algorithm.cost import (
    BREAK_EVEN_FP32,
    BREAK_EVEN_INT4,
    BREAK_EVEN_INT8,
    sparse_break_even,
    sparse_saves_bytes,
)
from netshrink.compression.export.storage import storage_summary
from tests.compression.export.test_storage import _model, _sparse

torch.set_num_threads(1)


def test_break_even_constants_follow_the_derivation() -> None:
    assert BREAK_EVEN_FP32 == pytest.approx(1 / 3)
    assert BREAK_EVEN_INT8 == pytest.approx(1 / 9)
    assert BREAK_EVEN_INT4 == pytest.approx(1 / 17)
    for bits in (4, 8, 32):
        d = sparse_break_even(bits)
        assert sparse_saves_bytes(d - 1e-9, bits) and not sparse_saves_bytes(d, bits)
    with pytest.raises(ValueError):
        sparse_saves_bytes(1.5, 32)


@pytest.mark.parametrize(("bits", "np_dtype"), [(32, np.float32), (8, np.int8)])
def test_break_even_matches_the_serialized_bytes(bits: int, np_dtype: type) -> None:
    """Build both forms of a 3,000-entry tensor at densities around b/(b+64) and weigh the files."""
    n = 3000
    rng = np.random.default_rng(0)
    for density in np.linspace(0.02, 0.6, 30):
        dense = np.zeros(n, dtype=np_dtype)
        nnz = int(round(density * n))
        dense[rng.choice(n, nnz, replace=False)] = 1
        as_dense = storage_summary(_model([numpy_helper.from_array(dense, "w")]))["weights"]
        as_sparse = storage_summary(_model([], [_sparse(dense, "w")]))["weights"]
        assert sparse_saves_bytes(nnz / n, bits) == (as_sparse < as_dense), density
