"""Executor: the torch interpreter equals onnxruntime on the original upload; overrides, capture,
inject and the onnxruntime fallback for generic graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from netshrink.compression.errors import UnsupportedModelError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from tests import factories as F


def _ort(model: onnx.ModelProto, X: np.ndarray, name: str) -> np.ndarray:
    """Run ``model`` in onnxruntime, exposing tensor ``name`` as an extra graph output if needed."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if name not in [o.name for o in m.graph.output]:
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run([name], {m.graph.input[0].name: X})[0])


CASES = {
    "torch_mlp": (lambda: F.mlp_onnx(), (8,)),
    "torch_cnn": (lambda: F.cnn_onnx(), (1, 8, 8)),
    "cnn_bn_node": (lambda: F.cnn_with_bn_node_onnx(), (1, 8, 8)),
    "sklearn_classifier": (lambda: F.sklearn_mlp_classifier_onnx(), (64,)),
    "sklearn_binary": (lambda: F.sklearn_mlp_classifier_onnx(True), (64,)),
    "sklearn_regressor": (lambda: F.sklearn_mlp_regressor_onnx(), (64,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_torch_path_equals_onnxruntime_on_the_upload(write, case: str) -> None:  # type: ignore[no-untyped-def]
    make, shape = CASES[case]
    data = make()
    net = load_model(write(data))
    assert net.support == "full"
    X = F.random_inputs(shape, 16, seed=3)
    out = Executor(net).run(torch.from_numpy(X), capture=[la.output for la in net.layers])
    ref = _ort(onnx.load_from_string(data), X, net.logits)
    np.testing.assert_allclose(out[net.logits].numpy(), ref, rtol=1e-5, atol=1e-5)
    for la in net.layers:  # captured intermediate tensors match too (BN folding keeps tensor names)
        np.testing.assert_allclose(
            out[la.output].numpy(), _ort(net.original, X, la.output), rtol=1e-5, atol=1e-5
        )


def _with_weight(net: Network, name: str, W: np.ndarray) -> onnx.ModelProto:
    """The working model with layer ``name``'s initializer replaced (canonical W)."""
    m = onnx.ModelProto()
    m.CopyFrom(net.model)
    layer = net.layer(name)
    init = next(t for t in m.graph.initializer if t.name == layer.weight_key)
    init.CopyFrom(numpy_helper.from_array(layer.to_onnx_layout(W).astype(np.float32), layer.weight_key))
    return m


@pytest.mark.parametrize("case", ["cnn_bn_node", "sklearn_classifier"])
def test_overrides_change_outputs_like_a_rewritten_graph(write, case: str) -> None:  # type: ignore[no-untyped-def]
    make, shape = CASES[case]
    net = load_model(write(make()))
    X = F.random_inputs(shape, 8, seed=1)
    ex = Executor(net)
    base = ex.run(torch.from_numpy(X))[net.logits]
    for layer in net.layers:
        W = layer.weight * (
            np.random.default_rng(layer.index).random(layer.weight.shape) > 0.5
        )  # prune ~half
        out = ex.run(torch.from_numpy(X), overrides={layer.name: torch.from_numpy(W.astype(np.float32))})
        assert not torch.allclose(out[net.logits], base)
        ref = _ort(_with_weight(net, layer.name, W), X, net.logits)
        np.testing.assert_allclose(out[net.logits].numpy(), ref, rtol=1e-5, atol=1e-5)
    same = ex.run(torch.from_numpy(X), overrides={la.name: torch.from_numpy(la.weight) for la in net.layers})
    torch.testing.assert_close(same[net.logits], base)


def test_generic_gated_graph_runs_through_onnxruntime(write) -> None:  # type: ignore[no-untyped-def]
    net = load_model(write(F.gated_onnx()))
    ex = Executor(net)
    assert ex.backend == "onnxruntime"
    X = F.random_inputs((8,), 8)
    out = ex.run(torch.from_numpy(X), capture=["h", "r"])
    assert set(out) == {"h", "r", "output"}
    np.testing.assert_allclose(out["output"].numpy(), _ort(net.original, X, "output"), rtol=1e-6, atol=1e-6)
    h = out["h"].numpy()
    np.testing.assert_allclose(out["r"].numpy(), h / (1 + np.exp(-h)), rtol=1e-5, atol=1e-6)
    W = np.zeros_like(net.layer("fc1").weight)
    zeroed = ex.run(torch.from_numpy(X), overrides={"fc1": torch.from_numpy(W)}, capture=["h"])
    b1 = net.layer("fc1").bias
    assert b1 is not None
    np.testing.assert_allclose(zeroed["h"].numpy(), np.broadcast_to(b1, (8, 8)), atol=1e-7)
    with pytest.raises(UnsupportedModelError):
        ex.run(torch.from_numpy(X), inject={"h": lambda t: t})


def test_inject_gives_jacobians_at_the_preactivation(write) -> None:  # type: ignore[no-untyped-def]
    """d logits / d preact via an injected zero perturbation equals the analytic W3 · diag(relu') chain."""
    net = load_model(write(F.mlp_onnx()))
    ex = Executor(net, dtype=torch.float64)
    l2 = net.layers[1]
    X = torch.from_numpy(F.random_inputs((8,), 4)).double()
    delta = torch.zeros(4, 16, dtype=torch.float64, requires_grad=True)
    out = ex.run(X, inject={l2.preact: lambda t: t + delta}, capture=[l2.preact])
    assert out[net.logits].dtype == torch.float64
    (g,) = torch.autograd.grad(out[net.logits][:, 0].sum(), delta)  # (S, 16)
    W3 = torch.from_numpy(net.layers[2].weight).double()  # (4, 16)
    expected = (out[l2.preact] > 0).double() * W3[0]
    torch.testing.assert_close(g, expected)


def test_float64_matches_float32_and_gradients_flow_to_overrides(write) -> None:  # type: ignore[no-untyped-def]
    net = load_model(write(F.cnn_with_bn_node_onnx()))
    X = torch.from_numpy(F.random_inputs((1, 8, 8), 4))
    y32 = Executor(net).run(X)[net.logits]
    W = torch.from_numpy(net.layer("fc").weight).double().requires_grad_(True)
    y64 = Executor(net, dtype=torch.float64).run(X, overrides={"fc": W})[net.logits]
    torch.testing.assert_close(y64.float(), y32, rtol=1e-5, atol=1e-6)
    y64.sum().backward()
    assert W.grad is not None and W.grad.abs().sum() > 0


def test_bad_arguments(write) -> None:  # type: ignore[no-untyped-def]
    net = load_model(write(F.mlp_onnx()))
    ex = Executor(net)
    with pytest.raises(ValueError):
        ex.run(torch.zeros(2, 9))
    with pytest.raises(KeyError):
        ex.run(torch.zeros(2, 8), overrides={"nope": torch.zeros(1)})
    with pytest.raises(ValueError):
        ex.run(torch.zeros(2, 8), overrides={net.layers[0].name: torch.zeros(3, 3)})
    with pytest.raises(KeyError):
        ex.run(torch.zeros(2, 8), capture=["no_such_tensor"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(write) -> None:  # type: ignore[no-untyped-def]
    net = load_model(write(F.cnn_with_bn_node_onnx()))
    X = torch.from_numpy(F.random_inputs((1, 8, 8), 8))
    cpu = Executor(net).run(X)[net.logits]
    gpu = Executor(net, device="cuda").run(X)[net.logits]
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_transposed_gemm_constant_node_and_scalar_arithmetic(write) -> None:  # type: ignore[no-untyped-def]
    """Gemm(transB=0) -> Mul by 2 -> Tanh -> Reshape(Constant shape) -> Gemm -> LogSoftmax."""
    from onnx import helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 5)).astype(np.float32)  # stored (in, out): transB=0
    w2 = rng.standard_normal((3, 5)).astype(np.float32)  # (out, in)
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], "fc1"),
        helper.make_node("Mul", ["h", "two"], ["h2"], "scale"),
        helper.make_node("Tanh", ["h2"], ["a"], "tanh"),
        helper.make_node(
            "Constant", [], ["shape"], "shape", value=numpy_helper.from_array(np.array([-1, 5]))
        ),
        helper.make_node("Reshape", ["a", "shape"], ["f"], "reshape"),
        helper.make_node("Gemm", ["f", "w2"], ["logits"], "fc2", transB=1),
        helper.make_node("LogSoftmax", ["logits"], ["output"], "lsm", axis=1),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.full(5, 0.1, np.float32), "b1"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(w2, "w2"),
    ]
    data = F.chain_model(nodes, inits, ["batch", 6], "output", ["batch", 3]).SerializeToString()
    net = load_model(write(data))
    assert net.support == "full" and net.logits == "logits" and net.tail == ["LogSoftmax"]
    fc1, fc2 = net.layers
    assert fc1.transposed and fc1.weight.shape == (5, 6) and fc1.lipschitz == 2.0 and fc1.activation == "tanh"
    assert fc2.structured and fc2.producer == "fc1" and fc2.bias is None
    X = F.random_inputs((6,), 7)
    out = Executor(net).run(torch.from_numpy(X))
    np.testing.assert_allclose(out["logits"].numpy(), _ort(net.original, X, "logits"), rtol=1e-5, atol=1e-5)
    W = fc1.weight.copy()
    W[:, 0] = 0.0  # canonical (out, in): drop input feature 0
    got = Executor(net).run(torch.from_numpy(X), overrides={"fc1": torch.from_numpy(W)})["logits"]
    np.testing.assert_allclose(
        got.numpy(), _ort(_with_weight(net, "fc1", W), X, "logits"), rtol=1e-5, atol=1e-5
    )
