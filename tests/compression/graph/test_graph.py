"""Graph analysis: layers, Φ, tail, support level, Lipschitz constants, BN folding, structured wiring.

Ref: docs/method.md "Notation", §1 "Structured pruning", §3 Lipschitz table.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.graph.batchnorm import fold_batchnorm
from netshrink.compression.graph.loading import load_model
from netshrink.compression.io.onnx_io import parse_onnx
from tests import factories as F


def _net(write, data: bytes):  # type: ignore[no-untyped-def]
    return load_model(write(data))


def test_torch_mlp_layers_and_wiring(write) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.mlp_onnx())
    assert net.support == "full" and not net.not_covered and net.tail == [] and not net.is_classifier
    assert [layer.weight.shape for layer in net.layers] == [(16, 8), (16, 16), (4, 16)]
    l1, l2, l3 = net.layers
    assert (l1.structured, l1.producer) == (False, None)
    assert (l2.structured, l2.producer, l2.input_group) == (True, l1.name, 1)
    assert (l3.structured, l3.producer) == (True, l2.name)
    assert l1.output == l2.input and l2.output == l3.input and l3.output == net.logits
    assert [layer.activation for layer in net.layers] == ["relu", "relu", "identity"]
    torch_mlp = F.tiny_mlp()
    np.testing.assert_array_equal(l2.weight, torch_mlp[2].weight.detach().numpy())
    # nothing folded: the as-uploaded weight is the same array, not a second copy (memory, issue 10)
    assert all(net.raw_weights[layer.name] is layer.weight for layer in net.layers)


def test_torch_cnn_flatten_groups_hw_columns(write) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.cnn_onnx(batchnorm=False))
    conv1, conv2, fc = net.layers
    assert (conv1.kind, conv2.kind, fc.kind) == ("conv", "conv", "dense")
    assert conv1.conv is not None and conv1.conv.pads == (1, 1, 1, 1) and conv1.conv.kernel_shape == (3, 3)
    assert (conv2.structured, conv2.producer, conv2.input_group) == (True, conv1.name, 1)
    assert (fc.structured, fc.producer, fc.input_group) == (True, conv2.name, 16)  # 6 channels x 4x4
    assert conv1.lipschitz == 1.0  # relu, non-overlapping 2x2 max pool


def test_bn_node_is_folded_and_raw_weights_are_unfolded(write) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.cnn_with_bn_node_onnx())
    assert "BatchNormalization" not in [n.op_type for n in net.model.graph.node]
    assert "BatchNormalization" in [n.op_type for n in net.original.graph.node]
    assert net.original.SerializeToString() == F.cnn_with_bn_node_onnx()  # the upload, untouched
    cnn = F.tiny_cnn(True)
    conv, bn = cnn.features[0], cnn.features[1]
    W, b = conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()  # (c_out, c_in, kh, kw)
    g, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    s = g / np.sqrt(var + 1e-5)  # (c_out,)
    layer = net.layer("conv1")
    np.testing.assert_allclose(layer.weight, W * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(layer.bias, (b - mean) * s + beta, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(net.raw_weights["conv1"], W.astype(np.float32))
    assert net.logits == "logits" and net.tail == ["Softmax"] and net.is_classifier
    assert net.layer("conv2").structured and net.layer("fc").input_group == 16


def test_folded_graph_computes_the_same_function(write) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.cnn_with_bn_node_onnx())
    X = F.random_inputs((1, 8, 8), 8)
    run = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"input": X}
        )[0]
        for m in (net.original, net.model)
    ]
    np.testing.assert_allclose(run[0], run[1], rtol=1e-5, atol=1e-6)


def test_conv_without_bias_gets_a_folded_bias() -> None:
    m = parse_onnx(F.cnn_with_bn_node_onnx(), max_dim=10**6, max_params=10**8)
    conv = m.graph.node[0]
    del conv.input[2:]
    folded, names = fold_batchnorm(m)
    assert names == ["bn1"] and folded.graph.node[0].input[2] == "conv1.bias"
    assert "conv1.bias" in {t.name for t in folded.graph.initializer}


@pytest.mark.parametrize("binary", [False, True])
def test_sklearn_classifier_logits_and_tail(write, binary: bool) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.sklearn_mlp_classifier_onnx(binary))
    assert net.support == "full" and net.is_classifier and net.logits == "add_result1"
    assert net.tail[0] == ("Sigmoid" if binary else "Softmax") and "ZipMap" in net.tail
    l1, l2 = net.layers
    assert l1.transposed and l1.weight.shape == (16, 64) and l1.bias is not None and l1.bias.shape == (16,)
    assert l1.bias_key == "intercepts" and l1.preact == "add_result" and l1.input == "cast_input"
    assert l2.weight.shape == ((1 if binary else 10), 16) and l2.structured and l2.producer == l1.name
    coef = numpy_helper.to_array(next(t for t in net.original.graph.initializer if t.name == "coefficient"))
    np.testing.assert_array_equal(net.raw_weights[l1.name], coef.T)  # canonical (out, in)


def test_sklearn_regressor_logits_is_the_output(write) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.sklearn_mlp_regressor_onnx())
    assert net.support == "full" and net.logits == "variable" and not net.is_classifier
    assert net.layers[0].activation == "tanh"


def test_residual_graph_is_a_full_dag_and_a_gated_one_is_generic(write) -> None:  # type: ignore[no-untyped-def]
    net = _net(write, F.residual_onnx())
    assert net.support == "full" and net.dag and not net.not_covered
    assert [la.name for la in net.layers] == ["fc1", "fc2"]
    assert not net.layer("fc2").structured  # its input is the Add: coupled channels, not a chain
    gated = _net(write, F.gated_onnx())
    assert gated.support == "generic" and any("Mul 'gated' of two tensors" in r for r in gated.not_covered)


def _pool_chain(write, pool: object, act: object) -> list[float]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)  # (c_out, c_in, kh, kw)
    w2 = rng.standard_normal((3, 2, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        act,
        pool,
        helper.make_node("Conv", ["p", "w2"], ["output"], "conv2"),
    ]
    m = F.chain_model(
        nodes,
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
        ["batch", 1, 8, 8],
        "output",
        ["batch", 3, "h", "w"],
    )
    net = load_model(write(m.SerializeToString()))
    return [net.layers[0].lipschitz, net.layers[0].activation]  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("act", "pool", "expected"),
    [
        (
            helper.make_node("LeakyRelu", ["c1"], ["a"], alpha=2.5),
            helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            2.5,
        ),
        (
            helper.make_node("Sigmoid", ["c1"], ["a"]),
            helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
            0.25 * 3.0,
        ),
        (
            helper.make_node("Gelu", ["c1"], ["a"]),
            helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            1.13 * 0.5,
        ),
        (
            helper.make_node("Softplus", ["c1"], ["a"]),
            helper.make_node("GlobalAveragePool", ["a"], ["p"]),
            1.0 / 8.0,
        ),
        (
            helper.make_node("Tanh", ["c1"], ["a"]),
            helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], strides=[2, 2]),
            math.sqrt(4),
        ),
    ],
)
def test_lipschitz_table(write, act: object, pool: object, expected: float) -> None:  # type: ignore[no-untyped-def]
    L, _ = _pool_chain(write, pool, act)
    assert L == pytest.approx(expected, rel=1e-12)


def test_avgpool_norm_bound_holds_numerically(write) -> None:  # type: ignore[no-untyped-def]
    """The AveragePool constant is an upper bound on its operator norm (power iteration on A^T A)."""
    pool = helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[3, 3], strides=[1, 1])
    L, _ = _pool_chain(write, pool, helper.make_node("Relu", ["c1"], ["a"]))
    import torch

    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    for _ in range(200):
        x = x.requires_grad_(True)
        y = torch.nn.functional.avg_pool2d(x, 3, 1)
        (g,) = torch.autograd.grad((y * y).sum() / 2, x)  # A^T A x
        x = (g / g.norm()).detach()
    norm = torch.nn.functional.avg_pool2d(x, 3, 1).norm().item()
    assert norm <= L + 1e-9 and norm > 0.5 * L


def test_shared_weight_and_mid_graph_softmax_are_generic(write) -> None:  # type: ignore[no-untyped-def]
    w = np.eye(4, dtype=np.float32)
    nodes = [
        helper.make_node("Gemm", ["input", "w"], ["h"], "fc1", transB=1),
        helper.make_node("Softmax", ["h"], ["s"], "mid_softmax", axis=1),
        helper.make_node("Gemm", ["s", "w"], ["output"], "fc2", transB=1),
    ]
    net = load_model(
        write(
            F.chain_model(
                nodes, [numpy_helper.from_array(w, "w")], ["batch", 4], "output"
            ).SerializeToString()
        )
    )
    assert net.support == "generic"
    assert any("shared" in r for r in net.not_covered)
    assert any("mid_softmax" in r for r in net.not_covered)


@pytest.mark.parametrize(
    ("to", "full"),
    [
        (TensorProto.FLOAT, True),
        (TensorProto.DOUBLE, True),
        (TensorProto.FLOAT16, False),
        (TensorProto.BFLOAT16, False),
    ],
)
def test_a_cast_that_rounds_is_not_covered(write, to: int, full: bool) -> None:  # type: ignore[no-untyped-def]
    """A float16 round trip between two layers rounds the error: |r(a) − r(b)| can exceed |a − b|
    (below), so a bound that takes the Cast as L = 1 would not hold. Exact casts keep full support."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["input", "w1"], ["h"], "fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("Cast", ["r"], ["c"], "down", to=to),
        helper.make_node("Cast", ["c"], ["c32"], "up", to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["c32", "w2"], ["output"], "fc2", transB=1),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    model = F.chain_model(nodes, inits, ["batch", 4], "output", ["batch", 3])
    net = load_model(write(model.SerializeToString()))
    assert len(net.layers) == 2
    assert (net.support == "full") is full
    if not full:
        name = TensorProto.DataType.Name(to)
        assert f"Cast 'down' to {name} rounds the error: bounds not covered" in net.not_covered
    # the reason, by hand: the two float32 neighbours of float16's midpoint 1 + 2⁻¹¹, 2 ulp(float32)
    # apart, round to 1 and 1 + 2⁻¹⁰: the difference grows 2¹¹-fold
    mid = np.float32(1.0 + 2.0**-11)
    a, b = np.nextafter(mid, np.float32(0.0)), np.nextafter(mid, np.float32(2.0))
    assert float(np.float16(b)) - float(np.float16(a)) == 2.0**-10
    assert float(b) - float(a) == 2.0**-22
