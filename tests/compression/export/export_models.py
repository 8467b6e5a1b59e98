"""Hand-built models and references for the ONNX writer's tests (test_export_onnx.py and the
other export tests): MLPs with Gemm or MatMul, a CNN with a Reshape, compressed weights, runs in
onnxruntime with ORT_DISABLE_ALL, numpy forward passes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.evaluation.ort_eval import session
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network


# ---- hand-built models ---------------------------------------------------------------------------
def _vi(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(shape[-1] if len(shape) == 2 else 9)).astype(np.float32)


def mlp_gemm(sizes: tuple[int, ...] = (32, 128, 128, 10), opset: int = 21, seed: int = 0) -> onnx.ModelProto:
    """x -> [Gemm(transB=1) -> Relu]* -> Gemm -> "logits"; weights stored (out, in)."""
    rng = np.random.default_rng(seed)
    nodes, inits, t = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        inits += [numpy_helper.from_array(_rand(rng, n_out, n_in), f"W{i}"),
                  numpy_helper.from_array(_rand(rng, n_out) * 0.1, f"b{i}")]  # fmt: skip
        last = i == len(sizes) - 2
        out = "logits" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [t, f"W{i}", f"b{i}"], [out], f"fc{i}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], f"relu{i}"))
            t = f"r{i}"
    g = helper.make_graph(
        nodes, "mlp", [_vi("x", ["batch", sizes[0]])], [_vi("logits", ["batch", sizes[-1]])], inits
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def mlp_matmul(sizes: tuple[int, ...] = (12, 16, 5), seed: int = 1) -> onnx.ModelProto:
    """skl2onnx style: MatMul(x, B (in, out)) + Add(b) -> Relu -> ...; the layers are transposed."""
    rng = np.random.default_rng(seed)
    nodes, inits, t = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        inits += [numpy_helper.from_array(np.ascontiguousarray(_rand(rng, n_out, n_in).T), f"B{i}"),
                  numpy_helper.from_array(_rand(rng, n_out) * 0.1, f"c{i}")]  # fmt: skip
        last = i == len(sizes) - 2
        y = "y" if last else f"a{i}"
        nodes += [helper.make_node("MatMul", [t, f"B{i}"], [f"m{i}"], f"matmul{i}"),
                  helper.make_node("Add", [f"m{i}", f"c{i}"], [y], f"add{i}")]  # fmt: skip
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], f"relu{i}"))
            t = f"r{i}"
    g = helper.make_graph(nodes, "mm", [_vi("x", ["N", sizes[0]])], [_vi("y", ["N", sizes[-1]])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def cnn_reshape(seed: int = 2) -> onnx.ModelProto:
    """Conv(4) -> Relu -> MaxPool -> Conv(6) -> Relu -> Reshape([-1, 96], hard-coded) -> Gemm(5)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_rand(rng, 4, 1, 3, 3), "k1"),
        numpy_helper.from_array(_rand(rng, 4) * 0.1, "kb1"),
        numpy_helper.from_array(_rand(rng, 6, 4, 3, 3) / 2, "k2"),
        numpy_helper.from_array(_rand(rng, 6) * 0.1, "kb2"),
        numpy_helper.from_array(np.array([-1, 96], np.int64), "flat_shape"),
        numpy_helper.from_array(_rand(rng, 5, 96), "fw"),
        numpy_helper.from_array(_rand(rng, 5) * 0.1, "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["img", "k1", "kb1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "k2", "kb2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Reshape", ["r2", "flat_shape"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], "fc", transB=1),
    ]
    g = helper.make_graph(
        nodes, "cnn", [_vi("img", ["batch", 1, 8, 8])], [_vi("logits", ["batch", 5])], inits
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


FLOAT_TYPES = {np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


def as_type(model: onnx.ModelProto, dtype: type) -> onnx.ModelProto:
    """A copy of ``model`` with every float32 initializer, input, output and value info in ``dtype``
    (np.float16 or np.float64): the same graph, uploaded in another float type."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(dtype), t.name))
    for v in [*g.input, *g.output, *g.value_info]:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = FLOAT_TYPES[dtype]
    onnx.checker.check_model(out, full_check=True)
    return out


def load(tmp_path: Path, model: onnx.ModelProto | bytes, name: str = "m.onnx") -> Network:
    path = tmp_path / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return load_model(path)


# ---- compressed weights (hand-rolled, independent of the algorithms) ------------------------------
def quantized(
    net: Network,
    name: str,
    bits: int,
    *,
    per_row: bool = True,
    outlier_frac: float = 0.0,
    keep: np.ndarray | None = None,
    dropped: np.ndarray | None = None,
) -> CompressedWeight:
    """Round-to-nearest on the docs/method.md §1 grid; top-|w| ``outlier_frac`` kept as float."""
    layer = net.layer(name)
    W = layer.weight.copy()  # canonical
    if keep is not None:
        W = W * keep
    if dropped is not None:
        W[:, _cols(layer, dropped)] = 0
    k = 2 ** (bits - 1) - 1
    A = np.abs(W).reshape(W.shape[0], -1)  # (out, in)
    M = A.max(axis=1) if per_row else np.full(W.shape[0], A.max())
    scale = np.maximum(M / k, 1e-12).astype(np.float32)  # (out,)
    s = scale.reshape((-1,) + (1,) * (W.ndim - 1))
    codes = np.clip(np.rint(W / s), -k, k).astype(np.int8)
    What = codes.astype(np.float32) * s  # float32, what DequantizeLinear computes
    outliers = None
    if outlier_frac > 0:
        thr = np.quantile(np.abs(W), 1 - outlier_frac)
        outliers = np.abs(W) >= thr
        What = np.where(outliers, W, What).astype(np.float32)  # codes deliberately left non-zero there
    return CompressedWeight(name, What, codes=codes, scale=scale if per_row else scale[:1], bits=bits,
                            outliers=outliers, dropped_inputs=dropped)  # fmt: skip


def pruned(net: Network, name: str, density: float, seed: int = 0) -> CompressedWeight:
    W = net.layer(name).weight
    keep = np.random.default_rng(seed).random(W.shape) < density
    return CompressedWeight(name, (W * keep).astype(np.float32))


def _cols(layer: object, units: np.ndarray) -> np.ndarray:
    g = getattr(layer, "input_group", 1)
    if getattr(layer, "kind", "dense") == "conv":
        return units
    return (units[:, None] * g + np.arange(g)[None, :]).reshape(-1)


def dropped_columns(
    net: Network, name: str, units: list[int], base: np.ndarray | None = None
) -> CompressedWeight:
    layer = net.layer(name)
    W = (layer.weight if base is None else base).copy()
    u = np.array(units, dtype=np.int64)
    W[:, _cols(layer, u)] = 0  # a dropped unit is a zero group of input columns
    return CompressedWeight(name, W.astype(np.float32), dropped_inputs=u)


# ---- references ----------------------------------------------------------------------------------
def run(model_bytes: bytes, X: np.ndarray, level: str = "no_optimizations") -> list[np.ndarray]:
    sess = session(model_bytes, level)
    return sess.run(None, {sess.get_inputs()[0].name: X})


def float_reference(net: Network, compressed: dict[str, CompressedWeight]) -> bytes:
    """``net.model`` with Ŵ substituted as dense float32 (dropped units stay as zero columns)."""
    model = onnx.ModelProto()
    model.CopyFrom(net.model)
    for init in model.graph.initializer:
        for layer in net.layers:
            if layer.weight_key == init.name and layer.name in compressed:
                W = layer.to_onnx_layout(compressed[layer.name].weight)
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(W, np.float32), init.name))
    return model.SerializeToString()


def numpy_mlp(net: Network, compressed: dict[str, CompressedWeight], X: np.ndarray) -> np.ndarray:
    """Ŵ forward in float64: relu(W z + b) between layers, identity at the end."""
    z = X.astype(np.float64)
    for i, layer in enumerate(net.layers):
        W = compressed[layer.name].weight if layer.name in compressed else layer.weight
        z = z @ W.astype(np.float64).T + (0 if layer.bias is None else layer.bias)
        if i < len(net.layers) - 1:
            z = np.maximum(z, 0)
    return z


def inputs(net: Network, n: int = 16, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_shape)).astype(np.float32)


def init_types(model_bytes: bytes) -> dict[str, int]:
    m = onnx.load_from_string(model_bytes)
    return {t.name: t.data_type for t in m.graph.initializer}


def weight_elements(net: Network) -> list[int]:
    return [int(layer.weight.size) for layer in net.layers]
