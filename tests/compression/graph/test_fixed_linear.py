"""A Gemm/MatMul by a fixed matrix that is no layer scales the error by ‖C‖₂, never by 1.

Oracles: the spectral norm from the eigenvalues of CᵀC (not LAPACK's SVD that the code calls), and
the ratio ‖C(x − x̂)‖ / ‖x − x̂‖ over random directions, which can never exceed a true Lipschitz
constant. The end-to-end test is the bug this module fixed: a model y = W₂·vec(C·reshape(relu(W₁x)))
with only W₁ compressed; tier W holds for every draw, and it was 32,184× below the measured error
when the MatMul counted as Lipschitz 1.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.fixed_linear import fixed_linear_lipschitz
from netshrink.compression.graph.graph_index import GraphIndex
from netshrink.compression.graph.loading import load_model
from netshrink.compression.search.greedy import draw_network
from netshrink.compression.search.measure import measure
from netshrink.compression.spec import CompressSpec


def _node_and_index(op: str, C: np.ndarray, *, const_first: bool, alpha: float = 1.0):  # type: ignore[no-untyped-def]
    ins = ["C", "x"] if const_first else ["x", "C"]
    kw = {"alpha": alpha} if op == "Gemm" else {}
    node = helper.make_node(op, ins, ["y"], name="n", **kw)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(C, "C")],
    )  # fmt: skip
    return node, GraphIndex(helper.make_model(graph))


def _sigma(C: np.ndarray) -> float:
    C64 = C.astype(np.float64)
    return float(np.sqrt(np.linalg.eigvalsh(C64.T @ C64).max()))


@pytest.mark.parametrize("const_first", [True, False])
def test_matrix_constant_gives_its_spectral_norm(const_first: bool) -> None:
    rng = np.random.default_rng(0)
    C = rng.normal(size=(7, 5)).astype(np.float32) * 3.0  # (m, k)
    node, g = _node_and_index("MatMul", C, const_first=const_first)
    L = fixed_linear_lipschitz(node, g)
    assert _sigma(C) <= L <= _sigma(C) * (1 + 1e-5)
    for _ in range(200):  # no direction is stretched by more than L
        x = rng.normal(size=(5, 4)) if const_first else rng.normal(size=(4, 7))  # (k, n) / (n, m)
        y = C.astype(np.float64) @ x if const_first else x @ C.astype(np.float64)
        assert np.linalg.norm(y) <= L * np.linalg.norm(x)


def test_gemm_scales_by_alpha_and_a_vector_by_its_norm() -> None:
    C = np.array([[3.0, 0.0], [0.0, 1.0]], np.float32)  # σ = 3 by hand
    node, g = _node_and_index("Gemm", C, const_first=True, alpha=-2.0)
    assert fixed_linear_lipschitz(node, g) == pytest.approx(6.0, rel=1e-5)
    v = np.array([3.0, 4.0], np.float32)  # ‖v‖ = 5 by hand
    node, g = _node_and_index("MatMul", v, const_first=False)
    assert fixed_linear_lipschitz(node, g) == pytest.approx(5.0, rel=1e-5)


def test_batched_constant_counts_every_slice() -> None:
    """x of shape (k, n) broadcast against C of shape (2, m, k): both slices read the same x, so
    ‖Y‖² = ‖C₀x‖² + ‖C₁x‖², and L = √(σ₀² + σ₁²) (here 3 and 4 by hand: L = 5)."""
    C = np.stack([np.diag([3.0, 1.0]), np.diag([0.5, 4.0])]).astype(np.float32)  # (2, 2, 2)
    node, g = _node_and_index("MatMul", C, const_first=True)
    L = fixed_linear_lipschitz(node, g)
    assert L == pytest.approx(5.0, rel=1e-5)
    x = np.array([[1.0], [1.0]]) / np.sqrt(2)  # (2, 1); ‖Y‖² = (9 + .25 + 1 + 16) / 2
    assert np.linalg.norm(C.astype(np.float64) @ x) <= L


def _mixing_model(path, form: str) -> None:  # type: ignore[no-untyped-def]
    """x(6) → Gemm fc1 → Relu → reshape (2, 3) → a fixed map of norm ≈ 1000 → flatten → Gemm fc2 → y.

    ``const_first``: C(5×2) @ ·, the constant as the first operand (15 features after it);
    ``batched_weight``: · @ D with D of shape (1, 3, 4), a 3-D weight that is no layer (8 features).
    """
    rng = np.random.default_rng(0)
    if form == "const_first":
        C = (1000 * np.eye(5, 2) + rng.normal(size=(5, 2))).astype(np.float32)  # (5, 2)
        mix, width = ["C", "r2"], 15
    else:
        C = (1000 * np.eye(3, 4) + rng.normal(size=(3, 4))).astype(np.float32)[None]  # (1, 3, 4)
        mix, width = ["r2", "C"], 8
    inits = [
        numpy_helper.from_array(rng.normal(size=(6, 6)).astype(np.float32), "W1"),
        numpy_helper.from_array(np.zeros(6, np.float32), "b1"),
        numpy_helper.from_array(C, "C"),
        numpy_helper.from_array((0.1 * rng.normal(size=(width, 10))).astype(np.float32), "W2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
        numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "s1"),
        numpy_helper.from_array(np.array([-1, width], np.int64), "s2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Reshape", ["r1", "s1"], ["r2"], name="rs1"),
        helper.make_node("MatMul", mix, ["m"], name="mix"),
        helper.make_node("Reshape", ["m", "s2"], ["m2"], name="rs2"),
        helper.make_node("Gemm", ["m2", "W2", "b2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "mix", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


@pytest.mark.parametrize("form", ["const_first", "batched_weight"])
def test_tier_w_holds_through_a_fixed_matmul_that_is_no_layer(tmp_path, form: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "mix.onnx"
    _mixing_model(path, form)
    net = load_model(path)
    assert net.support == "full" and [la.name for la in net.layers] == ["fc1", "fc2"]
    ex = Executor(net)
    X = torch.from_numpy(np.random.default_rng(1).normal(size=(128, 6)).astype(np.float32))  # (S, 6)
    base = {"quantize": {"bits": 2}, "exclude": ["fc2"], "compensate": False}
    for seed in range(3):
        nd = draw_network(net, ex, CompressSpec.from_dict({**base, "seed": seed}), X, draw=0)
        assert set(nd.layers) == {"fc1"}
        m = measure(net, ex, nd, X, None)
        assert m.error.mse > 0
        assert m.error.mse <= m.end_to_end["W"]  # type: ignore[operator]  # tier W: every draw


def test_a_no_layer_conv_with_a_computed_weight_is_not_covered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Conv(constant image, computed filter) is linear in the filter, but no fixed map: not covered."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(1, 1, 5, 5)).astype(np.float32), "img"),
        numpy_helper.from_array(np.array([1, 1, 1, 2], np.int64), "shape"),
        numpy_helper.from_array(rng.normal(size=(20, 3)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.array([-1, 20], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Reshape", ["h", "shape"], ["k"], name="rs"),
        helper.make_node("Conv", ["img", "k"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "flat"], ["f"], name="fl"),
        helper.make_node("MatMul", ["f", "W2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits,
    )  # fmt: skip
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    net = load_model(path)
    assert net.support == "generic"
    assert any("'conv' is no layer and no fixed linear map" in r for r in net.not_covered), net.not_covered
