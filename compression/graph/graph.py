"""Graph analysis: BatchNorm folding, the compressible layers, Φ (logits), tail and support level.

Ref: docs/method.md "Notation" (Φ, orientation), §1 "Structured pruning" (producer / H·W groups),
§3 (Lipschitz table, residual Add not covered). The working graph must already be checked,
shape-inferred and fully named (``netshrink.compression.io.onnx_io.parse_onnx``).

Support levels:
- ``full``: every node up to Φ is one of ``FULL_OPS`` and the dataflow is a chain (each node has
  one non-constant input, each intermediate tensor one consumer). Bounds and structured pruning apply.
- ``generic``: anything else onnxruntime runs. Gemm/MatMul/Conv initializers are still layers
  (unstructured only) and ``Network.not_covered`` says why the bounds do not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from netshrink.compression.errors import NothingToCompressError
from netshrink.compression.graph.depgroups import ChannelGroups, dependency_groups
from netshrink.compression.graph.fixed_linear import fixed_linear_lipschitz, fixed_operand
from netshrink.compression.graph.graph_index import GraphIndex, attr, ints
from netshrink.compression.graph.network import ConvGeometry, Layer, SupportLevel

ACTIVATIONS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "Softplus": "softplus",
    "Gelu": "gelu",
    "Clip": "clip",  # ReLU6 = Clip(0, 6)
    "HardSigmoid": "hard_sigmoid",
    "HardSwish": "hard_swish",
}
POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool"})
SHAPE_OPS = frozenset({"Flatten", "Reshape"})
PASS_OPS = frozenset({"Dropout", "Identity", "Cast", "Pad"})
# a Cast to float32/float64 keeps the values the float32 graph computes (L = 1); one to float16,
# bfloat16 or an integer type rounds, and |round(a) − round(b)| may exceed |a − b|: not covered
EXACT_CASTS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE})
CONST_ARITH = frozenset({"Mul", "Div", "Add", "Sub"})
TAIL_HEADS = frozenset({"Softmax", "LogSoftmax", "Sigmoid", "ArgMax", "ZipMap"})
CHAIN_OPS = frozenset(ACTIVATIONS) | POOLS | SHAPE_OPS | PASS_OPS | CONST_ARITH
LINEAR_OPS = frozenset({"Gemm", "MatMul", "Conv"})
FULL_OPS = CHAIN_OPS | LINEAR_OPS | {"Constant", "Concat"}
GELU_LIPSCHITZ = 1.13  # max |d/dx x·Φ(x)| ≈ 1.129 (docs/method.md §3 table)
HARDSWISH_LIPSCHITZ = 1.5  # d/dx x·relu6(x+3)/6 = (2x+3)/6 on [-3, 3]: largest at x = 3


@dataclass
class Analysis:
    """What ``analyze`` finds in a (BN-folded) graph; ``loading`` turns it into a ``Network``."""

    layers: list[Layer]
    logits: str
    tail: list[str]
    is_classifier: bool
    support: SupportLevel
    not_covered: list[str] = field(default_factory=list)
    dag: bool = False  # the nodes up to Φ branch or join (residual Add, Concat)
    channel_groups: ChannelGroups | None = None  # dependency groups (full-support DAGs only)


def lipschitz(node: onnx.NodeProto, g: GraphIndex) -> float:
    """L of one elementwise / pooling / reshaping node on its dynamic input."""
    op = node.op_type
    if op == "LeakyRelu":
        return max(1.0, abs(float(attr(node, "alpha", 0.01))))  # type: ignore[arg-type]
    if op == "Sigmoid":
        return 0.25
    if op == "Gelu":
        return GELU_LIPSCHITZ
    if op == "HardSigmoid":
        return abs(float(attr(node, "alpha", 0.2)))  # type: ignore[arg-type]
    if op == "HardSwish":
        return HARDSWISH_LIPSCHITZ
    if op in ("MaxPool", "AveragePool"):
        k = ints(node, "kernel_shape", [])
        s = ints(node, "strides", [1] * len(k))
        d = ints(node, "dilations", [1] * len(k))
        span = [(ki - 1) * di + 1 for ki, di in zip(k, d, strict=True)]
        overlap = math.prod(-(-sp // si) for sp, si in zip(span, s, strict=True))  # windows per pixel
        if op == "MaxPool":
            return 1.0 if overlap == 1 else math.sqrt(overlap)
        # Schur test: ‖A‖ ≤ √(‖A‖₁‖A‖∞) = √(overlap / n); exact for non-overlapping windows.
        padded = any(ints(node, "pads", [0])) and not attr(node, "count_include_pad", 0)
        return math.sqrt(overlap) if padded else math.sqrt(overlap / math.prod(k))
    if op == "GlobalAveragePool":
        shape = g.shapes.get(node.input[0], ())
        hw = math.prod(int(v) for v in shape[2:] if v) if shape and all(shape[2:]) else 1
        return 1.0 / math.sqrt(hw)
    if op in LINEAR_OPS:  # reached only when the node is no layer (fixed_linear.py)
        return fixed_linear_lipschitz(node, g)
    if op in ("Mul", "Div"):
        c = np.abs(next(g.consts[t] for t in node.input if t in g.consts).astype(np.float64))
        return float(c.max()) if op == "Mul" else float(1.0 / c.min())
    return 1.0  # Relu, Clip, Tanh, Softplus, Flatten, Reshape, Dropout, Identity, Cast, zero Pad, ± constant


# ---- layers --------------------------------------------------------------------------------------
def _find_layers(g: GraphIndex, reasons: list[str]) -> list[Layer]:
    layers: list[Layer] = []
    for node in g.nodes:
        op, ins = node.op_type, list(node.input)
        if (
            op not in ("Gemm", "MatMul", "Conv")
            or len(ins) < 2
            or ins[1] not in g.consts
            or ins[0] in g.consts
        ):
            continue
        W = g.consts[ins[1]]
        if W.dtype.kind != "f":
            continue
        preact, bias_key = node.output[0], None
        if op == "Conv":
            if W.ndim != 4:
                reasons.append(f"Conv '{node.name}': only 2-D convolutions are layers")
                continue
            if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                reasons.append(f"Conv '{node.name}': auto_pad SAME (bounds not covered)")
            geom = ConvGeometry(
                kernel_shape=(int(W.shape[2]), int(W.shape[3])),
                strides=tuple(ints(node, "strides", [1, 1])),  # type: ignore[arg-type]
                pads=tuple(ints(node, "pads", [0, 0, 0, 0])),  # type: ignore[arg-type]
                dilations=tuple(ints(node, "dilations", [1, 1])),  # type: ignore[arg-type]
                group=int(attr(node, "group", 1)),  # type: ignore[call-overload]
            )
            weight, transposed = W, False
            bias_key = ins[2] if len(ins) > 2 and ins[2] in g.consts else None
        elif W.ndim != 2:
            continue
        elif op == "Gemm":
            if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
                reasons.append(f"Gemm '{node.name}': transA/alpha/beta (bounds not covered)")
            transposed = not attr(node, "transB", 0)
            weight, geom = (W.T if transposed else W), None
            bias_key = ins[2] if len(ins) > 2 and ins[2] in g.consts else None
        else:  # MatMul x @ B, B stored (in, out)
            weight, transposed, geom = W.T, True, None
            users = g.consumers.get(preact, [])
            if len(users) == 1 and users[0].op_type == "Add" and preact not in g.outputs:
                other = [t for t in users[0].input if t != preact]
                if len(other) == 1 and other[0] in g.consts and g.consts[other[0]].size == W.shape[1]:
                    bias_key, preact = other[0], users[0].output[0]
        bias = None
        if bias_key is not None:
            b = g.consts[bias_key]
            if b.size == weight.shape[0]:
                bias = np.ascontiguousarray(b.reshape(-1), dtype=np.float32)
            else:
                reasons.append(f"{op} '{node.name}': bias of shape {list(b.shape)} is not per-output")
                bias_key = None
        layers.append(
            Layer(
                name=node.name,
                index=len(layers),
                kind="conv" if op == "Conv" else "dense",
                weight=np.ascontiguousarray(weight, dtype=np.float32),
                bias=bias,
                weight_key=ins[1],
                bias_key=bias_key,
                transposed=transposed,
                conv=geom,
                input=ins[0],
                preact=preact,
            )
        )
    return layers


def _walk(g: GraphIndex, start: str, stop: set[str]) -> tuple[str, list[onnx.NodeProto]]:
    """Follow the single-consumer chain of ``CHAIN_OPS`` from ``start`` until a tensor in ``stop``,
    a branch, a graph output or another op. Returns the last tensor and the nodes passed."""
    t, path = start, list[onnx.NodeProto]()
    while t not in stop and t not in g.outputs:
        users = g.consumers.get(t, [])
        if len(users) != 1 or users[0].op_type not in CHAIN_OPS or len(g.dynamic_inputs(users[0])) != 1:
            break
        t, path = users[0].output[0], path + [users[0]]
    return t, path


def _find_logits(g: GraphIndex, last: Layer) -> str:
    """Φ: the input of the first Softmax/LogSoftmax/Sigmoid/ArgMax/ZipMap after the last layer, or
    the graph output reached without one (docs/method.md "Notation")."""
    t = last.preact
    while t not in g.outputs:
        users = g.consumers.get(t, [])
        if len(users) != 1 or users[0].op_type in TAIL_HEADS:
            break
        if users[0].op_type not in CHAIN_OPS or len(g.dynamic_inputs(users[0])) != 1:
            break
        t = users[0].output[0]
    return t


def _channel_axis(node: onnx.NodeProto, g: GraphIndex) -> bool:
    """True when a Concat joins along axis 1 (channels of (N, C, H, W), features of (N, F))."""
    rank = len(g.shapes.get(node.output[0], ()))
    axis = int(attr(node, "axis", 1))  # type: ignore[call-overload]
    return rank >= 2 and axis % rank == 1


def _pad_reason(node: onnx.NodeProto, g: GraphIndex) -> str | None:
    """Pad is covered when it zero-pads (constant mode) the spatial axes only (L = 1)."""
    mode = attr(node, "mode", b"constant")
    pads = g.consts.get(node.input[1]) if len(node.input) > 1 else None
    value = g.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if mode not in (b"constant", "constant") or pads is None:
        return f"Pad '{node.name}': only constant padding with constant pads is covered"
    p = pads.reshape(2, -1)  # (begin/end, rank)
    if p.shape[1] < 2 or np.any(p[:, :2]) or np.any(p < 0):
        return f"Pad '{node.name}': padding of the batch/channel axes (or cropping) is not covered"
    if len(node.input) > 2 and node.input[2] and value is None:
        return f"Pad '{node.name}': computed pad value is not covered"
    return None


def _support_reasons(g: GraphIndex, chain: list[onnx.NodeProto], layers: list[Layer]) -> list[str]:
    """Why the nodes up to Φ are not a DAG of ``FULL_OPS`` (empty list = full support).

    Covered joins (docs/bounds-dag.md): an Add of two dynamic tensors of the same shape (residual),
    a Concat of dynamic tensors along the channel axis. Branches (a tensor read by several nodes)
    are covered. Anything else with two dynamic inputs is not.
    """
    reasons: list[str] = []
    layer_names = {la.name for la in layers}
    bias_adds = {g.producer[la.preact].name for la in layers if g.producer[la.preact].op_type == "Add"}
    for node in chain:
        dyn = g.dynamic_inputs(node)
        op = node.op_type
        if op not in FULL_OPS:
            reasons.append(f"{op} '{node.name}': operator not covered by the bounds")
        elif op == "Concat":
            if len(dyn) != len([t for t in node.input if t]):
                reasons.append(f"Concat '{node.name}' with a constant operand: bounds not covered")
            elif not _channel_axis(node, g):
                reasons.append(f"Concat '{node.name}' not on the channel axis: bounds not covered")
        elif op == "Add" and len(dyn) > 1:
            shapes = [g.shapes.get(t) for t in dyn]
            if len(dyn) != 2 or shapes[0] is None or shapes[0] != shapes[1] or not all(shapes[0][1:]):
                reasons.append(f"Add '{node.name}' with broadcasting or unknown shapes: bounds not covered")
        elif len(dyn) > 1:
            reasons.append(f"{op} '{node.name}' of two tensors: bounds not covered")
        elif op in LINEAR_OPS and node.name not in layer_names and fixed_operand(node, g) is None:
            reasons.append(f"{op} '{node.name}' is no layer and no fixed linear map: bounds not covered")
        elif op in CONST_ARITH and node.name not in bias_adds:
            c = next((g.consts[t] for t in node.input if t in g.consts), None)
            if c is None or c.size != 1:
                reasons.append(f"{op} '{node.name}' with a non-scalar constant: bounds not covered")
            elif op in ("Sub", "Div") and node.input[0] in g.consts:
                reasons.append(f"{op} '{node.name}' with a constant first operand: bounds not covered")
        elif op == "Pad":
            why = _pad_reason(node, g)
            if why:
                reasons.append(why)
        elif op == "Cast" and attr(node, "to", 0) not in EXACT_CASTS:
            to = onnx.TensorProto.DataType.Name(int(attr(node, "to", 0)))  # type: ignore[call-overload]
            reasons.append(f"Cast '{node.name}' to {to} rounds the error: bounds not covered")
        elif op == "Clip" and any(t and t not in g.consts for t in node.input[1:]):
            reasons.append(f"Clip '{node.name}' with computed limits: bounds not covered")
        if op == "Reshape" and node.input[1] not in g.consts:
            reasons.append(f"Reshape '{node.name}' with a computed shape: bounds not covered")
    return reasons


def _is_dag(g: GraphIndex, chain: list[onnx.NodeProto]) -> bool:
    """True when the nodes up to Φ branch or join (not a plain chain)."""
    in_chain = {n.name for n in chain}
    for node in chain:
        if len(g.dynamic_inputs(node)) > 1:
            return True
        if any(len([u for u in g.consumers.get(t, []) if u.name in in_chain]) > 1 for t in node.output):
            return True
    return False


def _chain_broken(layers: list[Layer], logits: str) -> bool:
    """True when a node other than ``CHAIN_OPS`` sits between two layers or after the last (a MatMul
    by a fixed matrix that is no layer, ``fixed_linear.py``): the chain recurrence would skip it, so
    the bounds take the DAG propagation, which visits every node (``bounds/dag.py``)."""
    ends = [la.output for la in layers]
    return ends[-1] != logits or any(e != nxt.input for e, nxt in zip(ends, layers[1:], strict=False))


def _wire(g: GraphIndex, layers: list[Layer], logits: str, structured_ok: bool) -> None:
    """activation / output / lipschitz for every layer; producer / structured / input_group (§1)."""
    inputs = {layer_.input for layer_ in layers}
    for i, layer_ in enumerate(layers):
        out, path = _walk(g, layer_.preact, inputs | {logits})
        layer_.output = out
        layer_.lipschitz = float(math.prod(lipschitz(n, g) for n in path))
        acts = [ACTIVATIONS[n.op_type] for n in path if n.op_type in ACTIVATIONS]
        layer_.activation = acts[0] if acts else "identity"
        if len(acts) > 1:
            layer_.notes.append(
                f"several activations after the layer ({', '.join(acts)}); L is their product"
            )
        if i + 1 >= len(layers) or not structured_ok:
            continue
        nxt = layers[i + 1]
        if nxt.input != out or any(n.op_type in CONST_ARITH and _nonscalar(g, n) for n in path):
            continue
        if len(g.consumers.get(out, [])) != 1 or out in g.outputs or _grouped(layer_) or _grouped(nxt):
            continue  # a branch or a grouped conv: channels are coupled (dependency groups decide)
        shape_ops = [n for n in path if n.op_type in SHAPE_OPS]
        if layer_.kind == "dense" and (any(n.op_type in POOLS for n in path) or nxt.kind != "dense"):
            continue
        if layer_.kind == "conv" and nxt.kind == "conv":
            if shape_ops or nxt.weight.shape[1] != layer_.n_out:
                continue
            group = 1
        elif layer_.kind == "conv":  # conv channel -> Flatten/Reshape -> dense: H·W columns per channel
            before = g.shapes.get(shape_ops[0].input[0], ()) if len(shape_ops) == 1 else ()
            if len(before) != 4 or before[1] != layer_.n_out or not all(before[1:]):
                continue
            group = int(before[2] or 0) * int(before[3] or 0)
            if nxt.n_in != layer_.n_out * group:
                continue
        else:
            if nxt.n_in != layer_.n_out:
                continue
            group = 1
        nxt.structured, nxt.producer, nxt.input_group = True, layer_.name, group


def _grouped(layer: Layer) -> bool:
    return layer.conv is not None and layer.conv.group != 1


def _nonscalar(g: GraphIndex, node: onnx.NodeProto) -> bool:
    return any(g.consts[t].size != 1 for t in node.input if t in g.consts)


def analyze(model: onnx.ModelProto) -> Analysis:
    """Find the layers, Φ, the tail and the support level of a BN-folded, named, shape-inferred graph."""
    g = GraphIndex(model)
    reasons: list[str] = []
    layers = _find_layers(g, reasons)
    if not layers:
        raise NothingToCompressError("the model has no Gemm/MatMul/Conv weight initializer to compress")
    logits = _find_logits(g, layers[-1])
    chain = [n for n in g.ancestors(logits) if n.op_type != "Constant"]
    names = {n.name for n in chain}
    for la in layers:
        la.feeds_logits = la.name in names
    reasons += [
        f"layer '{la.name}' does not feed the logits '{logits}'" for la in layers if not la.feeds_logits
    ]
    reasons += [r for r in _support_reasons(g, chain, layers) if r not in reasons]
    keys = [la.weight_key for la in layers]
    reasons += [
        f"weight '{k}' is shared by several layers: bounds not covered"
        for k in sorted(set(keys))
        if keys.count(k) > 1
    ]
    support: SupportLevel = "full" if not reasons else "generic"
    _wire(g, layers, logits, structured_ok=support == "full")
    dag = _is_dag(g, chain) or _chain_broken(layers, logits)
    groups = None
    if support == "full" and dag:  # coupled channels: DepGraph-style groups replace the chain wiring
        for layer_ in layers:
            layer_.structured, layer_.producer, layer_.input_group = False, None, 1
        groups = dependency_groups(g, layers, chain, logits)
    if support == "generic":
        for layer_ in layers:
            layer_.notes.append("generic graph: only unstructured compression; bounds not covered")
    tail_nodes = [n for n in g.nodes if n.name not in names and n.op_type != "Constant"]
    tail = [n.op_type for n in tail_nodes]
    return Analysis(
        layers=layers,
        logits=logits,
        tail=tail,
        is_classifier=any(op in TAIL_HEADS for op in tail),
        support=support,
        not_covered=reasons,
        dag=dag,
        channel_groups=groups,
    )
