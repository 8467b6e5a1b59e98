"""ONNX at the edge: parse, validate and name an uploaded graph.

Ref: docs/method.md §6 "Loading safely"; docs/development.md "ONNX in and out". The order matters: cheap,
allocation-free checks (external data, declared dims, operator domains) run before anything that
materializes tensors (the checker, shape inference, ``numpy_helper.to_array``).

Sparse initializers (netshrink's own artifacts store pruned weights so, docs/method.md §5) are read as
the dense initializers they stand for: ONNX's strict, type-checked shape inference refuses a sparse
tensor where a Conv/Gemm/MatMul reads a tensor, so until 2026-12-05 netshrink could not read its own
pruned artifact back ("ONNX shape inference failed: ... sparse_tensor(float)"). A sparse tensor counts
its dense size against the limits, checked before any dense form is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from netshrink.compression.errors import (
    ExternalDataError,
    InvalidWeightsError,
    LimitExceededError,
    ModelFormatError,
    UnsupportedModelError,
    not_a_model,
)
from netshrink.compression.io.onnx_utf8 import non_utf8_field

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
FLOAT_TYPES: dict[int, np.dtype[Any]] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
}


@dataclass(frozen=True)
class GraphInput:
    """The model's single (float) input: its name, per-sample shape and numpy dtype."""

    name: str
    shape: tuple[int, ...]  # batch dimension excluded
    dtype: np.dtype[Any]


def parse_onnx(data: bytes, *, max_dim: int, max_params: int) -> onnx.ModelProto:
    """Bytes -> a checked, shape-inferred, fully named ``ModelProto`` (docs/method.md §6).

    Raises ``ModelFormatError`` (not ONNX / checker / shape inference), ``ExternalDataError``,
    ``UnsupportedModelError`` (custom domains, control flow), ``LimitExceededError`` and
    ``InvalidWeightsError`` (absurd dims, NaN/Inf weights).
    """
    return _validate(_decode(data), data, max_dim=max_dim, max_params=max_params)


def parse_onnx_file(path: Path, *, max_dim: int, max_params: int) -> onnx.ModelProto:
    """``parse_onnx`` of a file's bytes. The checker and shape inference read these bytes as they are
    (no re-serialization of the parsed model); they are released before the inferred model is parsed."""
    data = path.read_bytes()
    return _validate(_decode(data), data, max_dim=max_dim, max_params=max_params)


def _decode(data: bytes) -> onnx.ModelProto:
    if not data:  # an empty protobuf parses (as an empty model): say what the file is instead
        raise ModelFormatError(not_a_model(data, 0))
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError: any failed parse gets the same refusal
        raise ModelFormatError(not_a_model(data[:8], len(data))) from exc
    field = non_utf8_field(model, data)  # found by fuzzing the upload: a name that is not UTF-8
    if field is not None:
        raise ModelFormatError(f"not an ONNX model: a string is not UTF-8 (in field {field!r})")
    return model


def _validate(model: onnx.ModelProto, data: bytes, *, max_dim: int, max_params: int) -> onnx.ModelProto:
    """``model`` parsed from ``data``, its strings UTF-8 (``_decode``): the cheap checks on ``model``, then
    the checker and one strict shape inference on ``data`` itself (the C++ side parses the bytes;
    nothing is serialized again), or on the model with its sparse initializers made dense, serialized
    once, when it has any."""
    if not model.HasField("graph") or not model.graph.node:
        raise ModelFormatError("not an ONNX model: the file holds no graph nodes")
    refuse_external_data(model)
    check_declared_sizes(model, max_dim=max_dim, max_params=max_params)  # sparse: their dense size
    refuse_unsupported_ops(model)
    if densify_sparse_initializers(model):
        # the checker and the inference read the dense model: a sparse initializer fails the strict
        # inference (``sparse_tensor(float)`` where Conv wants a tensor) although onnxruntime runs it
        data = model.SerializeToString()
    del model  # the inferred model below replaces it: one parsed copy of the weights at a time
    try:
        # Not ``full_check=True``: that is this check plus a strict, type-checked shape inference on
        # a copy that it throws away; ``infer_shapes`` below runs the same inference (plus constant
        # propagation) once and keeps it (issue 13 §8, issue 10). Both read the bytes as uploaded.
        onnx.checker.check_model(data)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelFormatError(f"ONNX checker rejected the model: {exc}") from exc
    except UnicodeDecodeError as exc:  # a string field that is not UTF-8 (found by fuzzing the upload)
        raise ModelFormatError(
            f"ONNX checker rejected the model: a string is not UTF-8 ({exc.reason})"
        ) from exc
    model = infer_shapes(data)
    check_finite(model)
    name_nodes(model)
    return model


