"""The finetune job: both arms, the report section, bad input, divergence, cancellation, sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from netshrink.compression.errors import CalibrationError, CancelledError, UnsupportedModelError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.finetune.job import finetune
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.finetune.train import TrainingDivergedError, Weights, train_arm
from netshrink.compression.graph.loading import load_model
from tests import factories

FAST = {"epochs": 2, "seed": 0, "batch_size": 32}


def test_report_has_both_arms_and_the_three_models(digits_mlp: Path, digits_train: Path) -> None:
    res = finetune(load_model(digits_mlp), FinetuneSpec.from_dict(FAST), digits_train, upload=digits_mlp)
    ft = res.report["finetune"]
    assert res.report["kind"] == "finetune" and set(ft["arms"]) == {"plain", "noise"}
    assert res.report["data"] == {
        "train_samples": 240,
        "validation_samples": 60,
        "validation_source": "carved",
        "train_sha256": res.report["data"]["train_sha256"],
    }
    for m in (ft["original"], ft["arms"]["plain"], ft["arms"]["noise"]):
        assert 0.0 <= m["accuracy"] <= 100.0
        assert len(m["prune"]["fractions"]) == len(m["prune"]["accuracy"])
        assert 0.0 <= m["prune"]["prunable_fraction"] < 1.0
        assert {layer["name"] for layer in m["layers"]} == {"/0/Gemm", "/2/Gemm", "/4/Gemm"} or m["layers"]
        assert all(set(layer["q"]) == {"magnitude", "node"} for layer in m["layers"])
    assert len(ft["arms"]["noise"]["history"]) == 2 and ft["original"]["history"] is None
    json.dumps(res.report, allow_nan=False)
    assert ft["arms"]["plain"]["layers"][0]["curves"] != ft["arms"]["noise"]["layers"][0]["curves"]


def test_same_seed_same_bytes_and_arms_differ(digits_mlp: Path, digits_train: Path) -> None:
    net = load_model(digits_mlp)
    a = finetune(net, FinetuneSpec.from_dict(FAST), digits_train, upload=digits_mlp)
    b = finetune(net, FinetuneSpec.from_dict(FAST), digits_train, upload=digits_mlp)
    assert a.artifacts["model.onnx"] == b.artifacts["model.onnx"]
    assert a.report["finetune"] == b.report["finetune"]
    assert a.artifacts["model.onnx"] != digits_mlp.read_bytes()


def test_onnx_out_is_the_upload_with_new_weights(digits_mlp: Path, digits_train: Path) -> None:
    res = finetune(load_model(digits_mlp), FinetuneSpec.from_dict(FAST), digits_train, upload=digits_mlp)
    old, new = onnx.load(digits_mlp), onnx.load_from_string(res.artifacts["model.onnx"])
    assert [n.op_type for n in old.graph.node] == [n.op_type for n in new.graph.node]
    assert [t.name for t in old.graph.initializer] == [t.name for t in new.graph.initializer]
    assert old.graph.input == new.graph.input and old.graph.output == new.graph.output


def test_writeback_through_batchnorm_is_exact(ft_dir: Path, cnn_train: Path) -> None:
    """The uploaded BatchNorm node stays; onnxruntime on the output == the trained (folded) network."""
    path = factories.write_bytes(factories.cnn_with_bn_node_onnx(), ft_dir / "cnn_bn.onnx")
    net = load_model(path)
    res = finetune(net, FinetuneSpec.from_dict({**FAST, "validation_fraction": 0.5}), cnn_train, upload=path)
    model = onnx.load_from_string(res.artifacts["model.onnx"])
    assert "BatchNormalization" in [n.op_type for n in model.graph.node]
    tuned = load_model(factories.write_bytes(res.artifacts["model.onnx"], ft_dir / "tuned.onnx"))
    X = np.random.default_rng(5).normal(size=(16, *net.input_shape)).astype(np.float32)
    sess = ort.InferenceSession(res.artifacts["model.onnx"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {net.input_name: X})[0]  # probabilities (the Softmax tail)
    ref = torch.softmax(Executor(tuned).run(torch.as_tensor(X))[net.logits], dim=1).numpy()
    assert np.allclose(got, ref, atol=1e-4)
    before = torch.softmax(Executor(net).run(torch.as_tensor(X))[net.logits], dim=1).numpy()
    assert not np.allclose(got, before, atol=1e-4)  # it did train


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_state_dict_upload_gets_a_state_dict_back(ft_dir: Path, cnn_train: Path, fmt: str) -> None:
    module = factories.tiny_cnn(batchnorm=True, classes=4)
    path = ft_dir / f"cnn.{fmt}"
    (factories.write_pt if fmt == "pt" else factories.write_safetensors)(module, path)
    arch = factories.cnn_architecture(batchnorm=True, classes=4)
    net = load_model(path, architecture=arch)
    res = finetune(net, FinetuneSpec.from_dict({**FAST, "validation_fraction": 0.5}), cnn_train, upload=path)
    name = "model.pt" if fmt == "pt" else "model.safetensors"
    assert list(res.artifacts) == [name]
    out = ft_dir / f"out.{fmt}"
    out.write_bytes(res.artifacts[name])
    sd = factories.state_dict_arrays(module)
    if fmt == "pt":
        new = {k: v.numpy() for k, v in torch.load(out, weights_only=True).items()}
    else:
        import safetensors.numpy

        new = safetensors.numpy.load_file(str(out))
    assert set(new) == set(sd)
    assert not np.allclose(new["features.0.weight"], sd["features.0.weight"])
    assert np.array_equal(new["features.1.running_var"], sd["features.1.running_var"])  # BN stats kept
    # the state dict loads back into the torch module and matches the exported tuned network
    module.load_state_dict({k: torch.as_tensor(v) for k, v in new.items()})
    tuned = load_model(out, architecture=arch)
    X = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        ref = module(X).numpy()
    assert np.allclose(Executor(tuned).run(X)[tuned.logits].numpy(), ref, atol=1e-4)


def test_noise_only_moves_hidden_weights(digits_mlp: Path, digits_train: Path) -> None:
    """η ≈ 0 leaves only the noise: per-unit shifts on hidden rows, none on the classifier or biases."""
    net = load_model(digits_mlp)
    spec = FinetuneSpec.from_dict(
        {"epochs": 1, "seed": 0, "eta": 1e-12, "sigma": 100.0, "momentum": 0.0, "batch_size": 8}
    )
    X, y = factories.digits_inputs(64)
    data = (torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(X), torch.as_tensor(y))
    start = Weights.of(net)
    res = train_arm(net, Executor(net), start, spec, data, arm="noise", sigma=100.0)
    for layer in net.layers:
        dW = res.weights.weight[layer.name] - start.weight[layer.name]
        assert np.abs(res.weights.bias[layer.name] - start.bias[layer.name]).max() < 1e-6
        if layer is net.layers[-1]:
            assert np.abs(dW).max() < 1e-9
        else:
            assert np.abs(dW).max() > 1e-6
            assert np.allclose(dW, dW[:, :1], atol=1e-7, rtol=1e-2)  # one scalar per unit (row)


def test_labels_out_of_range_and_bad_inputs_name_the_field(digits_mlp: Path, ft_dir: Path) -> None:
    net = load_model(digits_mlp)
    X, y = factories.digits_inputs(50)
    bad_labels = ft_dir / "bad_labels.npz"
    np.savez(bad_labels, inputs=X, labels=y + 5)
    with pytest.raises(CalibrationError) as info:
        finetune(net, FinetuneSpec.from_dict(FAST), bad_labels, upload=digits_mlp)
    assert info.value.field == "train.labels" and "[0, 9]" in info.value.detail
    bad_inputs = ft_dir / "bad_inputs.npz"
    np.savez(bad_inputs, inputs=X[:, :10], labels=y)
    with pytest.raises(CalibrationError) as info:
        finetune(net, FinetuneSpec.from_dict(FAST), bad_inputs, upload=digits_mlp)
    assert info.value.field == "train.inputs"
    no_labels = ft_dir / "no_labels.npz"
    np.savez(no_labels, inputs=X)
    with pytest.raises(CalibrationError) as info:
        finetune(net, FinetuneSpec.from_dict(FAST), no_labels, upload=digits_mlp)
    assert info.value.field == "train.labels"


def test_non_finite_loss_fails_with_the_epoch(digits_mlp: Path, digits_train: Path) -> None:
    spec = FinetuneSpec.from_dict({**FAST, "epochs": 4, "alpha": 0.3, "sigma": 100.0, "eta": 10.0})
    with pytest.raises(TrainingDivergedError) as info:
        finetune(load_model(digits_mlp), spec, digits_train, upload=digits_mlp)
    assert re.search(r"non-finite .* at epoch [1-4] of 4 in the noise \(sigma=100\) arm", info.value.detail)
    assert info.value.field == "sigma"


def test_sweep_picks_the_largest_sigma_within_tolerance(digits_mlp: Path, digits_train: Path) -> None:
    spec = FinetuneSpec.from_dict({**FAST, "sigma": [0.0, 0.001, 50.0], "tolerance": 5.0})
    res = finetune(load_model(digits_mlp), spec, digits_train, upload=digits_mlp)
    ft = res.report["finetune"]
    plain = ft["arms"]["plain"]["accuracy"]
    rows = {r["sigma"]: r for r in ft["sweep"]}
    assert set(rows) == {0.0, 0.001, 50.0}
    within = [s for s, r in rows.items() if not r["diverged"] and r["accuracy"] >= plain - 5.0]
    assert ft["noise"]["sigma"] == max(within)
    assert ft["selection"]["sigma"] == max(within)


def test_cancel_between_steps(digits_mlp: Path, digits_train: Path) -> None:
    with pytest.raises(CancelledError):
        finetune(
            load_model(digits_mlp),
            FinetuneSpec.from_dict(FAST),
            digits_train,
            upload=digits_mlp,
            should_cancel=lambda: True,
        )


def test_generic_graph_is_refused(ft_dir: Path, digits_train: Path) -> None:
    path = factories.write_bytes(factories.gated_onnx(), ft_dir / "gated.onnx")
    with pytest.raises(UnsupportedModelError, match="full support"):
        finetune(load_model(path), FinetuneSpec.from_dict(FAST), digits_train, upload=path)


def test_follow_up_compress(digits_mlp: Path, digits_train: Path) -> None:
    spec = FinetuneSpec.from_dict({**FAST, "compress": {"prune": {"keep": 0.5, "granularity": "neuron"}}})
    res = finetune(load_model(digits_mlp), spec, digits_train, upload=digits_mlp)
    assert "compressed_model.onnx" in res.artifacts and "model.onnx" in res.artifacts
    assert res.report["compress"]["kind"] == "compress"
    assert len(res.artifacts["compressed_model.onnx"]) < len(res.artifacts["model.onnx"])
