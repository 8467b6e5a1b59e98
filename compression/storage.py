"""Bytes before/after, measured from the artifact itself, and the sparse break-even rule.

Ref: ALGORITHM.md §5 ("Storage that really shrinks").

Sparse break-even (derived). A tensor of N entries in a ``b``-bit container costs ``N·b/8`` bytes
dense. ONNX ``sparse_initializer`` (and our state-dict sparse form) stores the ``nnz = d·N`` values
plus one int64 flat index each: ``d·N·(b/8 + 8)`` bytes. Sparse is smaller iff

    d < (b/8) / (b/8 + 8) = b / (b + 64)

which gives 32/96 = 1/3 for float32, 8/72 = 1/9 for int8 and 4/68 = 1/17 for int4 (the ≈33%, 11%
and 6% of ALGORITHM.md §5). Above it, dense zeros are the smaller file: unstructured pruning alone
then saves no bytes, and the report must say so.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from compression.compressed import CompressedWeight
from compression.errors import ModelFormatError, UnsupportedModelError
from compression.network import Layer, Network

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

    Ref: ALGORITHM.md §5; derivation in this module's docstring.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return density < sparse_break_even(container_bits)


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
    Ref: ALGORITHM.md §5 ("Bytes").
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
    Ref: ALGORITHM.md §5 ("Bytes").
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


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` entries packed at ``bits`` per entry (int4: two per byte)."""
    return math.ceil(n * bits / 8)


# ---------------------------------------------------------------------------- physical layout (exporters)


@dataclass
class PhysicalLayer:
    """One layer's arrays as the artifact stores them: canonical orientation, dropped units deleted.

    Ref: ALGORITHM.md §1 "Structured pruning": a dropped input unit u of layer ℓ removes the
    ``input_group`` columns [u·g, (u+1)·g) of W_ℓ (input channel u of a conv) and row u of the
    producer's W_{ℓ-1}, b_{ℓ-1} (and its per-row scale/codes/outliers). Exact, because those
    columns of Ŵ_ℓ are zero.
    """

    layer: Layer
    weight: np.ndarray  # Ŵ float32, (n_out', n_in') or (c_out', c_in', kh, kw)
    bias: np.ndarray | None  # (n_out',)
    codes: np.ndarray | None  # int8, same shape as weight
    scale: np.ndarray | None  # float32 (n_out',) per row, or (1,) per layer
    per_row: bool
    bits: int | None
    outliers: np.ndarray | None  # bool, same shape as weight
    kept_rows: np.ndarray  # int64 (n_out',): the producer-side units kept
    dropped_inputs: np.ndarray  # int64: the input units removed (group indices)
    shape_before: tuple[int, ...]
    compressed: bool  # the layer has a CompressedWeight
    reshaped: bool  # rows or columns were deleted


def _input_units(layer: Layer) -> int:
    return int(layer.weight.shape[1]) if layer.kind == "conv" else layer.n_in // max(layer.input_group, 1)


def _column_index(layer: Layer, units: np.ndarray) -> np.ndarray:
    """Axis-1 indices owned by input ``units``: channels of a conv, g columns each for dense."""
    if layer.kind == "conv":
        return units
    g = max(layer.input_group, 1)
    return (units[:, None] * g + np.arange(g)[None, :]).reshape(-1)  # (units·g,)


def _columns(a: np.ndarray, layer: Layer, units: np.ndarray) -> np.ndarray:
    return a[:, _column_index(layer, units)]


def _drop_columns(a: np.ndarray, layer: Layer, units: np.ndarray) -> np.ndarray:
    return np.delete(a, _column_index(layer, units), axis=1)  # (n_out, n_in') or (c_out, c_in', kh, kw)


def _cut(a: np.ndarray | None, layer: Layer, rows: np.ndarray, units: np.ndarray) -> np.ndarray | None:
    """Keep output ``rows`` and delete the columns of input ``units`` (None passes through)."""
    if a is None:
        return None
    a = a[rows]
    return np.ascontiguousarray(_drop_columns(a, layer, units) if units.size else a)


def physical_layers(net: Network, compressed: Mapping[str, CompressedWeight]) -> dict[str, PhysicalLayer]:
    """Every layer of ``net`` with the structured deletions applied (ALGORITHM.md §1, §5)."""
    unknown = sorted(set(compressed) - {layer.name for layer in net.layers})
    if unknown:
        raise KeyError(f"compressed weights for unknown layers: {unknown}")
    drop_rows: dict[str, set[int]] = {}
    drop_in: dict[str, np.ndarray] = {}
    for layer in net.layers:
        cw = compressed.get(layer.name)
        if cw is None or cw.dropped_inputs is None or cw.dropped_inputs.size == 0:
            continue
        if not layer.structured or layer.producer is None:
            raise UnsupportedModelError(
                f"layer {layer.name!r} does not allow structured pruning", nodes=[layer.name]
            )
        units = np.unique(np.asarray(cw.dropped_inputs, dtype=np.int64))
        producer = net.layer(layer.producer)
        n_units = _input_units(layer)
        if producer.n_out != n_units or units.min() < 0 or units.max() >= n_units:
            raise UnsupportedModelError(
                f"{layer.name!r}: dropped units do not match the producer's {producer.n_out} outputs",
                nodes=[layer.name, producer.name],
            )
        if np.any(_columns(cw.weight, layer, units)):
            raise ValueError(f"{layer.name!r}: dropped input units must be zero columns of Ŵ")
        drop_in[layer.name] = units
        drop_rows.setdefault(producer.name, set()).update(int(u) for u in units)
    out: dict[str, PhysicalLayer] = {}
    for layer in net.layers:
        cw = compressed.get(layer.name)
        rows = np.setdiff1d(np.arange(layer.n_out), np.fromiter(drop_rows.get(layer.name, ()), np.int64))
        units = drop_in.get(layer.name, np.zeros(0, dtype=np.int64))
        W = cw.weight if cw is not None else layer.weight
        per_row = cw is not None and cw.scale is not None and cw.scale.size == layer.n_out and layer.n_out > 1

        scale = None if cw is None or cw.scale is None else (cw.scale[rows] if per_row else cw.scale)
        out[layer.name] = PhysicalLayer(
            layer=layer,
            weight=np.ascontiguousarray(
                W[rows] if not units.size else _drop_columns(W[rows], layer, units), dtype=np.float32
            ),
            bias=None if layer.bias is None else layer.bias[rows],
            codes=None if cw is None else _cut(cw.codes, layer, rows, units),
            scale=None if scale is None else np.asarray(scale, dtype=np.float32),
            per_row=per_row,
            bits=None if cw is None else cw.bits,
            outliers=None if cw is None else _cut(cw.outliers, layer, rows, units),
            kept_rows=rows,
            dropped_inputs=units,
            shape_before=tuple(int(d) for d in layer.weight.shape),
            compressed=cw is not None,
            reshaped=bool(units.size) or len(rows) != layer.n_out,
        )
    return out