def infer_shapes(model: onnx.ModelProto | bytes) -> onnx.ModelProto:
    """Strict ONNX shape inference (with constant propagation so Reshape shapes are known), of a
    model or of its serialized bytes (read as they are: no copy of the weights is serialized)."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (
        onnx.shape_inference.InferenceError,
        onnx.checker.ValidationError,
        RuntimeError,
        UnicodeDecodeError,
    ) as exc:
        raise ModelFormatError(f"ONNX shape inference failed: {exc}"[:500]) from exc


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            for g in attr.graphs:
                yield from _all_graphs(g)


def _stored(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto | onnx.SparseTensorProto]]:
    """Every stored tensor, dense or sparse: initializers, sparse initializers, tensor and sparse-tensor
    attributes (a ``Constant``'s ``value`` / ``sparse_value``), in all subgraphs."""
    for graph in _all_graphs(model.graph):
        yield from ((t.name, t) for t in graph.initializer)
        yield from ((s.values.name, s) for s in graph.sparse_initializer)
        for node in graph.node:
            for attr in node.attribute:
                label = f"{node.name or node.op_type}.{attr.name}"
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield label, attr.t
                elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield label, attr.sparse_tensor
                yield from ((label, t) for t in attr.tensors)
                yield from ((label, s) for s in attr.sparse_tensors)


def _parts(name: str, t: onnx.TensorProto | onnx.SparseTensorProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """A dense tensor itself; a sparse one's values and indices."""
    if isinstance(t, onnx.TensorProto):
        yield name, t
    else:
        yield name, t.values
        yield t.indices.name or f"{name} (indices)", t.indices


def _all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every stored dense tensor: initializers, tensor attributes, and the values and indices of the
    sparse ones (``_stored``), in all subgraphs."""
    for name, t in _stored(model):
        yield from _parts(name, t)


def refuse_external_data(model: onnx.ModelProto) -> None:
    """A single-file upload cannot legitimately reference external data (docs/method.md §6)."""
    bad = [
        name
        for name, t in _all_tensors(model)
        if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data
    ]
    if bad:
        tensors = [t for _, t in _all_tensors(model)]
        files = sorted({e.value for t in tensors for e in t.external_data if e.key == "location"})
        where = f" (in {', '.join(files[:3])})" if files else ""
        raise ExternalDataError(
            f"this ONNX file keeps {len(bad)} weight tensor(s) in a separate data file{where}, which a "
            "single upload cannot carry; expected one self-contained .onnx file. Export it with "
            "torch.onnx.export(..., external_data=False), or re-save it with "
            "onnx.save_model(onnx.load(path), 'model.onnx', save_as_external_data=False) "
            f"(tensors: {', '.join(bad[:10])})",
            nodes=bad,
        )


def check_declared_sizes(model: onnx.ModelProto, *, max_dim: int, max_params: int) -> None:
    """Refuse negative / absurd declared dims before any tensor is materialized.

    A sparse tensor counts as its dense form (its declared ``dims``), which the loader
    (``densify_sparse_initializers``) or onnxruntime allocates; its values and indices, at most that
    many once the checker has passed them, are dimension-checked but not counted again."""
    total = 0
    for name, stored in _stored(model):
        sparse = isinstance(stored, onnx.SparseTensorProto)
        for label, t in [(name, stored), *(_parts(name, stored) if sparse else ())]:
            dims = list(t.dims)
            if dims and min(dims) < 0:
                raise InvalidWeightsError(f"tensor {label!r} declares negative dims {dims}")
            if dims and max(dims) > max_dim:
                raise LimitExceededError(f"tensor {label!r} has a dimension over the limit {max_dim}: {dims}")
        total += math.prod(stored.dims)  # exact: Python ints; a sparse tensor's dense size
    if total > max_params:
        raise LimitExceededError(f"the model stores {total} values; the limit is {max_params}")
    for vi in model.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and (d.dim_value < 0 or d.dim_value > max_dim):
                raise LimitExceededError(
                    f"input {vi.name!r} has a dimension {d.dim_value} over the limit {max_dim}"
                )


def densify_sparse_initializers(model: onnx.ModelProto) -> int:
    """In place: each sparse initializer, in every graph, becomes the dense initializer of the same name
    and element type that it stands for (zeros where it stores no value); returns how many there were.

    Each one allocates its dense form: call it after ``check_declared_sizes``, which holds their dense
    sizes to the limits. A sparse tensor that the ONNX checker refuses (indices out of range or out of
    order, a count that does not match) is a ``ModelFormatError``, found before its dense form is made.
    """
    n = 0
    for graph in _all_graphs(model.graph):
        if not graph.sparse_initializer:
            continue
        dense = [_dense(s) for s in graph.sparse_initializer]
        del graph.sparse_initializer[:]
        graph.initializer.extend(dense)
        n += len(dense)
    return n


def _dense(s: onnx.SparseTensorProto) -> onnx.TensorProto:
    name = s.values.name
    if s.values.data_type == onnx.TensorProto.STRING:  # no zero to fill in; never a weight
        raise UnsupportedModelError(f"sparse initializer {name!r} holds strings", nodes=[name])
    try:
        onnx.checker.check_sparse_tensor(s)  # indices in [0, size), sorted, one per value: no allocation
        values = numpy_helper.to_array(s.values).reshape(-1)
        indices = numpy_helper.to_array(s.indices)
    except (onnx.checker.ValidationError, ValueError, TypeError) as exc:
        raise ModelFormatError(
            f"ONNX checker rejected the model: sparse initializer {name!r}: {exc}"
        ) from exc
    dims = tuple(int(d) for d in s.dims)
    flat = indices.reshape(-1) if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    out = np.zeros(math.prod(dims), dtype=values.dtype)
    out[flat] = values
    return numpy_helper.from_array(out.reshape(dims), name)  # of the values' type (ml_dtypes' too)


def refuse_unsupported_ops(model: onnx.ModelProto) -> None:
    """Custom-domain operators and control flow are refused, listing the nodes."""
    bad: list[str] = []
    reasons: set[str] = set()
    for i, node in enumerate(model.graph.node):
        label = node.name or f"{node.op_type}#{i}"
        if node.domain not in STANDARD_DOMAINS:
            bad.append(label)
            reasons.add(f"custom domain {node.domain!r}")
        elif node.op_type in CONTROL_FLOW:
            bad.append(label)
            reasons.add(f"control flow {node.op_type}")
    if model.functions:
        reasons.add("model-local functions")
        bad += [f.name for f in model.functions]
    if bad:
        raise UnsupportedModelError(
            f"unsupported operators ({'; '.join(sorted(reasons))}): {', '.join(bad[:20])}", nodes=bad
        )


def check_finite(model: onnx.ModelProto) -> None:
    """NaN/Inf in any float initializer or constant -> ``InvalidWeightsError`` naming the tensors."""
    bad = []
    for name, t in _all_tensors(model):
        if t.data_type in FLOAT_TYPES or t.data_type == onnx.TensorProto.BFLOAT16:
            if not np.isfinite(_values(t)).all():
                bad.append(name)
    if bad:
        raise InvalidWeightsError(f"non-finite (NaN/Inf) values in: {', '.join(bad[:10])}", nodes=bad)


def _values(t: onnx.TensorProto) -> np.ndarray:
    """A float tensor's values, flat: float32 ``raw_data`` of the declared size straight from its
    bytes (the common case, without ``numpy_helper.to_array``'s generic path), else ``to_array``."""
    if t.data_type == onnx.TensorProto.FLOAT and t.data_location == onnx.TensorProto.DEFAULT:
        raw = t.raw_data
        if raw and len(raw) == 4 * math.prod(t.dims):
            return np.frombuffer(raw, dtype="<f4")
    return numpy_helper.to_array(t)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique, non-empty name (in place); existing unique names are kept."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)


RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


def graph_input(model: onnx.ModelProto) -> GraphInput:
    """The one float graph input (initializers listed as inputs by old exporters are skipped).

    Its batch (first) dimension may be symbolic; every other dimension must be static.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"the model must have exactly one input; it has {len(inputs)}", nodes=[vi.name for vi in inputs]
        )
    vi = inputs[0]
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or tt.elem_type not in FLOAT_TYPES:
        raise UnsupportedModelError(f"input {vi.name!r} must be a float tensor", nodes=[vi.name])
    dims = list(tt.shape.dim)
    if len(dims) < 2:
        raise UnsupportedModelError(f"input {vi.name!r} needs a batch dimension and a feature dimension")
    shape = []
    for d in dims[1:]:
        if not d.HasField("dim_value"):
            recurrent = [n for n in model.graph.node if n.op_type in RECURRENT_OPS]
            if recurrent:  # the variable dimension is the sequence of a recurrent operator
                ops = sorted({n.op_type for n in recurrent})
                raise UnsupportedModelError(
                    f"the {', '.join(ops)} operator is not supported over a variable-length sequence "
                    f"(input {vi.name!r} has the non-static dimension {d.dim_param!r}); "
                    "export the model with a fixed sequence length",
                    nodes=[n.name or n.op_type for n in recurrent],
                )
            raise UnsupportedModelError(
                f"input {vi.name!r} has a non-static per-sample dimension ({d.dim_param!r})"
            )
        shape.append(int(d.dim_value))
    return GraphInput(vi.name, tuple(shape), FLOAT_TYPES[tt.elem_type])


def constant_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers plus the outputs of ``Constant`` nodes, as numpy arrays."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = node.attribute[0]
            value = onnx.helper.get_attribute_value(attr)
            out[node.output[0]] = (
                numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
            )
    return out


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Tensor name -> inferred shape (``None`` for symbolic dims), from a shape-inferred model."""
    out: dict[str, tuple[int | None, ...]] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = tuple(
                int(d.dim_value) if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
            )
    return out


def serialize(model: onnx.ModelProto) -> bytes:
    return bytes(model.SerializeToString())
