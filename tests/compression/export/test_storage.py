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
import safetensors.torch
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.errors import ModelFormatError
from netshrink.compression.export.storage import state_dict_storage, storage_summary
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import analyze, compress
from netshrink.compression.spec import CompressSpec
from tests.compression.export.export_models import as_type

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


# ---- "bytes before" of a state dict: its tensors in the types they were uploaded in ----------------
_TORCH_TYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _state_dict_upload(tmp_path: Path, dtype: str, fmt: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 16 -> 32 -> 10 MLP's state dict in ``dtype``, saved as ``.pt`` (torch.save) or ``.safetensors``."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    state = mlp.to(_TORCH_TYPES.get(dtype, torch.float32)).state_dict()
    path = tmp_path / f"mlp_{dtype}.{fmt}"
    if fmt == "pt":
        torch.save(state, path)
    else:
        safetensors.torch.save_file(state, str(path))
    return path, state


@pytest.mark.parametrize(
    ("dtype", "fmt"), [("float16", "pt"), ("bfloat16", "pt"), ("float64", "pt"), ("float16", "safetensors")]
)
def test_bytes_before_of_a_state_dict_count_its_uploaded_type(tmp_path: Path, dtype: str, fmt: str) -> None:
    """2026-12-05, found by probing: a float16 ``.pt`` reported the float32 ONNX form's bytes as
    "before" (68,904 weight bytes for 34,452 uploaded) and a ratio ~2x too high."""
    path, state = _state_dict_upload(tmp_path, dtype, fmt)
    uploaded = sum(t.numel() * t.element_size() for t in state.values())  # the tensors as saved
    path32, _ = _state_dict_upload(tmp_path, "float32", fmt)
    net, net32 = load_model(path), load_model(path32)
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0})
    result = compress(net, spec)
    b = result.report["summary"]["bytes"]
    before32 = compress(net32, spec).report["summary"]["bytes"]["before"]
    assert b["before"]["by_dtype"] == {dtype: uploaded} and b["before"]["weights"] == uploaded
    assert b["before"]["graph"] == before32["graph"]  # the same ONNX graph around the tensors
    assert b["before"]["total"] == before32["graph"] + uploaded
    assert b["after"]["total"] == len(result.artifacts["model.onnx"])
    assert b["ratio"] == pytest.approx(b["before"]["total"] / b["after"]["total"], rel=1e-12)
    scale = {"float16": 0.5, "bfloat16": 0.5, "float64": 2.0}[dtype]  # against a float32 upload
    assert b["before"]["weights"] == scale * before32["weights"]
    assert analyze(net).report["summary"]["bytes"]["before"] == b["before"]  # analyze says the same


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_a_state_dict_counts_as_the_same_graph_uploaded_as_onnx_in_its_type(
    tmp_path: Path, dtype: type
) -> None:
    """The definition an ONNX upload already has: its file's bytes by type. A state dict in float16
    (float64) counts as its ONNX graph written in float16 (float64) would: the same tensor bytes by
    type, and the same total but for the protobuf length prefixes of the tensors (a varint each)."""
    path, _ = _state_dict_upload(tmp_path, np.dtype(dtype).name, "pt")
    net = load_model(path)
    assert isinstance(net.upload, onnx.ModelProto)  # the float32 graph the state dict became
    got = analyze(net).report["summary"]["bytes"]["before"]  # export.storage.upload_summary
    want = storage_summary(as_type(net.upload, dtype).SerializeToString(deterministic=True))
    assert (got["by_dtype"], got["weights"]) == (want["by_dtype"], want["weights"])
    assert abs(got["total"] - want["total"]) <= 2 * len(net.upload.graph.initializer)
    net32 = load_model(_state_dict_upload(tmp_path, "float32", "pt")[0])
    before32 = analyze(net32).report["summary"]["bytes"]["before"]
    assert before32 == storage_summary(net32.upload_bytes())  # float32: as it always was
