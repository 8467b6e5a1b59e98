"""Tiny models and data files shared by every test suite.

Everything here is small (a few hundred parameters) and deterministic (fixed seeds), and the
expensive artifacts (ONNX exports, the sklearn fit) are cached, so each costs its time once per
test process. Functions that return bytes are cached; callers that need a file use ``write_*``.

- torch modules: ``tiny_mlp``, ``tiny_cnn``
- ONNX bytes: ``mlp_onnx``, ``cnn_onnx`` (torch.onnx.export, BN folded by the exporter),
  ``cnn_with_bn_node_onnx`` (onnx.helper, keeps a real BatchNormalization node),
  ``sklearn_mlp_classifier_onnx``, ``sklearn_mlp_regressor_onnx``, ``residual_onnx``, ``gated_onnx``
- state dicts: ``state_dict_arrays``, ``write_pt``, ``write_safetensors``, ``cnn_architecture``
- calibration: ``write_calibration``
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from netshrink.compression.graph.network import Layer

OPSET = 21
ARCH_FORMAT = "netshrink.architecture/v1"

_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


# ---- torch modules -------------------------------------------------------------------------------
def tiny_mlp(widths: Sequence[int] = (8, 16, 16, 4), act: str = "relu", seed: int = 0) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` (no activation after the last layer), in eval mode.

    State-dict keys are ``"0.weight"``, ``"2.weight"``, ... (``nn.Sequential`` positions).
    """
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        mods.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            mods.append(_ACTS[act]())
    return nn.Sequential(*mods).eval()


