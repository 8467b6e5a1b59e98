"""Write the compressed ONNX artifact so that it really shrinks.

Ref: docs/method.md §5 ("Storage that really shrinks"), §1 ("Structured pruning").

- Quantized layers become real integer initializers (INT8 for 5..8 bits; INT4 for <= 4 bits at
  opset >= 21, created with ``numpy_helper.from_array`` on ``ml_dtypes.int4``, packed two per byte)
  plus a float32 scale and a ``DequantizeLinear`` whose output takes over the weight's name. Bit 3
  uses int4 containers; 2 bits are real INT2 (four per byte) at opset >= 25, where onnxruntime
  1.32's DequantizeLinear accepts them, else int4 containers. Scale axis = the output-channel axis in the ONNX
  layout: 1 for a MatMul/Gemm weight stored (in, out), 0 otherwise; a per-layer scale is a scalar.
- Float outliers (f < 1): the artifact stores codes = 0 at outlier positions and adds a float32
  tensor holding Ŵ there: W = DQ(codes) + O, which reproduces Ŵ bit for bit (0·s + Ŵ = Ŵ and
  c·s + 0 = c·s). O is a ``sparse_initializer`` when that is smaller (storage.sparse_saves_bytes).
- Pruned-only layers stay float32; a ``sparse_initializer`` below the fp32 break-even (1/3), dense
  zeros above it (no bytes saved). INT8 codes may also go sparse below 1/9; INT4 codes never do,
  because onnxruntime 1.32 rejects int4 sparse values ("values data size does not match").
- Structured pruning deletes the dropped input units of a layer, the producer's output rows and
  bias entries, and rewrites a Reshape constant that hard-codes the feature count.
- A float16 or float64 weight keeps its type: float weights are written in it, and the float32
  DequantizeLinear output is followed by a ``Cast`` to it (float16 outliers are added after the
  Cast, in float16), so that the graph type-checks as uploaded (``onnx_initializers.write_weight``).
- A weight read by several layers (tied) is written once, from its one compressed reader; every
  reader reads the same dequantized tensor (``_one_writer``, ``tied_weights.py``).
- A layer whose compressed weight changes nothing (``search.units.unchanged``: a keep that drops no
  unit, unquantized) is not rewritten; with nothing else compressed the upload is returned as it is.
- Same graph inputs/outputs (names, dtypes, dynamic batch); the rest of the graph is untouched.
  No timestamps; nodes/initializers keep their order (new ones follow the layer order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.errors import InvalidSpecError, ModelFormatError, UnsupportedModelError
from netshrink.compression.export.onnx_initializers import LayerStorage, Names, pruned_bias, write_weight
from netshrink.compression.export.physical import physical_layers
from netshrink.compression.export.placeholders import copy_with_placeholders, is_placeholder
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.search.units import unchanged

INT4_MIN_OPSET = 21  # DequantizeLinear accepts INT4 from opset 21
INT2_MIN_OPSET = 25  # ... and INT2 from opset 25
AXIS_MIN_OPSET = 13  # per-axis DequantizeLinear from opset 13


@dataclass(frozen=True)
class OnnxExport:
    data: bytes
    opset: int
    layers: tuple[LayerStorage, ...]
    notes: tuple[str, ...]


def export_onnx(
    net: Network,
    compressed: Mapping[str, CompressedWeight],
    *,
    target_opset: int | None = None,
    int8_only: bool = False,
) -> bytes:
    """The compressed model as ONNX bytes (see :func:`export_onnx_detailed`)."""
    return export_onnx_detailed(net, compressed, target_opset=target_opset, int8_only=int8_only).data


def _default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    raise ModelFormatError("the model imports no default-domain opset")


def _choose_opset(
    model: onnx.ModelProto, compressed: Mapping[str, CompressedWeight], target: int | None, int8_only: bool
) -> tuple[onnx.ModelProto, int, list[str]]:
    """Convert the opset when asked (target) or needed for INT4 (unless forbidden). Ref: §5."""
    notes: list[str] = []
    current = _default_opset(model)
    quantized = [cw for cw in compressed.values() if cw.codes is not None]
    want_int4 = not int8_only and any((cw.bits or 8) <= 4 for cw in quantized)
    want_int2 = not int8_only and any((cw.bits or 8) <= 2 for cw in quantized)
    out = target if target is not None else current
    if want_int2 and target is None and out < INT2_MIN_OPSET:
        try:  # 2-bit codes pack four per byte only at opset 25; else they keep int4 containers
            return version_converter.convert_version(model, INT2_MIN_OPSET), INT2_MIN_OPSET, notes
        except Exception as exc:  # the converter raises bare RuntimeErrors/ValidationErrors
            notes.append(
                f"opset {current} -> {INT2_MIN_OPSET} conversion failed ({exc}); 2-bit codes in int4"
            )
    if want_int4 and out < INT4_MIN_OPSET:
        if target is None:
            out = INT4_MIN_OPSET
        else:
            notes.append(f"target_opset {target} < {INT4_MIN_OPSET}: 2-4 bit codes stored in int8 containers")
    if quantized and out < AXIS_MIN_OPSET and target is None:  # an upload below opset 13: bump it
        out = AXIS_MIN_OPSET  # (until 2026-12-05 refused as an invalid spec the user never wrote)
    if quantized and out < AXIS_MIN_OPSET:
        raise InvalidSpecError(
            f"quantized weights need DequantizeLinear with axis (opset >= {AXIS_MIN_OPSET}), got {out}",
            field="target_opset",
        )
    if out != current:
        try:
            model = _at_least_its_ir(version_converter.convert_version(model, out))
        except Exception as exc:  # the converter raises bare RuntimeErrors/ValidationErrors
            if target is None:  # only our own INT4 bump: fall back to int8 containers
                notes.append(f"opset {current} -> {out} conversion failed ({exc}); codes stored as int8")
                return model, current, notes
            raise UnsupportedModelError(f"cannot convert the model to opset {out}: {exc}") from exc
    return model, out, notes


def _at_least_its_ir(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the IR version its opsets need: the version converter leaves it as it was, so an
    IR-3 upload (opset <= 8, every initializer listed as a graph input) stayed IR 3 at opset 13+, and
    the new DequantizeLinear initializers failed the checker ("in initializer but not in graph
    input": compress exited 4 until 2026-12-05). IR 4 lifted that rule."""
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    return model


