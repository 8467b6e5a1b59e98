"""State dict + architecture JSON -> Network; the same net as ONNX gives the same logits.

Ref: docs/architecture-json.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.errors import ArchitectureError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.io.architecture import FORMAT, chain_order, validate_architecture
from tests import factories as F


def _logits(net: Any, X: np.ndarray) -> np.ndarray:
    return Executor(net).run(torch.from_numpy(X))[net.logits].numpy()


def test_mlp_state_dict_without_architecture(tmp_path: Path) -> None:
    mlp = F.tiny_mlp()
    net = load_model(F.write_pt(mlp, tmp_path / "m.pt"))
    assert net.source_format == "pytorch" and net.support == "full"
    assert [la.name for la in net.layers] == ["0", "2", "4"] and net.input_shape == (8,)
    assert net.architecture is not None and net.architecture["format"] == FORMAT
    assert [s["kind"] for s in net.architecture["layers"]] == ["linear", "relu", "linear", "relu", "linear"]
    X = F.random_inputs((8,), 12)
    np.testing.assert_allclose(
        _logits(net, X), mlp(torch.from_numpy(X)).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    assert net.layers[1].structured and net.layers[1].producer == "0"


def test_mlp_activation_from_partial_architecture(tmp_path: Path) -> None:
    mlp = F.tiny_mlp(act="tanh")
    net = load_model(F.write_pt(mlp, tmp_path / "m.pt"), architecture={"activation": "tanh"})
    assert [la.activation for la in net.layers] == ["tanh", "tanh", "identity"]
    X = F.random_inputs((8,), 5)
    np.testing.assert_allclose(
        _logits(net, X), mlp(torch.from_numpy(X)).detach().numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_cnn_state_dict_matches_onnx_upload(tmp_path: Path, fmt: str) -> None:
    cnn = F.tiny_cnn(batchnorm=True)
    arch = F.cnn_architecture(batchnorm=True)
    path = F.write_pt(cnn, tmp_path / "c.pt") if fmt == "pt" else F.write_safetensors(cnn, tmp_path / "c.st")
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(json.dumps(arch))
    net_sd = load_model(path, architecture=arch_path)
    net_onnx = load_model(F.write_bytes(F.cnn_with_bn_node_onnx(), tmp_path / "c.onnx"))
    assert net_sd.source_format == ("pytorch" if fmt == "pt" else "safetensors")
    assert [la.name for la in net_sd.layers] == ["features.0", "features.4", "classifier"]
    assert [la.input_group for la in net_sd.layers] == [1, 1, 16]
    X = F.random_inputs((1, 8, 8), 10)
    ref = cnn(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(_logits(net_sd, X), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_logits(net_onnx, X), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net_sd.raw_weights["features.0"], cnn.features[0].weight.detach().numpy())
    assert not np.allclose(net_sd.layer("features.0").weight, net_sd.raw_weights["features.0"])  # BN folded


def test_architecture_as_json_string(tmp_path: Path) -> None:
    cnn = F.tiny_cnn(batchnorm=False)
    net = load_model(F.write_pt(cnn, tmp_path / "c.pt"), architecture=json.dumps(F.cnn_architecture(False)))
    assert net.support == "full" and len(net.layers) == 3


def test_cnn_without_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="architecture"):
        load_model(F.write_pt(F.tiny_cnn(), tmp_path / "c.pt"))


def _sd() -> dict[str, np.ndarray]:
    return F.state_dict_arrays(F.tiny_cnn(batchnorm=True))


def test_shape_mismatch_names_the_layer() -> None:
    arch = F.cnn_architecture()
    arch["layers"][4]["out_channels"] = 7  # features.4 really has 6
    with pytest.raises(ArchitectureError, match="features.4"):
        validate_architecture(arch, _sd())


def test_kernel_mismatch() -> None:
    arch = F.cnn_architecture()
    arch["layers"][0]["kernel_size"] = 5
    with pytest.raises(ArchitectureError, match="features.0"):
        validate_architecture(arch, _sd())


def test_flatten_size_mismatch_names_the_linear() -> None:
    arch = F.cnn_architecture()
    arch["layers"][3]["kernel_size"] = 4  # 8x8 -> 2x2 instead of 4x4: classifier expects 96 inputs
    with pytest.raises(ArchitectureError, match="classifier"):
        validate_architecture(arch, _sd())


def test_unused_state_dict_entries_are_refused() -> None:
    sd = _sd()
    sd["extra.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ArchitectureError, match="extra.weight"):
        validate_architecture(F.cnn_architecture(), sd)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a["layers"].append({"kind": "transformer"}),
        lambda a: a["layers"][2].update(inplace=True),
        lambda a: a.update(format="other/v9"),
        lambda a: a.update(input_shape=[1, 8]),
        lambda a: a.update(layers=[]),
        lambda a: a["layers"].insert(0, {"kind": "softmax"}),
        lambda a: a["layers"][4].update(name="features.0"),
        lambda a: a["layers"].pop(6),  # no flatten before the linear
        lambda a: a.update(extra=1),
    ],
)
def test_malformed_architectures(mutate: Any) -> None:
    arch = copy.deepcopy(F.cnn_architecture())
    mutate(arch)
    with pytest.raises(ArchitectureError):
        validate_architecture(arch, _sd())


@pytest.mark.parametrize(
    ("index", "change"),
    [
        (0, {"stride": 0}),  # before 2026-12-05: ZeroDivisionError, a 500 over HTTP
        (0, {"stride": [1, 0]}),
        (0, {"dilation": 0}),
        (0, {"kernel_size": 0}),
        (0, {"padding": -1}),
        (3, {"stride": 0}),
        (3, {"kernel_size": 0}),
        (3, {"padding": 2}),  # more than half the kernel: torch refuses it too
        (1, {"eps": 0}),
        (1, {"eps": "x"}),
        (1, {"momentum": 2.0}),
        (2, {"kind": "leaky_relu", "negative_slope": "x"}),  # before: ValueError, a 500 over HTTP
        (2, {"kind": "leaky_relu", "negative_slope": {"a": 1}}),
        (2, {"kind": "leaky_relu", "negative_slope": float("nan")}),
        (2, {"kind": "dropout", "p": 1.5}),
        (3, {"kind": "avgpool2d", "count_include_pad": "yes"}),
    ],
)
def test_bad_layer_options_name_the_layer(index: int, change: dict[str, Any]) -> None:
    arch = copy.deepcopy(F.cnn_architecture())
    arch["layers"][index].update(change)
    with pytest.raises(ArchitectureError) as info:
        validate_architecture(arch, _sd())
    assert info.value.field == f"/layers/{index}"


def test_good_layer_options_still_load() -> None:
    arch = copy.deepcopy(F.cnn_architecture())
    arch["layers"][1].update(momentum=None)  # torch's cumulative moving average
    arch["layers"][2].update(kind="leaky_relu", negative_slope=0)
    arch["layers"][3].update(padding=1, kernel_size=3, stride=[2, 2])  # 8x8 -> 4x4 as before
    validate_architecture(arch, _sd())


def test_mlp_inference_refuses_stray_keys(tmp_path: Path) -> None:
    sd = F.tiny_mlp().state_dict()
    sd["norm.running_mean"] = torch.zeros(16)
    with pytest.raises(ArchitectureError, match="norm.running_mean"):
        load_model(F.write_pt(sd, tmp_path / "m.pt"))


def test_mlp_inference_refuses_chain_mismatch(tmp_path: Path) -> None:
    sd = F.tiny_mlp().state_dict()
    sd["2.weight"] = torch.zeros(16, 5)
    with pytest.raises(ArchitectureError, match="2"):
        load_model(F.write_pt(sd, tmp_path / "m.pt"))


class _Named(torch.nn.Module):
    """An MLP whose layer names sort out of order: classifier < encoder < hidden."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder, self.hidden, self.classifier = (
            torch.nn.Linear(10, 32),
            torch.nn.Linear(32, 24),
            torch.nn.Linear(24, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.hidden(torch.relu(self.encoder(x)))))


