"""Bounds through residual Add, channel Concat and depthwise convs (docs/bounds-dag.md), checked by
Monte Carlo on the three small CNNs of tests/dag_models.py, and the root/sum rules by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netshrink.compression.bounds.certificate import SigmaBound
from netshrink.compression.bounds.coupled import CoupledTerms
from netshrink.compression.bounds.dag import propagate_dag
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import draw_network
from netshrink.compression.search.measure import measure
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D
from tests import factories as F

DRAWS = 6


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Network]:
    d = tmp_path_factory.mktemp("dagb")
    out = {}
    for name in D.BUILDERS:
        path = d / f"{name}.onnx"
        path.write_bytes(D.onnx_bytes(name))
        out[name] = load_model(path)
    return out


SPECS = {
    "quant4": {"quantize": {"bits": 4}},
    "prune-weight": {"prune": {"keep": 0.7}},
    "channel": {"prune": {"keep": 0.75, "granularity": "channel"}},  # coupled residual-stream groups
    "channel+quant4": {"prune": {"keep": 0.75, "granularity": "channel"}, "quantize": {"bits": 4}},
}


@pytest.mark.parametrize("arch", tuple(D.BUILDERS))
@pytest.mark.parametrize("case", tuple(SPECS))
@pytest.mark.slow
def test_mean_error_over_draws_below_the_dag_bound(nets: dict[str, Network], arch: str, case: str) -> None:
    """Mean E‖Φ−Φ̂‖² over draws ≤ mean tier-E (and T) bound, end to end and at every layer's output;
    tier W holds for every single draw; P ≥ T wherever P is reported; channel pruning of a residual
    stream (coupled groups, docs/bounds-dag.md) is covered in E and T, P only where it is a bound."""
    net = nets[arch]
    ex = Executor(net)
    X_fit = torch.from_numpy(D.task_data(96, seed=11)[0])
    X_ho = torch.from_numpy(D.task_data(64, seed=12)[0])
    mse, bound_E, bound_T = [], [], []
    layer_err: dict[str, list[float]] = {la.name: [] for la in net.layers}
    layer_B: dict[str, list[float]] = {la.name: [] for la in net.layers}
    coupled = 0
    for seed in range(DRAWS):
        s = CompressSpec.from_dict({**SPECS[case], "seed": seed})
        nd = draw_network(net, ex, s, X_fit, draw=0)
        if "channel" not in case:
            assert set(nd.layers) == {la.name for la in net.layers}  # every conv, depthwise included
        m = measure(net, ex, nd, X_ho, None)
        e2e = m.end_to_end
        assert e2e["E"] is not None and e2e["T"] is not None and e2e["W"] is not None
        assert m.error.mse <= e2e["W"]
        assert e2e["E"] <= e2e["T"] * (1 + 1e-9)
        for name, tb in m.bounds.items():
            coupled += tb.coupled is not None
            assert tb.tiers["E"].cumulative is not None, (name, tb.tiers["E"].reason)
            if tb.tiers["P"].A is not None:
                assert tb.tiers["P"].A >= tb.tiers["T"].A * (1 - 1e-9), name  # type: ignore[operator]
            layer_err[name].append(m.layer_errors[name])
            layer_B[name].append(tb.tiers["E"].cumulative)  # type: ignore[arg-type]
        if e2e["P"] is not None:
            assert e2e["P"] >= e2e["T"] * (1 - 1e-9)
        mse.append(m.error.mse)
        bound_E.append(e2e["E"])
        bound_T.append(e2e["T"])
    assert 0 < np.mean(mse) <= np.mean(bound_E)
    for name in layer_err:
        assert np.mean(layer_err[name]) <= np.mean(layer_B[name]), name
    if "channel" in case and arch in ("resnet", "mobilenet"):
        assert coupled > 0  # the residual stream's readers took the coupled rule


def test_add_takes_the_root_form_and_concat_the_sum(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """residual_onnx: s = relu(fc1 x) + x, output = fc2 s. B_h = A1, B_s = (√B_h + 0)², out = σ2²B_s + A2."""
    net = load_model(F.write_bytes(F.residual_onnx(), tmp_path / "r.onnx"))
    terms = {"fc1": (2.0, {"E": 0.5, "W": 0.25}), "fc2": (3.0, {"E": 0.1, "W": None})}
    B = propagate_dag(net, terms, ("E", "W"))
    assert B["h"]["E"] == 0.5 and B["s"]["E"] == pytest.approx(0.5)  # the skip carries x exactly
    assert B["output"]["E"] == pytest.approx(9 * 0.5 + 0.1)
    assert B["output"]["W"] is None  # not covered upstream -> not covered downstream
    # Both operands perturbed: the root form, not the sum.
    net.model.graph.node[2].input[1] = "h"  # s = relu(h) + h
    B2 = propagate_dag(net, terms, ("E",))
    assert B2["s"]["E"] == pytest.approx((math.sqrt(0.5) + math.sqrt(0.5)) ** 2)


def test_concat_sums_its_branches(nets: dict[str, Network]) -> None:
    net = nets["concat"]
    a, b1, b2 = (la.name for la in net.layers[:3])
    terms = {la.name: (1.0, {"E": 0.0, "T": 0.0}) for la in net.layers}
    terms[a] = (1.0, {"E": 1.0, "T": 1.0})
    terms[b2] = (1.0, {"E": 4.0, "T": None})  # tier T not covered on one branch
    B = propagate_dag(net, terms, ("E", "T"))
    cat = next(n.output[0] for n in net.model.graph.node if n.op_type == "Concat")
    la, lb = net.layer(a).lipschitz, net.layer(b2).lipschitz
    assert B[cat]["E"] == pytest.approx(la**2 * 1.0 + lb**2 * 4.0)
    assert B[cat]["T"] is None  # a part not covered: the concatenation is not


def test_every_rule_by_hand_on_the_residual_net(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """residual_onnx: h = fc1 x, r = relu h, s = r + x, output = fc2 s; B per tier written out. The
    input is exact, so B_h = σ1²·0 + A1 = A1; relu (L = 1) and the skip, (√A1 + √0)², keep it; fc2
    gives σ2² B_s + A2 (E, T, P) and (σ2 √B_s + √A2)² (W). With fc2 coupled, E and T take
    (σ̄ √B_s + √A_dense)² + A_q instead, and P and W keep their rules."""
    net = load_model(F.write_bytes(F.residual_onnx(), tmp_path / "r.onnx"))
    tiers = ("E", "T", "P", "W")
    A1 = {"E": 0.5, "T": 0.7, "P": 0.9, "W": 0.25}
    A2 = {"E": 0.1, "T": 0.2, "P": 0.3, "W": 0.04}
    B = propagate_dag(net, {"fc1": (2.0, A1), "fc2": (3.0, A2)}, tiers)
    for t in tiers:
        assert B["input"][t] == 0.0
        assert B["h"][t] == B["r"][t] == pytest.approx(A1[t])
        assert B["s"][t] == pytest.approx(A1[t])
    for t in ("E", "T", "P"):
        assert B["output"][t] == pytest.approx(9 * A1[t] + A2[t])
    assert B["output"]["W"] == pytest.approx((3 * math.sqrt(0.25) + math.sqrt(0.04)) ** 2)

    cert = SigmaBound(1.5, 1.5, "svd", "exact")
    coupled = {"fc2": CoupledTerms(1.5, {"E": 0.3, "T": 0.4}, {"E": 0.05, "T": 0.06}, cert)}
    Bc = propagate_dag(net, {"fc1": (2.0, A1), "fc2": (3.0, A2)}, tiers, coupled=coupled)
    assert Bc["output"]["E"] == pytest.approx((1.5 * math.sqrt(0.5) + math.sqrt(0.3)) ** 2 + 0.05)
    assert Bc["output"]["T"] == pytest.approx((1.5 * math.sqrt(0.7) + math.sqrt(0.4)) ** 2 + 0.06)
    assert Bc["output"]["P"] == B["output"]["P"] and Bc["output"]["W"] == B["output"]["W"]

    # a tier not covered at fc1 is not covered downstream; the others are unchanged
    Bn = propagate_dag(net, {"fc1": (2.0, {**A1, "P": None}), "fc2": (3.0, A2)}, tiers)
    assert Bn["h"]["P"] is None and Bn["s"]["P"] is None and Bn["output"]["P"] is None
    assert Bn["output"]["E"] == pytest.approx(9 * 0.5 + 0.1)

    # a layer left out of ``terms`` is uncompressed: exact where its input is, refused where it is not
    B0 = propagate_dag(net, {"fc2": (3.0, A2)}, tiers)
    assert all(B0["s"][t] == 0.0 and B0["output"][t] == pytest.approx(A2[t]) for t in tiers)
    with pytest.raises(KeyError, match="fc2"):
        propagate_dag(net, {"fc1": (2.0, A1)}, tiers)


def _graph_net():  # type: ignore[no-untyped-def]
    """A hand-built graph for ``propagate_dag`` alone (no loader): a Constant first, then
    h = fc1 x (Gemm), h1 = h + c (a Constant), k = Identity(initializer) (no dynamic input),
    s = h1 + k + y (y a second graph input: exact), m = fc2 s (MatMul), output = −3·m (Mul, L = 3)."""
    from types import SimpleNamespace

    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [
        numpy_helper.from_array(np.eye(4, dtype=f32), "w1"),
        numpy_helper.from_array(np.zeros(4, f32), "b1"),
        numpy_helper.from_array(np.ones(4, f32), "k0"),
        numpy_helper.from_array(np.eye(4, dtype=f32), "w2"),
        numpy_helper.from_array(np.array([-3.0], f32), "three"),
    ]
    c = numpy_helper.from_array(np.full(4, 0.5, f32), "cval")
    nodes = [
        helper.make_node("Constant", [], ["c"], "const", value=c),
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], "fc1", transB=1),
        helper.make_node("Add", ["h", "c"], ["h1"], "plus_c"),
        helper.make_node("Identity", ["k0"], ["k"], "ident"),
        helper.make_node("Add", ["h1", "k"], ["s0"], "plus_k"),
        helper.make_node("Add", ["s0", "y"], ["s"], "plus_y"),
        helper.make_node("MatMul", ["s", "w2"], ["m"], "fc2"),
        helper.make_node("Mul", ["m", "three"], ["output"], "scale"),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("input", "y")]
    out = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2, 4])]
    model = helper.make_model(helper.make_graph(nodes, "g", vi, out, inits))
    layers = [SimpleNamespace(name="fc1"), SimpleNamespace(name="fc2")]
    return SimpleNamespace(model=model, layers=layers, input_name="input", logits="output")


def test_propagate_dag_rules_on_a_hand_built_graph() -> None:
    """B_h = A1 (E 0.5, W 0: (2·0 + √0)² = 0); a constant added, an Identity of a constant (B = 0) and
    a second graph input (exact, B = 0) leave B_s = B_h; the MatMul layer gives σ2²B_s + A2 (E) and
    (σ2 √B_s + √A2)² (W); the Mul by −3 multiplies B by L² = 9."""
    net = _graph_net()
    B = propagate_dag(
        net, {"fc1": (2.0, {"E": 0.5, "W": 0.0}), "fc2": (3.0, {"E": 0.1, "W": 0.04})}, ("E", "W")
    )  # type: ignore[arg-type]
    assert (B["h"]["E"], B["h"]["W"]) == (pytest.approx(0.5), 0.0)
    for t in ("h1", "s0", "s"):
        assert (B[t]["E"], B[t]["W"]) == (pytest.approx(0.5), 0.0), t
    assert (B["k"]["E"], B["k"]["W"]) == (0.0, 0.0)
    assert B["m"]["E"] == pytest.approx(9 * 0.5 + 0.1) and B["m"]["W"] == pytest.approx(0.04)
    assert B["output"]["E"] == pytest.approx(9 * (9 * 0.5 + 0.1))
    assert B["output"]["W"] == pytest.approx(9 * 0.04)