def _rewrite_reshapes(
    model: onnx.ModelProto, layer: Layer, producer: Layer, old_in: int, new_in: int
) -> None:
    """Rewrite Reshape shape constants between ``producer`` and ``layer`` that hard-code ``old_in``."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
    t, steps = layer.input, 0
    while t and t != producer.preact and t in made_by and steps < 32:
        node, steps = made_by[t], steps + 1
        if node.op_type == "Reshape" and len(node.input) > 1:
            src = node.input[1]
            if src in inits:
                i = inits[src]
                shape = numpy_helper.to_array(model.graph.initializer[i])
                if old_in in shape.tolist():
                    new = np.where(shape == old_in, new_in, shape).astype(shape.dtype)
                    model.graph.initializer[i].CopyFrom(numpy_helper.from_array(new, src))
            elif src in made_by and made_by[src].op_type == "Constant":
                attr = made_by[src].attribute[0]
                shape = numpy_helper.to_array(attr.t)
                if old_in in shape.tolist():
                    new = np.where(shape == old_in, new_in, shape).astype(shape.dtype)
                    attr.t.CopyFrom(numpy_helper.from_array(new, attr.t.name))
        t = node.input[0] if node.input else ""


def _set_group(model: onnx.ModelProto, node_name: str, group: int) -> None:
    """Rewrite the ``group`` attribute of the depthwise Conv ``node_name`` (channels = groups)."""
    node = next(n for n in model.graph.node if n.name == node_name)
    for a in node.attribute:
        if a.name == "group":
            a.i = group


class ExportCheckError(RuntimeError):
    """The artifact netshrink wrote fails the ONNX checker. The upload passed the same checker when it
    was loaded, so this is a bug of the exporter, never a fault of the user's file: an internal error
    (CLI exit 4, HTTP 500), not the upload's ``ModelFormatError`` ("could not be read", exit 2)."""


def _verify(model: onnx.ModelProto) -> None:
    """Checker + shape inference. Float sparse initializers feeding Gemm/Conv make ONNX's strict
    type check fail (``sparse_tensor(float)``) although onnxruntime densifies them at load; the
    structural checker and non-strict inference are used then."""
    has_sparse = len(model.graph.sparse_initializer) > 0
    try:
        onnx.checker.check_model(model, full_check=not has_sparse)
        onnx.shape_inference.infer_shapes(model, check_type=not has_sparse, strict_mode=not has_sparse)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportCheckError(f"the exported model failed the ONNX checker: {exc}") from exc


def _one_writer(net: Network, compressed: Mapping[str, CompressedWeight]) -> dict[str, str]:
    """Weight initializer -> the one layer whose compressed weight is written into it.

    Layers that read one initializer (a module called twice, tied weights) share one tensor: it is
    written once, and every reader reads the same dequantized tensor, because the DequantizeLinear
    output takes over the initializer's name. So at most one reader may bring a compressed weight
    (``tied_weights.tie_shared_weights`` excludes the others: the executor then applies that one
    draw to every reader, as the artifact does); two different ones for one tensor are refused.
    """
    writer: dict[str, str] = {}
    for layer in net.layers:
        if layer.name not in compressed:
            continue
        first = writer.setdefault(layer.weight_key, layer.name)
        if first != layer.name and compressed[first] is not compressed[layer.name]:
            raise ValueError(
                f"weight {layer.weight_key!r} is read by layers {first!r} and {layer.name!r}, which were "
                "given different compressed weights; one tensor holds one: compress it through one reader"
            )
    return writer