def test_a_safetensors_mlp_is_ordered_by_its_shapes(tmp_path: Path) -> None:
    """safetensors keeps no order, and sorted names put the classifier first: until 2026-12-05 this
    upload was refused with a shape error at '/layers/2', an architecture the user never wrote."""
    module = _Named().eval()
    X = F.random_inputs((10,), 5)
    want = module(torch.from_numpy(X)).detach().numpy()
    for path in (
        F.write_safetensors(module, tmp_path / "m.safetensors"),
        F.write_pt(module, tmp_path / "m.pt"),
    ):
        net = load_model(path)
        assert [layer.name for layer in net.layers] == ["encoder", "hidden", "classifier"]
        np.testing.assert_allclose(_logits(net, X), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shapes", "order"),
    [
        ([(4, 3), (5, 4), (2, 5)], [0, 1, 2]),  # chains as given
        ([(2, 5), (4, 3), (5, 4)], [1, 2, 0]),  # one order chains
        ([(8, 8), (8, 8), (8, 8)], [0, 1, 2]),  # square: the given order chains, kept
        ([(8, 8), (4, 8), (8, 8)], None),  # (4, 8) must be last; the two squares in either order
        ([(4, 3), (6, 5)], None),  # no order
    ],
)
def test_chain_order(shapes: list[tuple[int, int]], order: list[int] | None) -> None:
    assert chain_order(shapes) == order


