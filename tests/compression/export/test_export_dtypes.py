"""A float16 or float64 upload exports as a float16 or float64 artifact (compression/export/
onnx_initializers.py ``write_weight``, export_onnx.py).

The oracle is the upload's own graph with Ŵ substituted as a dense initializer of the model's type
(float16(Ŵ), float64(Ŵ)), run in onnxruntime with ORT_DISABLE_ALL: the artifact must give the same
logits, keep the upload's input and output types, and pass the ONNX checker. Before, every weight
was written as float32 and the artifact failed the checker ("B has inconsistent type tensor(float)").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.evaluation.ort_eval import session
from netshrink.compression.export.export_onnx import export_onnx_detailed
from netshrink.compression.graph.network import Network
from tests.compression.export.export_models import (
    FLOAT_TYPES,
    as_type,
    inputs,
    load,
    mlp_gemm,
    mlp_matmul,
    pruned,
    quantized,
)


def reference(net: Network, compressed: dict[str, CompressedWeight], dtype: type) -> bytes:
    """The upload with Ŵ as dense ``dtype`` initializers (what the artifact's readers must see)."""
    model = onnx.ModelProto()
    model.CopyFrom(net.model)
    for init in model.graph.initializer:
        for layer in net.layers:
            if layer.weight_key == init.name and layer.name in compressed:
                W = layer.to_onnx_layout(compressed[layer.name].weight).astype(dtype)
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(W), init.name))
    return model.SerializeToString()


def logits(model: bytes, X: np.ndarray, dtype: type) -> np.ndarray:
    sess = session(model, "no_optimizations")
    (out,) = sess.run(None, {sess.get_inputs()[0].name: X.astype(dtype)})
    return np.asarray(out)


def io_types(model: bytes) -> tuple[int, int]:
    g = onnx.load_from_string(model).graph
    return g.input[0].type.tensor_type.elem_type, g.output[0].type.tensor_type.elem_type


CASES = {
    "int4": lambda net, n: quantized(net, n, 4),
    "int8 per layer": lambda net, n: quantized(net, n, 8, per_row=False),
    "int4 + dense outliers": lambda net, n: quantized(net, n, 4, outlier_frac=0.5),
    "int4 + sparse outliers": lambda net, n: quantized(net, n, 4, outlier_frac=0.05),
    "pruned sparse": lambda net, n: pruned(net, n, 0.1),
    "pruned dense": lambda net, n: pruned(net, n, 0.6),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("graph", ["gemm", "matmul"])
def test_the_artifact_keeps_the_uploads_float_type(
    tmp_path: Path, dtype: type, case: str, graph: str
) -> None:
    upload = as_type(mlp_gemm((16, 32, 10)) if graph == "gemm" else mlp_matmul(), dtype)
    net = load(tmp_path, upload)
    cw = {layer.name: CASES[case](net, layer.name) for layer in net.layers}
    exp = export_onnx_detailed(net, cw)  # runs the ONNX checker on what it wrote
    assert io_types(exp.data) == (FLOAT_TYPES[dtype], FLOAT_TYPES[dtype])
    m = onnx.load_from_string(exp.data)
    readers = {t for n in m.graph.node if n.op_type in ("Gemm", "MatMul") for t in n.input[1:2]}
    made = {n.output[0]: n.op_type for n in m.graph.node}
    inits = {t.name: t.data_type for t in m.graph.initializer} | {
        s.values.name: s.values.data_type for s in m.graph.sparse_initializer
    }
    for w in readers:  # each weight is a dtype initializer, or a Cast/Add of dtype made from the codes
        assert inits.get(w) == FLOAT_TYPES[dtype] or made[w] in ("Cast", "Add"), w
    if dtype == np.float16 and case.startswith("int4 +"):
        outliers = [t for t in m.graph.initializer if t.name.endswith("_outliers")] + [
            s.values for s in m.graph.sparse_initializer if s.values.name.endswith("_outliers")
        ]
        assert outliers and {t.data_type for t in outliers} == {TensorProto.FLOAT16}  # half the bytes
    X = inputs(net, n=24)
    got, ref = logits(exp.data, X, dtype), logits(reference(net, cw, dtype), X, dtype)
    assert got.dtype == dtype and got.shape == ref.shape == (24, net.layers[-1].n_out)
    tol = 2e-3 if dtype == np.float16 else 1e-12
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_the_dequantized_weight_is_the_cast_of_w_hat_bit_for_bit(tmp_path: Path, dtype: type) -> None:
    """The tensor a Gemm reads is dtype(Ŵ) exactly, outliers included (the float16 ones are added after
    the Cast: 0 + fp16(w) and fp16(c·s) + 0 are what the cast of the float32 sum gives)."""
    net = load(tmp_path, as_type(mlp_gemm((16, 32, 10)), dtype))
    cw = {layer.name: quantized(net, layer.name, 4, outlier_frac=0.2) for layer in net.layers}
    exp = export_onnx_detailed(net, cw)
    m = onnx.load_from_string(exp.data)
    m.graph.output.append(onnx.ValueInfoProto(name="W0"))
    sess = session(m.SerializeToString(), "no_optimizations")
    W0 = sess.run(["W0"], {"x": inputs(net).astype(dtype)})[0]
    assert W0.dtype == dtype
    np.testing.assert_array_equal(W0, cw["fc0"].weight.astype(dtype))
