"""Bytes before/after, measured from the artifact itself (ONNX and state dicts).

Ref: docs/method.md §5 ("Storage that really shrinks"); the sparse break-even rule is in
``algorithm/cost.py``.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from netshrink.compression.errors import ModelFormatError
from netshrink.compression.graph.network import Network

# --------------------------------------------------------------------------------------------- ONNX

_PACKED_BITS = {TensorProto.INT4: 4, TensorProto.UINT4: 4}
if hasattr(TensorProto, "INT2"):
    _PACKED_BITS[TensorProto.INT2] = 2
    _PACKED_BITS[TensorProto.UINT2] = 2


def onnx_dtype_name(data_type: int) -> str:
    """ONNX element type -> numpy-style name (``float32``, ``int8``, ``int4``, ``int64``...)."""
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).name)


def _payload_bytes(t: TensorProto) -> int:
    """Bytes of the tensor's data as serialized (raw_data length, or the typed field's wire size)."""
    if t.HasField("raw_data"):
        return len(t.raw_data)
    header = TensorProto()
    header.CopyFrom(t)
    for f in ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
        header.ClearField(f)  # type: ignore[arg-type]
    return t.ByteSize() - header.ByteSize()


def _tensors(graph: onnx.GraphProto) -> list[TensorProto]:
    """Every stored tensor of a graph and its subgraphs: initializers, sparse parts, Constant values."""
    out: list[TensorProto] = list(graph.initializer)
    for sp in graph.sparse_initializer:
        out += [sp.values, sp.indices]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                out.append(attr.t)
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                out += [attr.sparse_tensor.values, attr.sparse_tensor.indices]
            elif attr.type == onnx.AttributeProto.GRAPH:
                out += _tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    out += _tensors(g)
    return out


def storage_summary(model_bytes: bytes) -> dict[str, Any]:
    """Bytes of an ONNX artifact, broken down by element type, measured from the file.

    ``by_dtype`` sums the payload of every initializer, sparse initializer (values and int64
    indices) and Constant tensor by ONNX element type; packed types (int4) count their packed
    bytes. ``weights`` is that sum and ``graph`` the rest of the file (nodes, names, metadata).
    Ref: docs/method.md §5 ("Bytes").
    """
    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelFormatError(f"not an ONNX model: {exc}") from exc
    by_dtype: dict[str, int] = {}
    for t in _tensors(model.graph):
        name = onnx_dtype_name(t.data_type)
        by_dtype[name] = by_dtype.get(name, 0) + _payload_bytes(t)
    weights = sum(by_dtype.values())
    return {
        "total": len(model_bytes),
        "by_dtype": dict(sorted(by_dtype.items())),
        "weights": weights,
        "graph": len(model_bytes) - weights,
    }


def upload_summary(net: Network, data: bytes | None = None) -> dict[str, Any]:
    """The report's "bytes before": ``storage_summary`` of the upload (``data``, its bytes when the
    caller holds them, else ``net.upload_bytes()``), in the types it was uploaded in.

    An ONNX upload is its file. A state dict is the ONNX graph it becomes (``Network.upload``), which
    holds every float tensor in float32; each tensor is counted at its uploaded type and bytes
    instead (``Network.uploaded_tensors``, numel · element size), the graph's other bytes as they
    are. A float16 state dict thus counts as the float16 ONNX upload of the same graph would, not
    twice its size (until 2026-12-05 it counted as float32, and the ratio was ~2× too high).
    """
    summary = storage_summary(net.upload_bytes() if data is None else data)
    if not net.uploaded_tensors:
        return summary
    by_dtype: dict[str, int] = dict(summary["by_dtype"])
    for t in net.original.graph.initializer:
        uploaded = net.uploaded_tensors.get(t.name)
        if uploaded is None:
            continue
        held = onnx_dtype_name(t.data_type)
        by_dtype[held] -= _payload_bytes(t)  # the float32 copy the graph holds
        by_dtype[uploaded[0]] = by_dtype.get(uploaded[0], 0) + uploaded[1]  # the tensor as uploaded
    by_dtype = {k: v for k, v in sorted(by_dtype.items()) if v}
    weights = sum(by_dtype.values())
    graph = summary["graph"]  # nodes, names, framing: as measured
    return {"total": graph + weights, "by_dtype": by_dtype, "weights": weights, "graph": graph}


# ---------------------------------------------------------------------------------------- state dict

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _packed_int4_keys(architecture: Mapping[str, Any] | None) -> set[str]:
    """Keys that hold two int4 codes per uint8 byte, as stated by an exported architecture.json."""
    keys: set[str] = set()
    for layer in (architecture or {}).get("layers", []):
        w = layer.get("weight", {})
        if w.get("container") == "int4" and w.get("codes_key"):
            keys.add(str(w["codes_key"]))
    return keys


def state_dict_storage(
    path_or_bytes: str | Path | bytes, *, architecture: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Bytes of a ``.pt`` or ``.safetensors`` state dict by dtype, measured from the file.

    Tensor payloads are counted by dtype (``numel · itemsize``, i.e. what the file stores). When an
    exported ``architecture`` is given, uint8 tensors it names as packed int4 codes count as ``int4``.
    Ref: docs/method.md §5 ("Bytes").
    """
    data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, str | Path) else path_or_bytes
    packed = _packed_int4_keys(architecture)
    sizes: dict[str, tuple[str, int]] = {}  # key -> (dtype name, bytes)
    if data[:2] == b"PK":
        import torch  # the core may import torch; kept local so storage_summary stays light

        with zipfile.ZipFile(io.BytesIO(data)):
            pass  # validates the zip container before unpickling with weights_only
        sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(sd, Mapping):
            raise ModelFormatError("a .pt state dict must be a mapping of names to tensors")
        for key, t in sd.items():
            if not isinstance(t, torch.Tensor):
                raise ModelFormatError(f"state dict entry {key!r} is not a tensor")
            sizes[str(key)] = (str(t.dtype).removeprefix("torch."), t.numel() * t.element_size())
    else:
        if len(data) < 8:
            raise ModelFormatError("not a .pt (zip) or .safetensors file")
        (n,) = struct.unpack("<Q", data[:8])
        try:
            header = json.loads(data[8 : 8 + n])
        except ValueError as exc:
            raise ModelFormatError(f"bad safetensors header: {exc}") from exc
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            sizes[key] = (
                _SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"].lower()),
                int(end) - int(begin),
            )
    by_dtype: dict[str, int] = {}
    for key, (dtype, nbytes) in sizes.items():
        name = "int4" if key in packed and dtype == "uint8" else dtype
        by_dtype[name] = by_dtype.get(name, 0) + nbytes
    weights = sum(by_dtype.values())
    return {
        "total": len(data),
        "by_dtype": dict(sorted(by_dtype.items())),
        "weights": weights,
        "graph": len(data) - weights,
    }