def test_a_bare_layers_state_dict_says_how_to_save_it(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match=r"one bare layer's.*Sequential\(layer\)"):
        load_model(F.write_pt(torch.nn.Linear(8, 4), tmp_path / "m.pt"))


def test_bad_architecture_json_text(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError):
        load_model(F.write_pt(F.tiny_mlp(), tmp_path / "m.pt"), architecture="{not json")


def test_architecture_with_onnx_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError):
        load_model(F.write_bytes(F.residual_onnx(), tmp_path / "r.onnx"), architecture={"activation": "relu"})


def test_softmax_output_and_pools(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, stride=2, padding=1),
        torch.nn.LeakyReLU(0.2),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(3, 4, 1, bias=False),
        torch.nn.GELU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(4, 3),
        torch.nn.Softmax(dim=1),
    ).eval()
    arch = {
        "format": FORMAT,
        "input_shape": [2, 8, 8],
        "layers": [
            {"kind": "conv2d", "name": "0", "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1},
            {"kind": "leaky_relu", "negative_slope": 0.2},
            {"kind": "avgpool2d", "kernel_size": 2},
            {"kind": "conv2d", "name": "3", "out_channels": 4, "kernel_size": 1},
            {"kind": "gelu"},
            {"kind": "global_avgpool2d"},
            {"kind": "flatten"},
            {"kind": "dropout"},
            {"kind": "linear", "name": "8", "out_features": 3},
            {"kind": "softmax"},
        ],
    }
    net = load_model(F.write_pt(model, tmp_path / "m.pt"), architecture=arch)
    assert net.logits == "logits" and net.tail == ["Softmax"] and net.is_classifier
    assert net.layer("3").bias is None and net.layer("8").input_group == 1 and net.layer("8").structured
    assert net.layer("0").lipschitz == pytest.approx(1.0 * 0.5)  # LeakyReLU 0.2 -> 1; 2x2 avg pool -> 1/2
    X = F.random_inputs((2, 8, 8), 6)
    probs = torch.softmax(torch.from_numpy(_logits(net, X)), 1).numpy()
    np.testing.assert_allclose(probs, model(torch.from_numpy(X)).detach().numpy(), rtol=1e-5, atol=1e-6)
