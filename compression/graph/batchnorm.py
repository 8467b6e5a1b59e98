"""Fold eval-mode BatchNormalization into the Conv before it (docs/method.md §3 table)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from netshrink.compression.graph.graph_index import GraphIndex, attr
from netshrink.compression.io.onnx_io import infer_shapes


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Fold every eval-mode BatchNormalization that directly follows a Conv into that Conv.

    W' = W · γ/√(var+ε) per output channel, b' = (b − mean) · γ/√(var+ε) + β (docs/method.md §3 table,
    "BatchNorm in eval mode"). Returns a new model (the input is untouched) and the folded BN names,
    or the input itself when it has no BatchNormalization (no copy of its weights).
    The Conv keeps its initializer names (a new ``<conv>.bias`` is added when it had none).
    """
    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = GraphIndex(out)
    inits = {t.name: t for t in out.graph.initializer}
    folded: list[str] = []
    drop: list[onnx.NodeProto] = []
    for bn in g.nodes:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 or attr(bn, "training_mode", 0):
            continue
        conv = g.producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(g.consumers[bn.input[0]]) != 1:
            continue
        if bn.input[0] in g.outputs or not all(t in inits for t in bn.input[1:5]):
            continue
        if conv.input[1] not in inits or len(g.consumers[conv.input[1]]) != 1:
            continue
        if (
            len(conv.input) > 2
            and conv.input[2]
            and (conv.input[2] not in inits or len(g.consumers[conv.input[2]]) != 1)
        ):
            continue
        gamma, beta, mean, var = (g.consts[t].astype(np.float64) for t in bn.input[1:5])
        scale = gamma / np.sqrt(var + float(attr(bn, "epsilon", 1e-5)))  # type: ignore[arg-type]  # (c_out,)
        W = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)  # (c_out, c_in, kh, kw)
        has_b = len(conv.input) > 2 and bool(conv.input[2])
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_b else np.zeros_like(mean)
        dtype = numpy_helper.to_array(inits[conv.input[1]]).dtype
        inits[conv.input[1]].CopyFrom(
            numpy_helper.from_array((W * scale[:, None, None, None]).astype(dtype), conv.input[1])
        )
        b_new = ((b - mean) * scale + beta).astype(dtype)  # (c_out,)
        if has_b:
            inits[conv.input[2]].CopyFrom(numpy_helper.from_array(b_new, conv.input[2]))
        else:
            b_name = f"{conv.name}.bias"
            out.graph.initializer.append(numpy_helper.from_array(b_new, b_name))
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = b_name
        conv.output[0] = bn.output[0]
        drop.append(bn)
        folded.append(bn.name)
    if not folded:
        return out, []
    for bn in drop:
        out.graph.node.remove(bn)
    used = {t for n in out.graph.node for t in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    del out.graph.value_info[:]
    return infer_shapes(out), folded


# ---- Lipschitz constants (docs/method.md §3 table) -------------------------------------------------
