"""The prediction's sensitivities against brute-force per-sample autograd (docs/method.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.bounds import prediction
from netshrink.compression.bounds.prediction import group_size, sensitivities
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network


def brute_force(net: Network, X: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """E_x Σ_k (∂Φ_k/∂W)² and E_x Σ_k (Σ_{j∈g} Σ_i ∂Φ_k/∂W_ij W_ij)², one sample and output at a time."""
    ex = Executor(net, dtype=torch.float64)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer in net.layers:
        W = torch.tensor(layer.weight, dtype=torch.float64, requires_grad=True)
        w_sq = np.zeros(layer.matrix.shape)
        g_sq = np.zeros(layer.n_in // group_size(layer))
        for x in X:
            phi = ex.run(x[None].double(), overrides={layer.name: W})[net.logits].reshape(-1)
            for k in range(phi.shape[0]):
                (grad,) = torch.autograd.grad(phi[k], W, retain_graph=True)
                G = grad.reshape(layer.n_out, -1).numpy()  # (o, j)
                w_sq += G**2
                contrib = (G * layer.matrix).sum(axis=0)  # (j,)
                g_sq += contrib.reshape(-1, group_size(layer)).sum(axis=1) ** 2
        out[layer.name] = (w_sq / len(X), g_sq / len(X))
    return out


@pytest.mark.parametrize("budget", [prediction.GRAD_BUDGET, 7])  # 7: the conv path in tiny pieces
def test_sensitivities_equal_per_sample_autograd(
    cnn_net: Network, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prediction, "GRAD_BUDGET", budget)
    X = torch.as_tensor(
        np.random.default_rng(0).standard_normal((5, *cnn_net.input_shape)), dtype=torch.float32
    )
    ex = Executor(cnn_net, dtype=torch.float64)
    got = sensitivities(ex.run, cnn_net, X.double(), cnn_net.layers, chunk=2)
    want = brute_force(cnn_net, X)
    for layer in cnn_net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=1e-6, atol=1e-12)
        # accumulated in float64, kept as float32 (the Sensitivity record): one rounding, ≤ 1 ulp apart
        sens = got[layer.name]
        assert (sens.layer, sens.group_size) == (layer.name, group_size(layer))
        assert sens.weight_sq.dtype == np.float32 and sens.group_sq.dtype == np.float64
        np.testing.assert_allclose(
            sens.weight_sq, want[layer.name][0].astype(np.float32), rtol=2**-23, atol=0
        )


def test_dense_sensitivities_equal_per_sample_autograd(mlp_net: Network) -> None:
    X = torch.as_tensor(
        np.random.default_rng(1).standard_normal((4, *mlp_net.input_shape)), dtype=torch.float64
    )
    got = sensitivities(Executor(mlp_net, dtype=torch.float64).run, mlp_net, X, mlp_net.layers, chunk=3)
    want = brute_force(mlp_net, X)
    for layer in mlp_net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=1e-6, atol=1e-12)


def test_input_probes_cover_the_sole_input_dense_layers(mlp_net: Network, cnn_net: Network) -> None:
    """The MLP's group terms come from ∂Φ/∂ẑ probes (every dense input feeds one layer); the CNN's
    conv layers keep the im2col path; the tests above check both against brute force."""
    assert prediction._sole_input_dense(mlp_net, mlp_net.layers) == {x.name for x in mlp_net.layers}
    dense = {x.name for x in cnn_net.layers if x.kind == "dense"}
    assert prediction._sole_input_dense(cnn_net, cnn_net.layers) <= dense


def test_predictions_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Σ_ij Var_ij S_ij over row blocks (two rows a block here, so three blocks for five rows), the
    variance given in the conv weight's 4-D shape; Σ_g τ²_g group_sq_g = 0.5·3 + 2·4 = 9.5."""
    S = np.arange(1.0, 11.0, dtype=np.float32).reshape(5, 2)  # (n_out, n_in) = 1..10
    var = np.array([0.5, 0.0, 1.0, 2.0, 0.0, 0.25, 1.0, 1.0, 0.5, 0.5], np.float32).reshape(5, 2, 1, 1)
    sens = prediction.Sensitivity("l", S, np.array([3.0, 4.0]), 1)
    want = 0.5 * 1 + 1.0 * 3 + 2.0 * 4 + 0.25 * 6 + 1.0 * 7 + 1.0 * 8 + 0.5 * 9 + 0.5 * 10  # 37.5
    assert prediction.predict_independent(var, sens) == pytest.approx(37.5) == want
    monkeypatch.setattr(prediction, "PREDICT_BLOCK", 4)  # rows = 4 // 2 = 2 per block
    assert prediction.predict_independent(var, sens) == pytest.approx(37.5)
    assert prediction.predict_groups(np.array([0.5, 2.0]), sens) == pytest.approx(9.5)


