"""Write fine-tuned weights back into the upload's own format.

Training ran on the working graph, where eval-mode BatchNorm is folded into the conv before it
(``graph.batchnorm.fold_batchnorm``: W' = W·s, b' = (b − μ)·s + β with s = γ/√(var+ε)). Writing back
inverts the fold against the UPLOADED BatchNorm, whose γ, μ and var stay as they were:

    W = W'_new / s        β_new = b'_new − (b − μ)·s      (b = the conv's own bias, 0 when it has none)

so the uploaded graph (BatchNorm node included) computes exactly the fine-tuned function. Every other
initializer, node, name and attribute of the upload is kept: the ONNX out is the upload with new
weights. A state-dict upload gets its own keys back (``.pt`` or ``.safetensors``), with the same
rule applied to ``{bn}.bias``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import safetensors.numpy
import torch
from onnx import numpy_helper

from netshrink.compression.errors import InvalidWeightsError
from netshrink.compression.finetune.train import Weights
from netshrink.compression.graph.graph_index import attr
from netshrink.compression.graph.network import Network
from netshrink.compression.io.onnx_io import densify_sparse_initializers
from netshrink.compression.io.torch_io import load_safetensors, load_torch_state_dict


def finetuned_onnx(net: Network, w: Weights) -> onnx.ModelProto:
    """A copy of ``net.original`` whose layer weights/biases (and folded BN betas) are ``w``."""
    model = onnx.ModelProto()
    model.CopyFrom(net.original)
    densify_sparse_initializers(model)  # an upload netshrink pruned sparse: its weights as initializers
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)

    def put(name: str, value: np.ndarray) -> None:
        old = inits[name]
        dtype = numpy_helper.to_array(old).dtype
        old.CopyFrom(numpy_helper.from_array(np.asarray(value).astype(dtype).reshape(old.dims), name))

    for layer in net.layers:
        if layer.weight_key not in inits:
            raise InvalidWeightsError(f"layer {layer.name!r}: weight {layer.weight_key!r} not in the upload")
        W, b = w.weight[layer.name].astype(np.float64), w.bias.get(layer.name)
        node = next(
            (n for n in model.graph.node if len(n.input) > 1 and n.input[1] == layer.weight_key), None
        )
        bn = _batchnorm_after(node, consumers, inits)
        if bn is None:
            put(layer.weight_key, layer.to_onnx_layout(W))
            if b is not None and layer.bias_key is not None and layer.bias_key in inits:
                put(layer.bias_key, b)
            continue
        assert node is not None
        gamma, beta, mean, var = (numpy_helper.to_array(inits[t]).astype(np.float64) for t in bn.input[1:5])
        s = gamma / np.sqrt(var + float(attr(bn, "epsilon", 1e-5)))  # type: ignore[arg-type]  # (c_out,)
        safe = np.where(s == 0.0, 1.0, s)  # γ = 0: the channel is constant; its weights stay unused
        put(layer.weight_key, W / safe[:, None, None, None])
        has_b = len(node.input) > 2 and node.input[2] in inits
        b_conv = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if has_b else np.zeros_like(mean)
        )
        if b is not None:
            put(bn.input[2], np.where(s == 0.0, beta, b.astype(np.float64) - (b_conv - mean) * s))
    return model


def _batchnorm_after(
    conv: onnx.NodeProto | None,
    consumers: dict[str, list[onnx.NodeProto]],
    inits: dict[str, onnx.TensorProto],
) -> onnx.NodeProto | None:
    """The eval-mode BatchNormalization that ``fold_batchnorm`` folded into ``conv``, if any."""
    if conv is None or conv.op_type != "Conv":
        return None
    users = consumers.get(conv.output[0], [])
    if len(users) != 1 or users[0].op_type != "BatchNormalization":
        return None
    bn = users[0]
    if attr(bn, "training_mode", 0) or len(bn.output) != 1 or not all(t in inits for t in bn.input[1:5]):
        return None
    return bn


def finetuned_files(
    net: Network, w: Weights, upload: str | Path, *, max_decompressed_bytes: int
) -> dict[str, bytes]:
    """The fine-tuned model in the upload's format: ``model.onnx``, ``model.pt`` or ``model.safetensors``."""
    model = finetuned_onnx(net, w)
    if net.source_format == "onnx":
        return {"model.onnx": model.SerializeToString(deterministic=True)}
    new = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if net.source_format == "safetensors":
        state = load_safetensors(upload)
    else:
        state = load_torch_state_dict(upload, max_decompressed_bytes=max_decompressed_bytes)
    out = {
        k: np.ascontiguousarray(new[k].reshape(v.shape).astype(v.dtype) if k in new else v)
        for k, v in state.items()
    }
    if net.source_format == "safetensors":
        return {"model.safetensors": bytes(safetensors.numpy.save(out))}
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in out.items()}, buf)
    return {"model.pt": buf.getvalue()}