class TinyCNN(nn.Module):
    """conv(1->c1, 3x3, pad 1) [-> BN] -> relu -> maxpool 2 -> conv(c1->c2, 3x3, pad 1) -> relu
    -> flatten -> linear(c2*(h/2)*(w/2) -> classes). Input (1, h, w)."""

    def __init__(self, batchnorm: bool, c1: int = 4, c2: int = 6, hw: int = 8, classes: int = 5) -> None:
        super().__init__()
        feats: list[nn.Module] = [nn.Conv2d(1, c1, 3, padding=1)]
        if batchnorm:
            feats.append(nn.BatchNorm2d(c1))
        feats += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Linear(c2 * (hw // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # (S, classes)


def tiny_cnn(
    batchnorm: bool = True, c1: int = 4, c2: int = 6, hw: int = 8, classes: int = 5, seed: int = 0
) -> TinyCNN:
    """A ``TinyCNN`` in eval mode; BN statistics are randomized so that folding is not a no-op."""
    torch.manual_seed(seed)
    net = TinyCNN(batchnorm, c1, c2, hw, classes)
    if batchnorm:
        bn = net.features[1]
        assert isinstance(bn, nn.BatchNorm2d)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def cnn_architecture(
    batchnorm: bool = True, c1: int = 4, c2: int = 6, hw: int = 8, classes: int = 5
) -> dict[str, Any]:
    """The architecture JSON (docs/architecture-json.md) describing ``tiny_cnn`` with the same args."""
    layers: list[dict[str, Any]] = [
        {"kind": "conv2d", "name": "features.0", "out_channels": c1, "kernel_size": 3, "padding": 1}
    ]
    if batchnorm:
        layers.append({"kind": "batchnorm2d", "name": "features.1", "eps": 1e-5})
    k = 1 if batchnorm else 0
    layers += [
        {"kind": "relu"},
        {"kind": "maxpool2d", "kernel_size": 2},
        {"kind": "conv2d", "name": f"features.{3 + k}", "out_channels": c2, "kernel_size": 3, "padding": 1},
        {"kind": "relu"},
        {"kind": "flatten"},
        {"kind": "linear", "name": "classifier", "out_features": classes},
    ]
    return {"format": ARCH_FORMAT, "input_shape": [1, hw, hw], "layers": layers}


# ---- ONNX exports --------------------------------------------------------------------------------
def export_onnx(module: nn.Module, input_shape: Sequence[int]) -> bytes:
    """``torch.onnx.export`` (dynamo exporter, opset 21) with a dynamic batch dimension."""
    import warnings

    x = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        # torch 2.13's exporter trips typing_extensions' own deprecation of LeafSpec (not our code).
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        prog = torch.onnx.export(
            module, (x,), dynamo=True, opset_version=OPSET, dynamic_shapes=({0: batch},), verbose=False
        )
    assert prog is not None
    buf = io.BytesIO()
    onnx.save_model(prog.model_proto, buf)
    return buf.getvalue()


def export_onnx_fixed_batch(
    module: nn.Module, input_shape: Sequence[int], *, external_data: bool = False
) -> bytes:
    """``torch.onnx.export`` as most users call it: no dynamic axes, so the input is ``[1, ...]``.

    ``external_data=True`` is torch 2.13's default: the weights go to ``<file>.data`` next to the
    model; the returned bytes are then the bare ``.onnx`` that references them.
    """
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        path = Path(d) / "model.onnx"
        torch.onnx.export(
            module, (torch.zeros(1, *input_shape),), str(path), external_data=external_data, verbose=False
        )
        return path.read_bytes()


@functools.lru_cache(maxsize=8)
def mlp_onnx(widths: tuple[int, ...] = (8, 16, 16, 4), act: str = "relu", seed: int = 0) -> bytes:
    return export_onnx(tiny_mlp(widths, act, seed), (widths[0],))


@functools.lru_cache(maxsize=4)
def cnn_onnx(batchnorm: bool = True, seed: int = 0) -> bytes:
    """torch-exported TinyCNN (the exporter folds BN in eval mode)."""
    return export_onnx(tiny_cnn(batchnorm, seed=seed), (1, 8, 8))


def _vi(name: str, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


@functools.lru_cache(maxsize=2)
def cnn_with_bn_node_onnx(seed: int = 0) -> bytes:
    """TinyCNN(batchnorm=True) written with onnx.helper: Conv -> BatchNormalization (a real node)
    -> Relu -> MaxPool -> Conv -> Relu -> Flatten -> Gemm -> Softmax. Same weights as ``tiny_cnn``."""
    net = tiny_cnn(True, seed=seed)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    inits = [
        numpy_helper.from_array(sd[k].astype(np.float32), k)
        for k in sd
        if not k.endswith("num_batches_tracked")
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input", "features.0.weight", "features.0.bias"], ["c1"], "conv1", pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "BatchNormalization",
            [
                "c1",
                "features.1.weight",
                "features.1.bias",
                "features.1.running_mean",
                "features.1.running_var",
            ],
            ["bn1"],
            "bn1",
            epsilon=1e-5,
        ),
        helper.make_node("Relu", ["bn1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv", ["p1", "features.4.weight", "features.4.bias"], ["c2"], "conv2", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], "flatten", axis=1),
        helper.make_node("Gemm", ["f", "classifier.weight", "classifier.bias"], ["logits"], "fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], "softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn_bn", [_vi("input", ["batch", 1, 8, 8])], [_vi("probabilities", ["batch", 5])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def residual_onnx(seed: int = 0, batch: int | str = "batch") -> bytes:
    """x -> Gemm(8->8) -> Relu -> (+ x) -> Gemm(8->3): a residual Add (full support, a DAG).

    ``batch`` an int fixes the batch dimension (as an export without dynamic axes does)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 8)).astype(np.float32) / 3  # (out, in)
    w2 = rng.standard_normal((3, 8)).astype(np.float32) / 3  # (out, in)
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32) + 0.1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], "fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], "relu1"),
        helper.make_node("Add", ["r", "input"], ["s"], "residual"),
        helper.make_node("Gemm", ["s", "w2", "b2"], ["output"], "fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "residual", [_vi("input", [batch, 8])], [_vi("output", [batch, 3])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def gated_onnx(seed: int = 0, batch: int | str = "batch") -> bytes:
    """x -> Gemm(8->8) -> h·Sigmoid(h) (a Mul of two tensors) -> Gemm(8->3): support level "generic".

    ``batch`` an int fixes the batch dimension."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32) / 3, "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32) + 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32) / 3, "w2"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], "fc1", transB=1),
        helper.make_node("Sigmoid", ["h"], ["gate"], "sigmoid1"),
        helper.make_node("Mul", ["h", "gate"], ["r"], "gated"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["output"], "fc2", transB=1),
    ]
    graph = helper.make_graph(nodes, "gated", [_vi("input", [batch, 8])], [_vi("output", [batch, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@functools.lru_cache(maxsize=2)
def _digits(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(n_class=n_classes, return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=2)
def sklearn_mlp_classifier_onnx(binary: bool = False) -> bytes:
    """A small MLPClassifier (64 -> 16 -> classes) on sklearn digits, via skl2onnx with ZipMap."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X, y = _digits(2 if binary else 10)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    model = to_onnx(clf, X[:1], target_opset={"": OPSET, "ai.onnx.ml": 3})
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def sklearn_mlp_regressor_onnx() -> bytes:
    """A small MLPRegressor (64 -> 12 -> 1, tanh) on sklearn digits (predicting the digit value)."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    X, y = _digits(10)
    reg = MLPRegressor(hidden_layer_sizes=(12,), activation="tanh", max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y.astype(np.float32))
    return to_onnx(reg, X[:1], target_opset={"": OPSET, "ai.onnx.ml": 3}).SerializeToString()


def digits_inputs(n: int = 32, binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` digits samples (float32 in [0, 1], shape (n, 64)) and their labels."""
    X, y = _digits(2 if binary else 10)
    return X[:n], y[:n]


# ---- state dicts ---------------------------------------------------------------------------------
def state_dict_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def write_pt(module_or_state: nn.Module | dict[str, Any], path: Path) -> Path:
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    torch.save(state, path)
    return path


def write_safetensors(module: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def write_bytes(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


# ---- calibration ---------------------------------------------------------------------------------
def write_calibration(
    path: Path, inputs: np.ndarray, labels: np.ndarray | None = None, *, compressed: bool = True
) -> Path:
    """An ``.npz`` with ``inputs`` (and ``labels`` when given), as docs/api.md describes."""
    arrays: dict[str, np.ndarray] = {"inputs": inputs}
    if labels is not None:
        arrays["labels"] = labels
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)  # type: ignore[operator]
    return path


def random_inputs(shape: Sequence[int], n: int = 16, seed: int = 0) -> np.ndarray:
    """Gaussian float32 inputs of shape (n, *shape)."""
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


# ---- hand-built graphs (for validation tests that mutate them) ----------------------------------
def gemm_model(n_in: int = 4, n_out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """input (batch, n_in) -> Gemm(transB=1) -> Relu -> output. A fresh ModelProto each call."""
    w = np.random.default_rng(seed).standard_normal((n_out, n_in)).astype(np.float32)  # (out, in)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w", "b"], ["h"], "fc", transB=1),
            helper.make_node("Relu", ["h"], ["output"], "relu"),
        ],
        "gemm",
        [_vi("input", ["batch", n_in])],
        [_vi("output", ["batch", n_out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(n_out, np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def chain_model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    in_shape: Sequence[int | str],
    out: str,
    out_shape: Sequence[int | str] | None = None,
) -> onnx.ModelProto:
    """A graph from ``nodes`` with input ``input`` and the single output ``out`` (opset 21);
    ``out_shape`` defaults to ``in_shape``."""
    graph = helper.make_graph(
        nodes,
        "chain",
        [_vi("input", in_shape)],
        [_vi(out, in_shape if out_shape is None else out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def correlated_dense_layer(
    n_out: int = 5, n_in: int = 12, S: int = 400, seed: int = 0
) -> tuple[Layer, torch.Tensor]:
    """A dense layer (random W, b) and S float64 inputs with correlated, non-zero-mean columns."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    mix = rng.standard_normal((n_in, n_in)) * 0.5 + np.eye(n_in)  # correlated inputs
    Z = torch.from_numpy(np.abs(rng.standard_normal((S, n_in)) @ mix) + 0.5)  # (S, n_in), non-zero mean
    return Layer("fc", 1, "dense", W, b, "w", "b", structured=True), Z
