"""The conv paths of the sensitivities (docs/method.md §3): the K outputs' weight gradients in one
batched product (grouped convs included) against the per-output reference, a residual net with a
grouped conv against per-sample autograd, and which layers take their group terms from an input probe,
by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.bounds import prediction
from netshrink.compression.bounds.prediction import sensitivities
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import ConvGeometry, Layer, Network
from tests import factories
from tests.compression.bounds.test_prediction import brute_force


def grouped_residual_onnx() -> bytes:
    """x (4, 6, 6) -> conv1 (4→4, 3×3, pad 1) -> Relu -> (+ x) -> gconv (4→6, 3×3, pad 1, 2 groups)
    -> Relu -> conv3 (6→3, 2×2, stride 2) -> Relu -> Flatten -> fc (27→5). x feeds conv1 and the Add
    (no probe for conv1); gconv's input feeds it alone but it has two groups (no probe); conv3 and fc
    read inputs that feed them alone (probes)."""
    rng = np.random.default_rng(7)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) / 2).astype(np.float32), name)

    inits = [
        init("w1", 4, 4, 3, 3),
        init("b1", 4),
        init("w2", 6, 2, 3, 3),
        init("b2", 6),
        init("w3", 3, 6, 2, 2),
        init("b3", 3),
        init("w4", 5, 27),
        init("b4", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Add", ["r1", "input"], ["s"], "residual"),
        helper.make_node("Conv", ["s", "w2", "b2"], ["c2"], "gconv", pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], "conv3", strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
        helper.make_node("Flatten", ["r3"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["output"], "fc", transB=1),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "grouped_residual",
        [vi("input", TensorProto.FLOAT, ["batch", 4, 6, 6])],
        [vi("output", TensorProto.FLOAT, ["batch", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", factories.OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def grouped_net(tmp_path_factory: pytest.TempPathFactory) -> Network:
    path = tmp_path_factory.mktemp("grouped") / "g.onnx"
    return load_model(factories.write_bytes(grouped_residual_onnx(), Path(path)))


def test_the_probes_go_to_layers_whose_input_feeds_them_alone_by_hand(grouped_net: Network) -> None:
    """conv1's input x also feeds the Add; gconv's and conv3's inputs feed them alone, but gconv has two
    groups (its ∂Φ/∂ẑ is no im2col adjoint of one weight matrix); fc's input feeds it alone."""
    layers = grouped_net.layers
    assert [(x.name, x.kind) for x in layers] == [
        ("conv1", "conv"),
        ("gconv", "conv"),
        ("conv3", "conv"),
        ("fc", "dense"),
    ]
    assert prediction._sole_input(grouped_net, layers, "conv") == {"gconv", "conv3"}
    assert prediction._sole_input(grouped_net, layers, "dense") == {"fc"}
    assert prediction._sole_input_conv(grouped_net, layers) == {"conv3"}
    assert prediction._sole_input_dense(grouped_net, layers) == {"fc"}
    # a layer list that leaves fc out: conv3 still reads its input alone
    assert prediction._sole_input_conv(grouped_net, layers[:3]) == {"conv3"}


@pytest.mark.parametrize("budget", [prediction.GRAD_BUDGET, 7])  # 7: one output, few samples at a time
def test_grouped_residual_sensitivities_equal_per_sample_autograd(
    grouped_net: Network, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """weight_sq and group_sq of every layer (a conv reading a shared input, a grouped conv, a probed
    conv, a probed dense layer) against ``brute_force``: one sample and output at a time, autograd."""
    monkeypatch.setattr(prediction, "GRAD_BUDGET", budget)
    X = torch.as_tensor(np.random.default_rng(4).standard_normal((5, 4, 6, 6)))  # float64
    run = Executor(grouped_net, dtype=torch.float64).run
    got = sensitivities(run, grouped_net, X, grouped_net.layers, chunk=3)
    want = brute_force(grouped_net, X)
    for layer in grouped_net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("group", [1, 2, 3])
def test_batched_weight_grads_equal_the_per_output_ones(group: int) -> None:
    """``_weight_grads_k`` (s, k', o, n_in) for k' = 3 outputs at once equals ``_weight_grads`` (checked
    against autograd through F.conv2d in test_prediction.py) of each output k, sample by sample; o = 6
    output channels, 2·group input channels, a 3×2 kernel with stride and padding (P = 15 positions)."""
    g = ConvGeometry((3, 2), (2, 1), (1, 0, 0, 1), (1, 1), group=group)
    rng = np.random.default_rng(group)
    W = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)  # (o, C/G, kh, kw)
    layer = Layer("c", 0, "conv", W, None, "w", None, conv=g)
    s, kk = 2, 3
    z = torch.from_numpy(rng.standard_normal((s, 2 * group, 7, 5)))  # (s, C, H, W) -> oh, ow = 3, 5
    deltas = [torch.from_numpy(rng.standard_normal((s, 6, 3, 5))) for _ in range(kk)]  # (s, o, oh, ow)
    D = torch.stack(deltas, dim=1).reshape(s, kk, 6, 15)  # (s, k', o, P)
    got = prediction._weight_grads_k(layer, D, prediction.im2col(layer, z))
    assert got.shape == (s, kk, 6, layer.n_in) == (s, kk, 6, 12)  # n_in = C/G·kh·kw
    for k, delta in enumerate(deltas):
        want = prediction._weight_grads(layer, delta, z)  # (s, o, n_in)
        torch.testing.assert_close(got[:, k], want, rtol=1e-12, atol=1e-12)
