"""Oracles for byte accounting of written artifacts (``export/storage.py``, docs/method.md §5)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import safetensors.numpy
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.errors import ModelFormatError
from netshrink.compression.export.storage import state_dict_storage, storage_summary

torch.set_num_threads(1)


def _model(inits: list[onnx.TensorProto], sparse: Sequence[onnx.SparseTensorProto] = ()) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    node = helper.make_node("Identity", ["x"], ["y"], "id")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    g = helper.make_graph([node], "g", [x], [y], inits, sparse_initializer=list(sparse))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()


def _sparse(dense: np.ndarray, name: str) -> onnx.SparseTensorProto:
    idx = np.flatnonzero(dense).astype(np.int64)
    values = numpy_helper.from_array(dense.reshape(-1)[idx], name)
    return helper.make_sparse_tensor(values, numpy_helper.from_array(idx, f"{name}_i"), list(dense.shape))


def test_storage_summary_counts_payload_by_dtype() -> None:
    f = numpy_helper.from_array(np.ones((2, 5), np.float32), "f")  # 40 bytes
    i8 = numpy_helper.from_array(np.ones(7, np.int8), "i8")  # 7 bytes
    i4 = numpy_helper.from_array(np.ones(5, ml_dtypes.int4), "i4")  # 5 nibbles -> 3 bytes
    typed = helper.make_tensor(
        "t", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]
    )  # packed float_data: 2 + 12 bytes
    sp = _sparse(np.array([0, 0, 2, 0], np.float32), "s")  # one float32 + one int64 index
    data = _model([f, i8, i4, typed], [sp])
    s = storage_summary(data)
    assert s["by_dtype"] == {"float32": 40 + 14 + 4, "int8": 7, "int4": 3, "int64": 8}
    assert s["total"] == len(data) and s["weights"] + s["graph"] == len(data)
    with pytest.raises(ModelFormatError):
        storage_summary(b"\x00not onnx\xff" * 3)


def test_state_dict_storage_reads_both_formats(tmp_path: Path) -> None:
    arrays = {
        "a.weight": np.ones((3, 4), np.float32),
        "a.codes": np.zeros(6, np.uint8),
        "b": np.ones(2, np.int64),
    }
    st = safetensors.numpy.save(arrays)
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, buf)
    path = tmp_path / "m.pt"
    path.write_bytes(buf.getvalue())
    want = {"float32": 48, "uint8": 6, "int64": 16}
    assert state_dict_storage(st)["by_dtype"] == want
    assert state_dict_storage(path)["by_dtype"] == want
    arch = {"layers": [{"weight": {"container": "int4", "codes_key": "a.codes"}}]}
    assert state_dict_storage(st, architecture=arch)["by_dtype"] == {"float32": 48, "int4": 6, "int64": 16}
    assert math.isclose(state_dict_storage(path)["total"], len(buf.getvalue()))
    with pytest.raises(ModelFormatError):
        state_dict_storage(b"\x01\x00")
