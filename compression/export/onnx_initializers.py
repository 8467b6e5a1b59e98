"""The initializers (and DequantizeLinear/Add nodes) that store one compressed weight in ONNX.

Ref: docs/method.md §5 ("Storage that really shrinks"); the storage rules are in ``export_onnx``'s
docstring: int8/int4 codes + float32 scale + DequantizeLinear, float outliers added back, sparse
initializers below the break-even density (``algorithm/cost.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

from netshrink.compression.algorithm.cost import sparse_saves_bytes
from netshrink.compression.errors import UnsupportedModelError
from netshrink.compression.export.physical import PhysicalLayer
from netshrink.compression.graph.network import Layer

FLOAT32 = np.dtype(np.float32)
FLOAT16 = np.dtype(np.float16)
WEIGHT_TYPES = frozenset({FLOAT32, FLOAT16, np.dtype(np.float64)})


@dataclass(frozen=True)
class LayerStorage:
    """How one layer's weight was written (for the report's honest storage notes)."""

    layer: str
    # "float32" | "sparse_float32" (and float16/float64 alike) | "int8" | "sparse_int8" | "int4" | "int2"
    weight: str
    outliers: str  # "none" | "dense" | "sparse"
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...]  # canonical (PyTorch) orientation


class Names:
    """Fresh, deterministic tensor/node names that do not clash with the graph's."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.used = {t.name for t in g.initializer} | {s.values.name for s in g.sparse_initializer}
        self.used |= {n.name for n in g.node} | {o for n in g.node for o in list(n.output) + list(n.input)}
        self.used |= {v.name for v in list(g.input) + list(g.output)}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name


def _sparse(values_layout: np.ndarray, name: str, names: Names) -> onnx.SparseTensorProto:
    """ONNX sparse tensor: nnz values + int64 flat (row-major) indices, shape = the dense shape."""
    flat = values_layout.reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)  # (nnz,)
    values = numpy_helper.from_array(flat[idx], name)
    indices = numpy_helper.from_array(idx, names.fresh(f"{name}_indices"))
    return helper.make_sparse_tensor(values, indices, list(values_layout.shape))


def _density(a: np.ndarray) -> float:
    return float(np.count_nonzero(a)) / float(max(a.size, 1))


@dataclass
class Written:
    dense: list[onnx.TensorProto]
    sparse: list[onnx.SparseTensorProto]
    nodes: list[onnx.NodeProto]
    storage: LayerStorage