@pytest.mark.parametrize(
    "kind,geom",
    [
        ("dense", None),
        ("conv", "strided-dilated"),
        ("conv", "grouped"),
    ],
)
def test_weight_grads_equal_per_sample_autograd(kind: str, geom: str | None) -> None:
    """``_weight_grads``(δ, z)[s] = ∂⟨δ_s, W z_s⟩/∂W (laid out (n_out, n_in)) for each sample, against
    torch autograd through F.linear / F.conv2d with the layer's padding, stride, dilation and groups."""
    from netshrink.compression.graph.network import ConvGeometry, Layer

    rng = np.random.default_rng(0)
    S = 3
    if kind == "dense":
        W = rng.standard_normal((4, 5)).astype(np.float32)
        layer = Layer("d", 0, "dense", W, None, "w", None)
        z = torch.from_numpy(rng.standard_normal((S, 5)))

        def fwd(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, w)
    else:
        g = (
            ConvGeometry((3, 2), (2, 1), (1, 0, 1, 1), (2, 1))
            if geom == "strided-dilated"
            else ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), group=2)
        )
        c_in = 2 if g.group == 1 else 4
        W = rng.standard_normal((4, c_in // g.group, *g.kernel_shape)).astype(np.float32)
        layer = Layer("c", 0, "conv", W, None, "w", None, conv=g)
        z = torch.from_numpy(rng.standard_normal((S, c_in, 7, 6)))

        def fwd(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            t, left, b, r = g.pads
            xp = torch.nn.functional.pad(x, (left, r, t, b))
            return torch.nn.functional.conv2d(xp, w, stride=g.strides, dilation=g.dilations, groups=g.group)

    Wt = torch.from_numpy(W.astype(np.float64))
    delta = torch.from_numpy(rng.standard_normal(tuple(fwd(Wt, z).shape)))
    got = prediction._weight_grads(layer, delta, z)
    assert got.shape == (S, layer.n_out, layer.n_in)
    for s in range(S):
        w = Wt.clone().requires_grad_(True)
        (fwd(w, z[s : s + 1]) * delta[s : s + 1]).sum().backward()
        assert w.grad is not None
        want = w.grad.reshape(layer.n_out, -1)  # (n_out, n_in); a grouped conv: n_in = C/G·kh·kw
        torch.testing.assert_close(got[s], want, rtol=1e-10, atol=1e-12)


def test_sole_input_dense_by_hand(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """residual_onnx: fc1 reads the graph input, which the residual Add reads too (no shortcut);
    fc2 reads s = relu(h) + x alone: only fc2 may take ∂Φ/∂ẑ = Σ_i δ_i W_ij."""
    from netshrink.compression.graph.loading import load_model
    from tests import factories as F

    net = load_model(F.write_bytes(F.residual_onnx(), tmp_path / "r.onnx"))
    assert prediction._sole_input_dense(net, net.layers) == {"fc2"}


def test_sum_product_by_hand_with_a_broadcast_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Σ_ij V_ij S_ij for S of V's shape or one row broadcast to every row (tier E's column energies),
    over blocks of two rows (PREDICT_BLOCK = 4 entries, rows of 2): V = 1..10 as (5, 2)."""
    V = np.arange(1.0, 11.0, dtype=np.float32).reshape(5, 2)
    monkeypatch.setattr(prediction, "PREDICT_BLOCK", 4)
    assert prediction.sum_product(V, np.array([[2.0, 0.5]])) == pytest.approx(2 * 25 + 0.5 * 30)  # 65
    assert prediction.sum_product(V, V.astype(np.float64)) == pytest.approx(385.0)  # Σ k², k = 1..10


def test_conv_patches_made_once_give_the_same_sensitivities(
    cnn_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conv's im2col patches are made once per chunk for all K outputs (``prediction._patches``);
    without them (over the memory budget) each output makes its own. Same numbers, bit for bit."""
    X = torch.as_tensor(
        np.random.default_rng(2).standard_normal((37, *cnn_net.input_shape)), dtype=torch.float32
    )
    ex = Executor(cnn_net)
    once = sensitivities(ex.run, cnn_net, X, cnn_net.layers, chunk=16)
    assert any(prediction._patches(layer, X) is not None for layer in cnn_net.layers[:1])  # the path is taken
    monkeypatch.setattr(prediction, "_patches", lambda layer, z: None)
    per_output = sensitivities(ex.run, cnn_net, X, cnn_net.layers, chunk=16)
    for layer in cnn_net.layers:
        assert np.array_equal(once[layer.name].weight_sq, per_output[layer.name].weight_sq)
        assert np.array_equal(once[layer.name].group_sq, per_output[layer.name].group_sq)


def test_the_zero_probe_adds_zero_and_takes_the_gradient() -> None:
    """``zero_probe``'s tensor leaves the value unchanged and receives ∂f/∂t: for f = Σ c ⊙ t, c itself."""
    holders: dict[str, torch.Tensor] = {}
    t = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    y = prediction.zero_probe(holders, "a")(t)
    assert torch.equal(y, t)
    c = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    (g,) = torch.autograd.grad((y * c).sum(), holders["a"])
    assert torch.equal(g, c)


def test_dense_layers_without_the_input_shortcut_equal_per_sample_autograd(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """residual_onnx's fc1 reads the graph input that the residual Add reads too: its group terms take
    the float64 product Σ_i δ_ki W_ij (no probe), fc2's the probe; both against brute force."""
    from netshrink.compression.graph.loading import load_model
    from tests import factories as F

    net = load_model(F.write_bytes(F.residual_onnx(), tmp_path / "r.onnx"))
    X = torch.as_tensor(np.random.default_rng(2).standard_normal((4, 8)), dtype=torch.float64)
    got = sensitivities(Executor(net, dtype=torch.float64).run, net, X, net.layers, chunk=3)
    want = brute_force(net, X)
    for layer in net.layers:
        np.testing.assert_allclose(got[layer.name].weight_sq, want[layer.name][0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name][1], rtol=1e-12, atol=1e-15)


def test_the_input_probes_go_where_the_group_terms_need_them(mlp_net: Network) -> None:
    """Which tensors ``sensitivities`` asks the executor to probe: every pre-activation, plus (group terms
    only) the input of every structured dense layer whose input feeds only it: all of the MLP's but
    the first, whose input is the model's (never pruned; its group terms come from the product,
    issue 11: the probe made every backward pass run through layer 1's input gradient)."""
    ex = Executor(mlp_net, dtype=torch.float64)
    X = torch.as_tensor(np.random.default_rng(1).standard_normal((2, *mlp_net.input_shape)))
    asked: list[set[str]] = []

    def run(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        asked.append(set(kwargs["inject"]))  # type: ignore[call-overload]
        return ex.run(*args, **kwargs)  # type: ignore[arg-type]

    preacts = {x.preact for x in mlp_net.layers}
    sensitivities(run, mlp_net, X, mlp_net.layers, groups=False)
    assert asked == [preacts]
    asked.clear()
    sensitivities(run, mlp_net, X, mlp_net.layers, groups=True)
    assert not mlp_net.layers[0].structured and all(x.structured for x in mlp_net.layers[1:])
    assert asked == [preacts | {x.input for x in mlp_net.layers[1:]}]


def test_no_probe_on_layer_1_changes_no_number_but_its_group_terms(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the probe on the model's input (issue 11), every weight_sq and the group terms of every
    structured layer are bit for bit those with it; layer 1's group terms (read by nothing) come from
    the product instead, equal to float32 rounding."""
    assert not mlp_net.layers[0].structured
    ex = Executor(mlp_net)  # float32, as in the pipeline
    X = torch.as_tensor(
        np.random.default_rng(2).standard_normal((300, *mlp_net.input_shape)), dtype=torch.float32
    )
    got = sensitivities(ex.run, mlp_net, X, mlp_net.layers, groups=True)
    with_probe = prediction._sole_input_dense(mlp_net, mlp_net.layers)
    assert mlp_net.layers[0].name in with_probe
    monkeypatch.setattr(prediction, "_probed_inputs", lambda net, layers: with_probe)
    want = sensitivities(ex.run, mlp_net, X, mlp_net.layers, groups=True)
    for layer in mlp_net.layers:
        assert np.array_equal(got[layer.name].weight_sq, want[layer.name].weight_sq)
        if layer.structured:
            assert np.array_equal(got[layer.name].group_sq, want[layer.name].group_sq)
        else:
            np.testing.assert_allclose(got[layer.name].group_sq, want[layer.name].group_sq, rtol=1e-5)


def test_dense_weight_sq_by_hand_in_row_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """E_x Σ_k δ_ki² ẑ_j² = Σ_s D_si Z_sj / S from two chunks' rows (S = 3), written out, one row a block
    (PREDICT_BLOCK = 2 entries, rows of 2); float32 even when torch's default dtype is float64."""
    D = [torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 1.0]]), torch.tensor([[2.0, 1.0, 0.25]])]  # (s, o)
    Z = [torch.tensor([[1.0, 4.0], [2.0, 0.0]]), torch.tensor([[3.0, 1.0]])]  # (s, j)
    want = np.array(
        [[1 * 1 + 0.5 * 2 + 2 * 3, 1 * 4 + 0 + 2 * 1], [2 * 1 + 0 + 1 * 3, 2 * 4 + 0 + 1 * 1],
         [3 * 1 + 1 * 2 + 0.25 * 3, 3 * 4 + 0 + 0.25 * 1]]
    ) / 3  # fmt: skip
    monkeypatch.setattr(prediction, "PREDICT_BLOCK", 2)
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        got = prediction._dense_weight_sq(torch.cat(D).double(), torch.cat(Z).double())
    finally:
        torch.set_default_dtype(default)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.astype(np.float32), rtol=1e-7)


def test_sum_product_is_float64_for_float32_operands() -> None:
    """Var and the sensitivities are float32: Σ_ij V_ij S_ij takes each product in float64 (exact for
    float32 factors) and sums in float64; the oracle sums the exact products with math.fsum."""
    import math

    rng = np.random.default_rng(3)
    V = rng.random((6, 7)).astype(np.float32)
    S = rng.random((6, 7)).astype(np.float32)
    want = math.fsum(float(v) * float(s) for v, s in zip(V.ravel(), S.ravel(), strict=True))
    assert prediction.sum_product(V, S) == pytest.approx(want, rel=1e-14)
    tau2 = np.array([0.3, 0.7], np.float32)
    sens = prediction.Sensitivity("l", S, np.array([0.1, 0.9]), 1)
    assert prediction.predict_groups(tau2, sens) == pytest.approx(
        math.fsum([float(tau2[0]) * 0.1, float(tau2[1]) * 0.9]), rel=1e-15
    )


@pytest.mark.parametrize("block", [prediction.PREDICT_BLOCK, 40])  # 40: several row blocks per layer
def test_factored_sensitivities_give_the_same_prediction_without_the_dense_matrix(
    mlp_net: Network, cnn_net: Network, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 (memory): with ``weight_sq=False`` a dense layer keeps the (S, o) and (S, j) factors
    instead of its (o, j) weight_sq (0.25 GiB next to the draw on the 64→8192→8192→10 MLP), and
    ``predict_independent`` forms it a row block at a time: the same blocks and the same float64
    sums, so the same prediction to the last bit. Conv layers keep their accumulated weight_sq."""
    monkeypatch.setattr(prediction, "PREDICT_BLOCK", block)
    for net in (mlp_net, cnn_net):
        X = torch.as_tensor(
            np.random.default_rng(2).standard_normal((37, *net.input_shape)), dtype=torch.float32
        )
        run = Executor(net).run
        full = sensitivities(run, net, X, net.layers, chunk=16, groups=False)
        lean = sensitivities(run, net, X, net.layers, chunk=16, groups=False, weight_sq=False)
        rng = np.random.default_rng(3)
        for layer in net.layers:
            var = rng.random(layer.matrix.shape).astype(np.float32)  # (o, j) a Var(t)
            got = prediction.predict_independent(var, lean[layer.name])
            assert got == prediction.predict_independent(var, full[layer.name])
            if layer.kind == "dense":
                assert lean[layer.name].weight_sq.size == 0 and lean[layer.name].factors is not None
            else:
                assert lean[layer.name].factors is None


def test_factored_prediction_is_float64_for_float32_operands(monkeypatch: pytest.MonkeyPatch) -> None:
    """``predict_independent`` on the factors D (S, o), Z (S, j): weight_sq_ij = Σ_s D_si Z_sj / S
    (integers, S = 4: exact in float64), rounded once to float32, times a float32 Var(t) in float64,
    summed over row blocks of 2 rows (PREDICT_BLOCK = 8 entries, rows of 4); the oracle sums the exact
    products with math.fsum."""
    import math

    rng = np.random.default_rng(8)
    D = rng.integers(1, 5000, (4, 5)).astype(np.float64)  # (S, o)
    Z = rng.integers(1, 5000, (4, 4)).astype(np.float64)  # (S, j)
    var = rng.random((5, 4)).astype(np.float32)  # (o, j)
    exact = [[sum(int(D[s, i]) * int(Z[s, j]) for s in range(4)) / 4 for j in range(4)] for i in range(5)]
    want = math.fsum(float(var[i, j]) * float(np.float32(exact[i][j])) for i in range(5) for j in range(4))
    monkeypatch.setattr(prediction, "PREDICT_BLOCK", 8)
    sens = prediction.Sensitivity(
        "l", prediction.NOT_FORMED, np.zeros(4), 1, (torch.from_numpy(D), torch.from_numpy(Z))
    )
    assert prediction.predict_independent(var, sens) == pytest.approx(want, rel=1e-14)
    assert [(b.start, b.stop) for b in prediction.row_blocks(5, 4)] == [(0, 2), (2, 4), (4, 6)]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_group_terms_only_for_layers_whose_units_can_be_removed(
    which: str, mlp_net: Network, cnn_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 (the search's cost): the budget search asks for group terms only where a draw can
    remove input units (``removable_units``: the structured layers); the first layer's (the model's
    inputs) were made for nothing. The named layers' terms and every ``weight_sq`` keep their bytes,
    the others' ``group_sq`` is zeros; the pipeline passes the set."""
    from netshrink.compression import pipeline
    from netshrink.compression.bounds.prediction import removable_units
    from netshrink.compression.graph.calibration import Calibration
    from netshrink.compression.spec import CompressSpec

    net = mlp_net if which == "mlp" else cnn_net
    removable = removable_units(net)
    assert removable == {layer.name for layer in net.layers[1:]}  # every layer but the first
    X = torch.as_tensor(np.random.default_rng(2).standard_normal((6, *net.input_shape)), dtype=torch.float32)
    ex = Executor(net)
    every = sensitivities(ex.run, net, X, net.layers, chunk=4)
    some = sensitivities(ex.run, net, X, net.layers, chunk=4, group_layers=removable)
    for layer in net.layers:
        assert some[layer.name].weight_sq.tobytes() == every[layer.name].weight_sq.tobytes()
        if layer.name in removable:
            assert some[layer.name].group_sq.tobytes() == every[layer.name].group_sq.tobytes()
        else:
            assert not some[layer.name].group_sq.any() and every[layer.name].group_sq.any()
    asked: list[object] = []
    real = pipeline.sensitivities

    def spy(*a: object, **k: object) -> dict[str, prediction.Sensitivity]:
        asked.append(k.get("group_layers"))
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "sensitivities", spy)
    rng = np.random.default_rng(3)
    cal = Calibration(rng.standard_normal((48, *net.input_shape)).astype(np.float32), None, sha256="t")
    spec = CompressSpec.from_dict({"target": {"metric": "relative_l2", "max": 0.2}, "seed": 0})
    pipeline.compress(net, spec, calibration=cal)
    assert asked[0] == removable