def export_onnx_detailed(
    net: Network,
    compressed: Mapping[str, CompressedWeight],
    *,
    target_opset: int | None = None,
    int8_only: bool = False,
) -> OnnxExport:
    """Write ``net.model`` with the compressed weights. Ref: docs/method.md §5; module docstring.

    A weight that ``cw`` leaves as it is (``search.units.unchanged``: a keep that drops no unit, not
    quantized) is not written: with nothing else compressed the upload comes back byte for byte (until
    2026-12-05 the working graph was written, its canonical rewrites included, and the file grew)."""
    by_name = {layer.name: layer for layer in net.layers}
    compressed = {n: cw for n, cw in compressed.items() if n not in by_name or not unchanged(by_name[n], cw)}
    if not compressed:
        data = net.upload_bytes()  # the working graph imports the upload's opsets
        return OnnxExport(data, _default_opset(net.model), (), ("nothing compressed: original returned",))
    writer = _one_writer(net, compressed)
    phys = physical_layers(net, compressed)
    rewritten = {x.weight_key for x in net.layers if phys[x.name].compressed or phys[x.name].reshaped}
    model = copy_with_placeholders(net.model, rewritten)
    model, opset, notes = _choose_opset(model, compressed, target_opset, int8_only)
    int4_ok = not int8_only and opset >= INT4_MIN_OPSET
    int2_ok = not int8_only and opset >= INT2_MIN_OPSET
    names = Names(model)
    g = model.graph
    replaced: dict[str, list[onnx.TensorProto]] = {}
    new_sparse: list[onnx.SparseTensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    storage: list[LayerStorage] = []
    inits = {t.name: t for t in g.initializer}
    for layer in net.layers:
        p = phys[layer.name]
        if not p.compressed and not p.reshaped:
            continue
        if writer.get(layer.weight_key, layer.name) != layer.name:
            continue  # a second reader of a tied weight: the first one wrote the tensor they share
        if layer.weight_key not in inits:
            raise UnsupportedModelError(
                f"weight initializer {layer.weight_key!r} not found", nodes=[layer.name]
            )
        dtype = helper.tensor_dtype_to_np_dtype(inits[layer.weight_key].data_type)  # a placeholder's too
        w = write_weight(layer, p, names, int4_ok, int2_ok, dtype)
        if layer.conv is not None and layer.conv.group != 1 and p.scale is not None:
            kind = f"{p.scale.size} per-channel scales" if p.per_row else "one per-tensor scale"
            notes.append(
                f"{layer.name}: grouped conv ({layer.conv.group} groups, {layer.n_in} weights per "
                f"channel) stored with {kind} ({4 * p.scale.size} bytes of scales)"
            )
        replaced[layer.weight_key] = w.dense
        new_sparse += w.sparse
        new_nodes += w.nodes
        storage.append(w.storage)
        if layer.conv is not None and layer.conv.group != 1 and len(p.kept_rows) != layer.n_out:
            _set_group(model, layer.name, len(p.kept_rows))  # a depthwise conv lost channels
        if layer.bias_key is not None and (len(p.kept_rows) != layer.n_out or p.bias_changed):
            assert p.bias is not None
            replaced[layer.bias_key] = [pruned_bias(inits[layer.bias_key], p.kept_rows, layer.n_out, p.bias)]
        if p.dropped_inputs.size and layer.producer is not None and layer.kind == "dense":
            old_in, new_in = layer.n_in, int(p.weight.shape[1])
            _rewrite_reshapes(model, layer, net.layer(layer.producer), old_in, new_in)
    kept = [t for name in [t.name for t in g.initializer] for t in replaced.get(name, [inits[name]])]
    if any(is_placeholder(t) for t in kept):  # every placeholder is a weight written anew above
        raise AssertionError("a weight placeholder reached the exported graph")
    del g.initializer[:]
    g.initializer.extend(kept)
    g.sparse_initializer.extend(new_sparse)
    nodes = new_nodes + list(g.node)  # DQ nodes read only initializers: first is topological
    del g.node[:]
    g.node.extend(nodes)
    stale = set(replaced)
    graph_inputs = [v for v in g.input if v.name not in stale]  # IR<4 initializer-as-input entries
    del g.input[:]
    g.input.extend(graph_inputs)
    del g.value_info[:]
    _verify(model)
    return OnnxExport(model.SerializeToString(deterministic=True), opset, tuple(storage), tuple(notes))


__all__ = ["ExportCheckError", "LayerStorage", "OnnxExport", "export_onnx", "export_onnx_detailed"]
