"""Rewrite equivalent spellings of supported ops into the one the analysis knows.

``torch.onnx.export`` writes ``nn.AdaptiveAvgPool2d(1)`` (and ``x.mean((2, 3), keepdim=True)``) as a
``ReduceMean`` over the spatial axes with ``keepdims=1``: exactly ``GlobalAveragePool``;
``x.mean((2, 3))`` (keepdims=0) is GlobalAveragePool + Flatten. Rewriting them lets such CNNs get
full support (channel pruning, bounds; docs/method.md §3 Lipschitz table, AveragePool). Its
TorchScript exporter also writes parameters that happen to be equal as ``Identity(initializer)``;
those become initializers again (chains too), so that BatchNorm folding sees constants, and an
initializer no node reads any more is dropped. Its ``x.view(x.size(0), -1)`` (a Reshape whose shape
is computed by Shape/Gather/Unsqueeze/Concat) becomes ``Flatten(axis=1)``, and the dead shape
arithmetic goes; a Conv or pool with ``auto_pad`` SAME_* gets its explicit pads
(``explicit_pads``). A ``Constant`` node holding a dense tensor (a weight, a bias, a Reshape's
shape) becomes an initializer of the same name (``constant_nodes``), so that a weight some exporters
keep in one is a layer like any other. The rewrite is done on the working graph only;
``Network.original`` keeps the upload.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from netshrink.compression.graph.constant_nodes import constant_initializer, is_dense_constant
from netshrink.compression.graph.explicit_pads import explicit_pads, has_same_padding
from netshrink.compression.graph.graph_index import GraphIndex, attr
from netshrink.compression.io.onnx_io import infer_shapes


def _spatial_axes(node: onnx.NodeProto, g: GraphIndex) -> bool:
    """True when the ReduceMean averages exactly the spatial axes of a 4-D (N, C, H, W) input."""
    axes: list[int] | None = None
    if len(node.input) > 1 and node.input[1]:  # opset >= 18: axes are an input
        if node.input[1] not in g.consts:
            return False
        axes = [int(a) for a in g.consts[node.input[1]].reshape(-1)]
    else:
        raw = attr(node, "axes", None)
        axes = None if raw is None else [int(a) for a in raw]  # type: ignore[attr-defined]
    if axes is None:
        return False
    return sorted(a % 4 for a in axes) == [2, 3]


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model``: Constant and Identity(initializer) nodes become initializers; spatial
    ``ReduceMean`` becomes ``GlobalAveragePool`` (keepdims=1) or ``GlobalAveragePool`` + ``Flatten``
    (keepdims=0). ``model`` itself when it has none of these (no copy of its weights: the loader's
    memory)."""
    ops = {n.op_type for n in model.graph.node}
    node_wise = any(has_same_padding(n) or is_dense_constant(n) for n in model.graph.node)
    reshape = "Reshape" in ops and _static_batch(model) is not None  # maybe Reshape(x, [b, -1])
    if (
        not ops & {"Identity", "ReduceMean"}
        and not {"Reshape", "Shape"} <= ops
        and not node_wise
        and not reshape
    ):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = GraphIndex(out)
    graph_inputs = {i.name for i in out.graph.input}
    used = {t for n in out.graph.node for t in [*n.input, *n.output]}
    nodes: list[onnx.NodeProto] = []
    inits = {t.name: t for t in out.graph.initializer}
    batch = _static_batch(out)
    rewrote = False  # a node replaced by new ones: their tensors need shapes (removals need none)
    for node in out.graph.node:
        const = constant_initializer(node) if node.output and node.output[0] not in g.outputs else None
        if const is not None:  # a weight (or any dense constant) held in a Constant node: an initializer
            out.graph.initializer.append(const)
            inits[const.name] = const  # Identity(Constant) resolves below, in the same pass
            continue
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in g.outputs:
            # torch's exporter deduplicates equal parameters as Identity(initializer): a constant.
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            out.graph.initializer.append(copy)
            inits[copy.name] = copy  # a chain Identity(Identity(w)) resolves in one pass (topological)
            continue
        padded = explicit_pads(node, g)  # auto_pad SAME_* with a static input: explicit pads
        if padded is not None:
            nodes.append(padded)
            rewrote = True
            continue
        # x.view(x.size(0), -1): the shape math dies; with a static batch b, Reshape(x, [b, -1])
        if _is_batch_flatten(node, g, graph_inputs) or _is_static_batch_flatten(node, g, batch):
            nodes.append(
                helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1)
            )
            rewrote = True
            continue
        shape = g.shapes.get(node.input[0], ()) if node.input else ()
        if (
            node.op_type != "ReduceMean"
            or node.domain not in ("", "ai.onnx")
            or len(shape) != 4
            or not _spatial_axes(node, g)
        ):
            nodes.append(node)
            continue
        rewrote = True
        if int(attr(node, "keepdims", 1)) == 1:  # type: ignore[call-overload]
            nodes.append(
                helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
            )
            continue
        mid = f"{node.output[0]}_pooled"
        while mid in used:
            mid += "_"
        used.add(mid)
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [mid], name=node.name))
        nodes.append(
            helper.make_node("Flatten", [mid], list(node.output), name=f"{node.name}/flatten", axis=1)
        )
    # Shapes again whenever a node was replaced: a node count that grew was the test until 2026-12-05,
    # and Constant nodes turned into initializers in the same pass hid the GlobalAveragePool + Flatten
    # a ``x.mean((2, 3))`` became, so its tensors had no shape and channel pruning stopped there
    # (found by probing: ReLU6 -> mean -> Linear, whose Clip bounds are Constants).
    del out.graph.node[:]
    out.graph.node.extend(_live(nodes, {o.name for o in out.graph.output}))
    _drop_unused_initializers(out)
    return infer_shapes(out) if rewrote else out


