"""``graph/canonical.canonicalize``: equivalent spellings become the ones the analysis knows, and the
constants they leave unread are dropped (docs/method.md §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.graph.canonical import canonicalize
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec


def _identity_chain() -> onnx.ModelProto:
    """w1 -> Identity -> Identity -> Gemm -> Relu -> Gemm: a reused parameter as exporters write it."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((32, 16)).astype(np.float32) / 4,  # (out, in)
        "b1": rng.standard_normal(32).astype(np.float32),
        "w2": rng.standard_normal((10, 32)).astype(np.float32) / 6,
        "b2": rng.standard_normal(10).astype(np.float32),
    }
    nodes = [
        helper.make_node("Identity", ["w1"], ["w1a"]),
        helper.make_node("Identity", ["w1a"], ["w1b"]),
        helper.make_node("Gemm", ["x", "w1b", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_an_identity_chain_becomes_one_constant_and_its_sources_go() -> None:
    out = canonicalize(_identity_chain())
    assert [n.op_type for n in out.graph.node] == ["Gemm", "Relu", "Gemm"]
    assert sorted(t.name for t in out.graph.initializer) == ["b1", "b2", "w1b", "w2"]
    onnx.checker.check_model(out, full_check=True)


def test_an_identity_chain_layer_is_compressed_and_the_file_shrinks(tmp_path: Path) -> None:
    """2026-12-05, found by probing: the second Identity stayed, so the layer was not compressed and
    model.onnx held the unread float w1 plus a float copy: 3,750 -> 4,858 bytes at 4 bits."""
    path = tmp_path / "chain.onnx"
    onnx.save(_identity_chain(), path)
    net = load_model(path)
    assert net.support == "full" and [layer.weight.shape for layer in net.layers] == [(32, 16), (10, 32)]
    result = compress(net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0}))
    model = result.artifacts["model.onnx"]
    assert len(model) < path.stat().st_size / 2
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # no unused initializer left
    X = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    assert session.run(None, {"x": X})[0].shape == (5, 10)


class _ViewCNN(torch.nn.Module):
    """conv -> relu -> pool -> ``y.view(t.size(0), -1)`` -> linear, t = y or the input."""

    def __init__(self, size_of_input: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.size_of_input = (
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.Linear(128, 4),
            size_of_input,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.max_pool2d(torch.relu(self.conv(x)), 2)  # (N, 8, 4, 4)
        return self.fc(y.view((x if self.size_of_input else y).size(0), -1))  # (N, 128) -> (N, 4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter writes the pattern
@pytest.mark.parametrize(("opset", "size_of_input"), [(11, False), (17, False), (17, True)])
def test_torchscripts_view_flatten_gets_full_support(tmp_path: Path, opset: int, size_of_input: bool) -> None:
    """2026-12-05, found by probing: the TorchScript exporter's ``x.view(x.size(0), -1)`` computes the
    shape with Shape/Gather/Unsqueeze/Concat, and the graph was generic (channel pruning refused)."""
    path = tmp_path / "view.onnx"
    module = _ViewCNN(size_of_input).eval()
    torch.onnx.export(
        module, (torch.zeros(1, 1, 8, 8),), path, dynamo=False, opset_version=opset,
        input_names=["x"], dynamic_axes={"x": {0: "n"}},
    )  # fmt: skip
    assert "Shape" in {n.op_type for n in onnx.load(path).graph.node}
    net = load_model(path)
    assert net.support == "full" and net.layers[1].structured
    spec = CompressSpec.from_dict({"prune": {"keep": 0.5, "granularity": "channel"}, "seed": 0})
    model = compress(net, spec).artifacts["model.onnx"]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    X = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    (y,) = session.run(None, {"x": X})
    assert y.shape == (3, 4)
    init = {t.name: t for t in onnx.load_from_string(model).graph.initializer}
    assert any(list(t.dims)[:1] == [4] and len(t.dims) == 2 and t.dims[1] < 128 for t in init.values())


class _StaticFlattenCNN(torch.nn.Module):
    """conv -> ReLU -> pool -> flatten -> fc -> ReLU -> fc, flattened as ``flat`` says."""

    def __init__(self, flat: str) -> None:
        super().__init__()
        self.flat = flat
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Linear(4 * 4 * 4, 16), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(self.conv(x)), 2)  # (N, 4, 4, 4)
        h = h.view(h.size(0), -1) if self.flat == "view" else torch.flatten(h, 1)  # (N, 64)
        return self.fc2(torch.relu(self.fc1(h)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # torch's exporters
@pytest.mark.parametrize(
    ("flat", "batch", "dynamo"), [("view", 1, False), ("view", 2, False), ("flatten", 1, True)]
)
def test_a_static_batch_reshape_flatten_is_a_flatten(
    tmp_path: Path, flat: str, batch: int, dynamo: bool
) -> None:
    """2026-12-05, found by probing: a static-batch export writes ``Reshape(x, [b, -1])`` (TorchScript's
    view) or ``Reshape(x, [b, 64])`` (the default exporter's flatten); the analysis runs calibration
    batches of other sizes, and the run crashed ("mat1 and mat2 shapes cannot be multiplied", exit 4).
    The compressed model keeps the upload's static batch and runs in onnxruntime."""
    torch.manual_seed(0)
    path = tmp_path / "static.onnx"
    module = _StaticFlattenCNN(flat).eval()
    torch.onnx.export(
        module, (torch.zeros(batch, 1, 8, 8),), path, dynamo=dynamo, opset_version=18 if dynamo else 17,
        input_names=["x"], output_names=["y"], **({"external_data": False} if dynamo else {}),
    )  # fmt: skip
    assert "Reshape" in {n.op_type for n in onnx.load(path).graph.node}
    net = load_model(path)
    assert net.support == "full" and "Reshape" not in {n.op_type for n in net.model.graph.node}
    spec = CompressSpec.from_dict({"quantize": {"bits": 8}, "evaluation": {"inputs": "gaussian"}, "seed": 0})
    result = compress(net, spec)
    model = onnx.load_from_string(result.artifacts["model.onnx"])
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == batch  # still a drop-in
    X = np.random.default_rng(1).standard_normal((batch, 1, 8, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(result.artifacts["model.onnx"], providers=["CPUExecutionProvider"]).run(
        None, {"x": X}
    )
    (y0,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    assert y.shape == (batch, 4) and np.linalg.norm(y - y0) <= 0.05 * np.linalg.norm(y0)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own
def test_the_default_exporters_flatten_in_a_residual_cnn_is_channel_pruned(tmp_path: Path) -> None:
    """``Reshape(x, [-1, C])`` (the default exporter's ``torch.flatten``, dynamic batch) locked the last
    stage's channels out of a residual graph's channel pruning until 2026-12-05 (found by probing)."""
    from tests.dag_models import INPUT_SHAPE, ResNet

    torch.manual_seed(0)
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(
        ResNet().eval(), (torch.zeros(2, *INPUT_SHAPE),), path, dynamo=True, opset_version=18,
        input_names=["x"], output_names=["y"], dynamic_shapes={"x": {0: torch.export.Dim("n")}},
        external_data=False,
    )  # fmt: skip
    assert "Reshape" in {n.op_type for n in onnx.load(path).graph.node}
    net = load_model(path)
    spec = CompressSpec.from_dict({"prune": {"keep": 0.5, "granularity": "channel"}, "seed": 0})
    report = compress(net, spec, calibration=None).report
    fc = next(x for x in report["layers"] if x["kind"] == "dense")
    assert fc["shape_after"][1] < fc["shape_before"][1], fc  # its input channels were pruned


class _Relu6MeanNet(torch.nn.Module):
    """A residual block with ReLU6 (Clip, whose bounds the TorchScript exporter writes as Constant
    nodes), then ``x.mean((2, 3))`` (a spatial ReduceMean) and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.relu6(self.stem(x))  # (N, 16, 8, 8)
        h = torch.nn.functional.relu6(self.conv(h) + h)  # a residual Add: the DAG path
        return self.fc(h.mean((2, 3)))  # (N, 16) -> (N, 4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_relu6_then_mean_keeps_its_shapes_for_channel_pruning(tmp_path: Path) -> None:
    """Until 2026-12-05 the shapes were inferred again only when the rewrite grew the node count; the
    Clip bounds' Constant nodes, now initializers, cancelled the growth of the mean's GlobalAveragePool
    + Flatten, whose tensors then had no shape, and the Linear's input channels were never pruned
    (found by probing; ReLU, without Constants, was pruned)."""
    torch.manual_seed(0)
    path = tmp_path / "relu6.onnx"
    torch.onnx.export(
        _Relu6MeanNet().eval(), (torch.zeros(2, 3, 8, 8),), path, dynamo=False, opset_version=17,
        input_names=["x"], dynamic_axes={"x": {0: "n"}},
    )  # fmt: skip
    assert "Constant" in {n.op_type for n in onnx.load(path).graph.node}
    net = load_model(path)
    spec = CompressSpec.from_dict({"prune": {"keep": 0.5, "granularity": "channel"}, "seed": 0})
    fc = next(x for x in compress(net, spec).report["layers"] if x["kind"] == "dense")
    assert fc["shape_after"][1] < fc["shape_before"][1], fc
