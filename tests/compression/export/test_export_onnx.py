"""Oracles for the compressed ONNX writer (compression/export/export_onnx.py, docs/method.md §5).

The reference for every artifact is the same network evaluated with Ŵ: a numpy forward pass for the
MLPs, and the working graph with Ŵ substituted as dense float32 (dropped units as zero columns) for
the CNN and the sklearn classifier, both run with ORT_DISABLE_ALL.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.errors import InvalidSpecError, UnsupportedModelError
from netshrink.compression.evaluation.ort_eval import session
from netshrink.compression.export.export_onnx import export_onnx, export_onnx_detailed
from netshrink.compression.export.storage import storage_summary
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network

torch.set_num_threads(1)


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


# ---- tests ---------------------------------------------------------------------------------------
def test_nothing_compressed_returns_the_upload_unchanged(tmp_path: Path) -> None:
    upload = mlp_gemm().SerializeToString()
    net = load(tmp_path, upload)
    out = export_onnx(net, {})
    assert out == upload
    m = onnx.load_from_string(out)
    assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    X = inputs(net)
    np.testing.assert_array_equal(run(out, X)[0], run(upload, X)[0])


@pytest.mark.parametrize(("bits", "dtype", "ratio"), [(8, "int8", 4.0), (4, "int4", 8.0), (3, "int4", 8.0)])
def test_integer_storage_shrinks_by_the_container_factor(
    tmp_path: Path, bits: int, dtype: str, ratio: float
) -> None:
    net = load(tmp_path, mlp_gemm())
    cw = {layer.name: quantized(net, layer.name, bits) for layer in net.layers}
    exp = export_onnx_detailed(net, cw)
    data = exp.data
    before, after = storage_summary(net.original.SerializeToString()), storage_summary(data)
    n = weight_elements(net)
    n_bias = sum(layer.n_out for layer in net.layers)
    # the codes: exactly one byte (int8) or half a byte (int4, packed) per weight
    assert after["by_dtype"][dtype] == sum(math.ceil(k * (32 / ratio) / 8) for k in n)
    assert before["by_dtype"]["float32"] == 4 * (sum(n) + n_bias)
    # what stays float: biases + one scale per row
    assert after["by_dtype"]["float32"] == 4 * (n_bias + n_bias)
    assert 4 * sum(n) / after["by_dtype"][dtype] == pytest.approx(ratio, rel=1e-3)
    assert before["total"] / after["total"] > 0.85 * ratio / (1 + ratio * 2 * n_bias / sum(n))
    assert {s.weight for s in exp.layers} == {dtype} and exp.opset == 21
    types = init_types(data)
    assert {types[f"W{i}_quantized"] for i in range(3)} == {
        TensorProto.INT8 if dtype == "int8" else TensorProto.INT4
    }
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    X = inputs(net)
    ref = numpy_mlp(net, cw, X)
    exact = run(data, X, "no_optimizations")[0]
    np.testing.assert_allclose(exact, ref, rtol=1e-5, atol=1e-5)
    fused = run(data, X, "default")[0]
    rel = float(np.linalg.norm(fused - ref) / np.linalg.norm(ref))
    print(f"int{bits}: ORT default-optimization relative difference {rel:.2e}")
    assert rel < 2e-2  # docs/method.md §5: fusion may quantize activations; measured, not hidden


def test_transposed_matmul_uses_axis_1_and_per_layer_scale_is_scalar(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_matmul())
    cw = {"matmul0": quantized(net, "matmul0", 8), "matmul1": quantized(net, "matmul1", 4, per_row=False)}
    data = export_onnx(net, cw)
    m = onnx.load_from_string(data)
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    assert helper.get_attribute_value(dq["B0"].attribute[0]) == 1  # (in, out) layout: rows are axis 1
    scales = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("_scale")}
    assert scales["B0_scale"].shape == (16,) and scales["B1_scale"].shape == ()
    X = inputs(net)
    ref = numpy_mlp(net, cw, X)
    np.testing.assert_allclose(run(data, X)[0], ref, rtol=1e-5, atol=1e-5)
    # DQ+MatMul is where onnxruntime's default optimizations fuse into integer kernels (~0.4% here)
    fused = run(data, X, "default")[0]
    rel = float(np.linalg.norm(fused - ref) / np.linalg.norm(ref))
    print(f"MatMul int8/int4: ORT default-optimization relative difference {rel:.2e}")
    assert rel < 2e-2


@pytest.mark.parametrize(("frac", "storage"), [(0.05, "sparse"), (0.5, "dense")])
def test_float_outliers_are_added_back_exactly(tmp_path: Path, frac: float, storage: str) -> None:
    net = load(tmp_path, mlp_gemm((32, 64, 10)))
    cw = {layer.name: quantized(net, layer.name, 4, outlier_frac=frac) for layer in net.layers}
    exp = export_onnx_detailed(net, cw)
    assert {s.outliers for s in exp.layers} == {storage}
    X = inputs(net)
    np.testing.assert_allclose(run(exp.data, X)[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5)
    # the weight tensor the Gemm reads is Ŵ bit for bit (DQ(codes, 0 at outliers) + O)
    m = onnx.load_from_string(exp.data)
    m.graph.output.append(onnx.ValueInfoProto(name="W0"))
    W0 = run(m.SerializeToString(), X)[-1]
    np.testing.assert_array_equal(W0, cw["fc0"].weight)


def test_unstructured_pruning_saves_bytes_only_below_break_even(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_gemm((32, 128, 10)))
    before = storage_summary(net.original.SerializeToString())["by_dtype"]
    X = inputs(net)
    for density, sparse in [(0.5, False), (0.2, True)]:
        cw = {layer.name: pruned(net, layer.name, density) for layer in net.layers}
        exp = export_onnx_detailed(net, cw)
        after = storage_summary(exp.data)["by_dtype"]
        m = onnx.load_from_string(exp.data)
        assert (len(m.graph.sparse_initializer) == 2) is sparse
        if sparse:
            assert after["float32"] + after["int64"] < before["float32"]
        else:
            assert after == before  # dense zeros: this pruning saves no bytes on its own
        assert {s.weight for s in exp.layers} == {"sparse_float32" if sparse else "float32"}
        np.testing.assert_allclose(run(exp.data, X)[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            run(exp.data, X, "default")[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5
        )


def test_sparse_int8_codes_below_the_int8_break_even(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_gemm((32, 128, 10)))
    rng = np.random.default_rng(5)
    cw = {la.name: quantized(net, la.name, 8, keep=rng.random(la.weight.shape) < 0.05) for la in net.layers}
    exp = export_onnx_detailed(net, cw)
    assert {s.weight for s in exp.layers} == {"sparse_int8"}
    X = inputs(net)
    np.testing.assert_allclose(run(exp.data, X)[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5)
    dense_int8 = sum(weight_elements(net))
    assert storage_summary(exp.data)["by_dtype"]["int8"] < 0.1 * dense_int8


def test_neuron_pruning_deletes_rows_and_columns(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_gemm((32, 64, 48, 10)))
    drop1, drop2 = list(range(0, 64, 2)), [1, 5, 7]  # units of fc0 (fed to fc1), of fc1 (fed to fc2)
    cw = {"fc1": dropped_columns(net, "fc1", drop1), "fc2": dropped_columns(net, "fc2", drop2)}
    exp = export_onnx_detailed(net, cw)
    m = onnx.load_from_string(exp.data)
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    assert shapes["W0"] == (32, 32) and shapes["b0"] == (32,)
    assert shapes["W1"] == (45, 32) and shapes["b1"] == (45,)
    assert shapes["W2"] == (10, 45)
    assert len(exp.data) < 0.7 * len(net.original.SerializeToString())
    X = inputs(net)
    zero_columns = float_reference(net, cw)
    np.testing.assert_allclose(run(exp.data, X)[0], run(zero_columns, X)[0], rtol=1e-5, atol=1e-5)


def test_neuron_pruning_with_quantization_drops_scales_too(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_matmul((12, 16, 5)))
    drop = np.array([0, 3, 4, 9])
    cw = {"matmul0": quantized(net, "matmul0", 8), "matmul1": quantized(net, "matmul1", 4, dropped=drop)}
    data = export_onnx(net, cw)
    m = onnx.load_from_string(data)
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    assert shapes["B0_quantized"] == (12, 12) and shapes["B0_scale"] == (12,) and shapes["c0"] == (12,)
    assert shapes["B1_quantized"] == (12, 5)
    X = inputs(net)
    np.testing.assert_allclose(run(data, X)[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5)


def test_channel_pruning_rewrites_the_reshape_constant(tmp_path: Path) -> None:
    net = load(tmp_path, cnn_reshape())
    cw = {"conv2": dropped_columns(net, "conv2", [1]), "fc": dropped_columns(net, "fc", [0, 4])}
    data = export_onnx(net, cw)
    m = onnx.load_from_string(data)
    arrays = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert arrays["k1"].shape == (3, 1, 3, 3) and arrays["kb1"].shape == (3,)
    assert arrays["k2"].shape == (4, 3, 3, 3) and arrays["kb2"].shape == (4,)
    assert arrays["fw"].shape == (5, 64) and arrays["flat_shape"].tolist() == [-1, 64]
    assert len(data) < len(net.original.SerializeToString())
    X = inputs(net)
    np.testing.assert_allclose(run(data, X)[0], run(float_reference(net, cw), X)[0], rtol=1e-5, atol=1e-5)


def test_old_opset_is_converted_for_int4_unless_forbidden(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_gemm((16, 32, 4), opset=17))
    cw = {layer.name: quantized(net, layer.name, 4) for layer in net.layers}
    X = inputs(net)
    for kwargs, opset, dtype in [
        ({}, 21, "int4"),
        ({"target_opset": 17}, 17, "int8"),
        ({"int8_only": True}, 17, "int8"),
    ]:
        exp = export_onnx_detailed(net, cw, **kwargs)  # type: ignore[arg-type]
        m = onnx.load_from_string(exp.data)
        assert exp.opset == opset == next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        assert {s.weight for s in exp.layers} == {dtype}
        np.testing.assert_allclose(run(exp.data, X)[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5)


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    net = load(tmp_path, cnn_reshape())
    cw = {"conv1": quantized(net, "conv1", 8), "conv2": quantized(net, "conv2", 4, dropped=np.array([2])),
          "fc": quantized(net, "fc", 4, outlier_frac=0.05)}  # fmt: skip
    first, second = export_onnx(net, cw), export_onnx(net, cw)
    assert first == second
    X = inputs(net)
    np.testing.assert_allclose(run(first, X)[0], run(float_reference(net, cw), X)[0], rtol=1e-5, atol=1e-5)


def test_sklearn_tail_kept_working(tmp_path: Path) -> None:
    from tests.factories import digits_inputs, sklearn_mlp_classifier_onnx

    upload = sklearn_mlp_classifier_onnx()
    net = load(tmp_path, upload)
    cw = {layer.name: quantized(net, layer.name, 8) for layer in net.layers}
    data = export_onnx(net, cw)
    orig, new = onnx.load_from_string(upload), onnx.load_from_string(data)
    assert [o.name for o in new.graph.output] == [o.name for o in orig.graph.output]
    assert [i.name for i in new.graph.input] == [i.name for i in orig.graph.input]
    assert [n.op_type for n in new.graph.node if n.op_type in ("ZipMap", "ArgMax")] == [
        n.op_type for n in orig.graph.node if n.op_type in ("ZipMap", "ArgMax")
    ]
    X, _ = digits_inputs(32)
    labels = run(data, X)[0]
    np.testing.assert_array_equal(labels, run(float_reference(net, cw), X)[0])


def test_old_target_opset_gets_int8_containers_or_a_clear_error(tmp_path: Path) -> None:
    net = load(tmp_path, mlp_gemm((16, 32, 4), opset=13))
    cw = {layer.name: quantized(net, layer.name, 3) for layer in net.layers}
    exp = export_onnx_detailed(net, cw, target_opset=13)
    assert exp.opset == 13 and {s.weight for s in exp.layers} == {"int8"} and exp.notes
    X = inputs(net)
    np.testing.assert_allclose(run(exp.data, X)[0], numpy_mlp(net, cw, X), rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidSpecError):
        export_onnx(net, cw, target_opset=11)  # per-axis DequantizeLinear needs opset 13
    newer = load(tmp_path, mlp_gemm((16, 32, 4), opset=21), "newer.onnx")
    with pytest.raises(UnsupportedModelError):  # onnx has no Relu-14 -> 13 down-adapter
        export_onnx(newer, {la.name: quantized(newer, la.name, 8) for la in newer.layers}, target_opset=13)


def test_batchnorm_graph_exports_folded_and_channel_pruned(tmp_path: Path) -> None:
    from tests.factories import cnn_with_bn_node_onnx

    net = load(tmp_path, cnn_with_bn_node_onnx())
    cw = {
        "conv2": dropped_columns(net, "conv2", [0, 3]),
        "fc": quantized(net, "fc", 4, dropped=np.array([2])),
    }
    data = export_onnx(net, cw)
    m = onnx.load_from_string(data)
    assert "BatchNormalization" not in {n.op_type for n in m.graph.node}
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    assert shapes["features.0.weight"] == (2, 1, 3, 3) and shapes["features.4.weight"] == (5, 2, 3, 3)
    X = inputs(net, 8)
    np.testing.assert_allclose(run(data, X)[0], run(float_reference(net, cw), X)[0], rtol=1e-5, atol=1e-6)