def write_weight(
    layer: Layer,
    p: PhysicalLayer,
    names: Names,
    int4_ok: bool,
    int2_ok: bool = False,
    dtype: np.dtype[Any] = FLOAT32,
) -> Written:
    """Initializers (+ DequantizeLinear/Add/Cast nodes) producing the tensor ``layer.weight_key``.

    ``dtype``: the float type of the initializer replaced (float32, float16 or float64), which the
    tensor ``layer.weight_key`` keeps, so that its readers type-check as in the upload. A float
    weight is stored in it; dequantization runs in float32 (DequantizeLinear has no float64 scale,
    and a float16 one only from opset 19) and a ``Cast`` to ``dtype`` follows; float outliers are
    added in float16 after it for a float16 weight, in float32 before it otherwise.
    """
    key = layer.weight_key
    dtype = np.dtype(dtype)
    if dtype not in WEIGHT_TYPES:
        raise UnsupportedModelError(
            f"weight {key!r} is {dtype}; compressed weights are written as float32, float16 or float64",
            nodes=[layer.name],
        )
    dense: list[onnx.TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    nodes: list[onnx.NodeProto] = []
    shape_after = tuple(int(d) for d in p.weight.shape)
    if p.codes is None or p.scale is None or p.bits is None:
        W = layer.to_onnx_layout(p.weight.astype(dtype))  # ONNX layout, the upload's float type
        if p.compressed and sparse_saves_bytes(_density(W), 8 * dtype.itemsize):
            sparse.append(_sparse(W, key, names))
            kind = f"sparse_{dtype}"
        else:
            dense.append(numpy_helper.from_array(W, key))
            kind = str(dtype)
        return Written(
            dense, sparse, nodes, LayerStorage(layer.name, kind, "none", p.shape_before, shape_after)
        )

    out_mask = p.outliers if p.outliers is not None else np.zeros(p.weight.shape, dtype=bool)
    codes = np.where(out_mask, 0, p.codes).astype(np.int8)  # canonical; outliers carried by O
    codes = layer.to_onnx_layout(codes)  # ONNX layout
    q_name = names.fresh(f"{key}_quantized")
    if p.bits <= 2 and int2_ok:
        dense.append(numpy_helper.from_array(codes.astype(ml_dtypes.int2), q_name))
        kind = "int2"
    elif p.bits <= 4 and int4_ok:
        dense.append(numpy_helper.from_array(codes.astype(ml_dtypes.int4), q_name))
        kind = "int4"
    elif sparse_saves_bytes(_density(codes), 8):
        sparse.append(_sparse(codes, q_name, names))
        kind = "sparse_int8"
    else:
        dense.append(numpy_helper.from_array(codes, q_name))
        kind = "int8"
    s_name = names.fresh(f"{key}_scale")
    if p.per_row:
        dense.append(numpy_helper.from_array(p.scale.astype(np.float32).reshape(-1), s_name))  # (n_out,)
        axis = 1 if layer.transposed else 0
    else:
        dense.append(
            numpy_helper.from_array(np.asarray(p.scale.reshape(-1)[0], dtype=np.float32), s_name)
        )  # scalar
        axis = 0
    has_outliers = bool(out_mask.any())
    # DQ (float32) -> [Cast] -> [Add O] -> key. float16: the Cast comes before the Add and O is float16
    # (half the bytes, the same sum: O is 0 wherever a code is not, and the codes are 0 where O is
    # not, so fp16(c·s) + 0 and 0 + fp16(Ŵ) are what the cast of the float32 sum gives); float64:
    # the float32 sum is cast last (exact), with O in float32 (Ŵ's own values, half the bytes)
    o_dtype = dtype if dtype == FLOAT16 else FLOAT32
    steps = ["Cast", "Add"] if dtype == FLOAT16 else ["Add", "Cast"]
    steps = [op for op in steps if (op == "Add" and has_outliers) or (op == "Cast" and dtype != FLOAT32)]
    between = ["dequantized", *(op.lower() for op in steps[:-1])][: len(steps)]  # DQ's, then the Cast's/Add's
    outs = [names.fresh(f"{key}_{label}") for label in between] + [key]
    nodes.append(
        helper.make_node(
            "DequantizeLinear",
            [q_name, s_name],
            [outs[0]],
            name=names.fresh(f"{layer.name}/dequantize"),
            axis=axis,
        )
    )
    out_kind = "none"
    for op, src, dst in zip(steps, outs[:-1], outs[1:], strict=True):
        if op == "Cast":
            to = helper.np_dtype_to_tensor_dtype(dtype)
            nodes.append(helper.make_node("Cast", [src], [dst], names.fresh(f"{layer.name}/cast"), to=to))
            continue
        O = layer.to_onnx_layout(np.where(out_mask, p.weight, 0).astype(o_dtype))  # ONNX layout
        o_name = names.fresh(f"{key}_outliers")
        if sparse_saves_bytes(_density(O), 8 * o_dtype.itemsize):
            sparse.append(_sparse(O, o_name, names))
            out_kind = "sparse"
        else:
            dense.append(numpy_helper.from_array(O, o_name))
            out_kind = "dense"
        nodes.append(helper.make_node("Add", [src, o_name], [dst], names.fresh(f"{layer.name}/outliers")))
    return Written(
        dense, sparse, nodes, LayerStorage(layer.name, kind, out_kind, p.shape_before, shape_after)
    )


def pruned_bias(
    init: onnx.TensorProto, kept_rows: np.ndarray, n_out: int, values: np.ndarray | None = None
) -> onnx.TensorProto:
    """The bias initializer without the deleted output units (its own shape otherwise kept).

    ``values`` (len(kept_rows),): the kept rows' new values (a compensated bias), else the initializer's.
    """
    arr = numpy_helper.to_array(init)
    if arr.size != n_out:
        raise UnsupportedModelError(f"bias {init.name!r} has {arr.size} entries, expected {n_out}")
    new_shape = tuple(len(kept_rows) if d == n_out else d for d in arr.shape)
    kept = arr.reshape(-1)[kept_rows] if values is None else np.asarray(values).astype(arr.dtype).reshape(-1)
    return numpy_helper.from_array(np.ascontiguousarray(kept.reshape(new_shape)), init.name)