def _static_batch(model: onnx.ModelProto) -> int | None:
    """The batch size every graph input fixes (a static first dimension, the same for all), else None."""
    inits = {t.name for t in model.graph.initializer}
    dims = set()
    for v in model.graph.input:
        if v.name in inits:
            continue
        shape = v.type.tensor_type.shape.dim
        if not shape or not shape[0].HasField("dim_value"):
            return None
        dims.add(int(shape[0].dim_value))
    return dims.pop() if len(dims) == 1 else None


def _is_static_batch_flatten(node: onnx.NodeProto, g: GraphIndex, batch: int | None) -> bool:
    """``Reshape(x, [b, -1])`` (or ``[b, prod(x.shape[1:])]``) where b is the model's static batch and
    x's first dimension, or ``Reshape(x, [-1, prod(x.shape[1:])])``, x's sample dimensions static:
    ``Flatten(x, axis=1)``. The first is a batch-b export of ``x.view(x.size(0), -1)`` or
    ``nn.Flatten``, which the analysis runs with calibration batches of other sizes (until 2026-12-05
    it crashed the run: "shape '[1, 256]' is invalid for input of size 20224", exit 4); the second the
    default (dynamo) exporter's ``nn.Flatten``, which locked the channels before it out of a residual
    graph's channel pruning. Both found by probing."""
    if node.op_type != "Reshape" or len(node.input) != 2:
        return False
    target = _const_ints(node.input[1], g)  # no 0 in it, so ``allowzero`` (the default exporter's) is moot
    x = g.shapes.get(node.input[0], ())
    if target is None or len(target) != 2 or len(x) < 2:
        return False
    rest = [d for d in x[1:] if isinstance(d, int) and d > 0]  # the sample dimensions, all static
    if len(rest) != len(x) - 1:
        return False
    per_sample = math.prod(rest)
    if target == [-1, per_sample]:  # the default exporter's flatten with a dynamic batch
        return True
    return batch is not None and x[0] == batch and target[0] == batch and target[1] in (-1, per_sample)


def _const_ints(name: str, g: GraphIndex) -> list[int] | None:
    if name not in g.consts:
        return None
    return [int(v) for v in np.asarray(g.consts[name]).reshape(-1)]


def _is_batch_flatten(node: onnx.NodeProto, g: GraphIndex, inputs: set[str]) -> bool:
    """``Reshape(x, Concat(Unsqueeze(Gather(Shape(t), 0), [0]), [-1]))``: the TorchScript exporter's
    ``x.view(t.size(0), -1)`` (opsets 11-17: ``axes`` an attribute or an input) with ``t`` = x or
    the model's input, whose batch dimension is x's (every op of a supported graph keeps it), which
    is exactly ``Flatten(x, axis=1)``; found by probing (2026-12-05) to make such CNNs generic."""
    if node.op_type != "Reshape" or len(node.input) != 2 or int(attr(node, "allowzero", 0)):  # type: ignore[call-overload]
        return False
    x = node.input[0]
    cat = g.producer.get(node.input[1])
    if cat is None or cat.op_type != "Concat" or len(cat.input) != 2 or int(attr(cat, "axis", 0)) != 0:  # type: ignore[call-overload]
        return False
    if _const_ints(cat.input[1], g) != [-1]:
        return False
    unsq = g.producer.get(cat.input[0])
    if unsq is None or unsq.op_type != "Unsqueeze":
        return False
    axes_attr = attr(unsq, "axes", None)
    axes = (
        _const_ints(unsq.input[1], g)
        if len(unsq.input) > 1
        else (
            None if axes_attr is None else [int(a) for a in axes_attr]  # type: ignore[attr-defined]
        )
    )
    gather = g.producer.get(unsq.input[0])
    if axes != [0] or gather is None or gather.op_type != "Gather" or int(attr(gather, "axis", 0)) != 0:  # type: ignore[call-overload]
        return False
    shape = g.producer.get(gather.input[0])
    return (
        _const_ints(gather.input[1], g) == [0]
        and shape is not None
        and shape.op_type == "Shape"
        and (shape.input[0] == x or shape.input[0] in inputs)  # x.size(0) or input.size(0)
        and int(attr(shape, "start", 0)) == 0  # type: ignore[call-overload]
    )


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` less those whose every output nothing reads (a rewritten Reshape's shape
    arithmetic), in order; repeated until none is left."""
    while True:
        read = {t for n in nodes for t in n.input} | outputs
        kept = [n for n in nodes if any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Initializers no node and no graph output reads any more (an Identity chain's sources, once
    its end is a constant): kept, they went into the compressed file as float copies of a weight
    and made it larger than the upload (found by probing, 2026-12-05)."""
    read = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    unused = {t.name for t in model.graph.initializer if t.name not in read}
    if not unused:
        return
    keep = [t for t in model.graph.initializer if t.name not in unused]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    inputs = [i for i in model.graph.input if i.name not in unused]  # an initializer listed as an input
    del model.graph.input[:]
    model.graph.input.extend(inputs)
