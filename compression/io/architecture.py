"""The architecture JSON (``netshrink.architecture/v1``): validation against a state dict.

Ref: docs/architecture-json.md (the schema), docs/method.md "Notation" (PyTorch orientation).
A state dict alone does not say how its tensors are wired; the JSON does. Every shape is checked
against the weights (``ArchitectureError`` names the layer) and every state-dict entry must be used.
``io.architecture_onnx.build_onnx`` then writes the graph; a BatchNormalization stays a node
there, and ``netshrink.compression.graph.batchnorm.fold_batchnorm`` folds it like any upload.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from netshrink.compression.errors import ArchitectureError

FORMAT = "netshrink.architecture/v1"
OPSET = 21
ACTIVATION_KINDS = {
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softplus": "Softplus",
    "gelu": "Gelu",
}
_KEYS: dict[str, dict[str, Any]] = {  # kind -> allowed keys and their defaults (None = inferred/required)
    "linear": {"name": None, "in_features": None, "out_features": None, "bias": None},
    "conv2d": {
        "name": None,
        "in_channels": None,
        "out_channels": None,
        "kernel_size": None,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "bias": None,
    },
    "batchnorm2d": {"name": None, "eps": 1e-5, "momentum": 0.1},
    "leaky_relu": {"negative_slope": 0.01},
    "gelu": {"approximate": "none"},
    "maxpool2d": {"kernel_size": None, "stride": None, "padding": 0},
    "avgpool2d": {"kernel_size": None, "stride": None, "padding": 0, "count_include_pad": True},
    "dropout": {"p": 0.5},
    **{
        k: {}
        for k in (
            "relu",
            "tanh",
            "sigmoid",
            "softplus",
            "global_avgpool2d",
            "flatten",
            "identity",
            "softmax",
            "log_softmax",
        )
    },
}
IGNORED_KEYS = ("num_batches_tracked",)


def _pair(value: Any, what: str) -> tuple[int, int]:
    v = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not (
        isinstance(v, list | tuple)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        raise ArchitectureError(f"{what} must be an integer or a pair of integers; got {value!r}")
    return int(v[0]), int(v[1])


def _tensor(
    state: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], where: str, used: set[str]
) -> None:
    if key not in state:
        raise ArchitectureError(f"layer {where}: the state dict has no {key!r}", field=where)
    if tuple(state[key].shape) != shape:
        raise ArchitectureError(
            f"layer {where}: {key!r} has shape {list(state[key].shape)}; the architecture implies "
            f"{list(shape)}",
            field=where,
        )
    used.add(key)


def validate_architecture(arch: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Check ``arch`` against ``state``; return it normalized (defaults and inferred sizes written out)."""
    if not isinstance(arch, Mapping):
        raise ArchitectureError("the architecture must be a JSON object")
    extra = set(arch) - {"format", "input_shape", "layers"}
    if extra:
        raise ArchitectureError(f"unknown architecture keys: {sorted(extra)}")
    if arch.get("format", FORMAT) != FORMAT:
        raise ArchitectureError(
            f"unsupported architecture format {arch.get('format')!r}; expected {FORMAT!r}"
        )
    shape_in = arch.get("input_shape")
    if not (
        isinstance(shape_in, list)
        and len(shape_in) in (1, 3)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape_in)
    ):
        raise ArchitectureError(
            "input_shape must be [features] or [channels, height, width] of positive integers"
        )
    specs = arch.get("layers")
    if not isinstance(specs, list) or not specs:
        raise ArchitectureError("layers must be a non-empty list")
    shape: tuple[int, ...] = tuple(shape_in)
    used: set[str] = set()
    names: set[str] = set()
    out_layers: list[dict[str, Any]] = []
    for i, raw in enumerate(specs):
        if not isinstance(raw, Mapping) or raw.get("kind") not in _KEYS:
            raise ArchitectureError(
                f"layers[{i}]: kind must be one of {sorted(_KEYS)}; got {raw!r}", field=f"layers[{i}]"
            )
        kind = raw["kind"]
        unknown = set(raw) - set(_KEYS[kind]) - {"kind"}
        if unknown:
            raise ArchitectureError(
                f"layers[{i}] ({kind}): unknown keys {sorted(unknown)}", field=f"layers[{i}]"
            )
        spec: dict[str, Any] = {"kind": kind, **_KEYS[kind], **raw}
        where = f"{spec.get('name') or kind} (layers[{i}])"
        if "name" in _KEYS[kind]:
            if not isinstance(spec["name"], str) or not spec["name"] or spec["name"] in names:
                raise ArchitectureError(
                    f"layers[{i}] ({kind}): a unique non-empty name is required", field=f"layers[{i}]"
                )
            names.add(spec["name"])
        if kind in ("softmax", "log_softmax") and i != len(specs) - 1:
            raise ArchitectureError(f"layer {where}: {kind} is only allowed as the last layer", field=where)
        shape = _check_layer(spec, shape, state, where, used)
        out_layers.append(spec)
    if not any(s["kind"] in ("linear", "conv2d") for s in out_layers):
        raise ArchitectureError("the architecture has no linear or conv2d layer")
    left = [k for k in state if k not in used and k.rsplit(".", 1)[-1] not in IGNORED_KEYS]
    if left:
        raise ArchitectureError(f"state dict entries not used by the architecture: {left[:10]}", nodes=left)
    if len(shape) != 1:
        raise ArchitectureError(
            f"the network must end in a flat feature vector; it ends with shape {list(shape)}"
        )
    return {"format": FORMAT, "input_shape": list(shape_in), "layers": out_layers}


def _check_layer(
    spec: dict[str, Any], shape: tuple[int, ...], state: Mapping[str, np.ndarray], where: str, used: set[str]
) -> tuple[int, ...]:
    """Validate one layer (filling inferred sizes into ``spec``) and return its output shape."""
    kind, name = spec["kind"], spec.get("name")
    spatial = kind in ("conv2d", "batchnorm2d", "maxpool2d", "avgpool2d", "global_avgpool2d")
    if spatial and len(shape) != 3:
        raise ArchitectureError(
            f"layer {where}: {kind} needs a (C, H, W) input; got {list(shape)}", field=where
        )
    if kind == "linear":
        if len(shape) != 1:
            raise ArchitectureError(
                f"layer {where}: linear needs a flat input; got {list(shape)} (add a flatten)", field=where
            )
        w = state.get(f"{name}.weight")
        n_out = (
            spec["out_features"] if spec["out_features"] is not None else (w.shape[0] if w is not None else 0)
        )
        if spec["in_features"] not in (None, shape[0]):
            raise ArchitectureError(
                f"layer {where}: in_features {spec['in_features']} != incoming {shape[0]}", field=where
            )
        _tensor(state, f"{name}.weight", (int(n_out), shape[0]), where, used)
        spec["bias"] = _bias(spec, state, f"{name}.bias", int(n_out), where, used)
        spec["in_features"], spec["out_features"] = shape[0], int(n_out)
        return (int(n_out),)
    if kind == "conv2d":
        w = state.get(f"{name}.weight")
        c_out = (
            spec["out_channels"] if spec["out_channels"] is not None else (w.shape[0] if w is not None else 0)
        )
        if spec["kernel_size"] is None and w is not None and w.ndim == 4:
            spec["kernel_size"] = [int(w.shape[2]), int(w.shape[3])]
        k, s = _pair(spec["kernel_size"], f"{where}: kernel_size"), _pair(spec["stride"], f"{where}: stride")
        p, d = _pair(spec["padding"], f"{where}: padding"), _pair(spec["dilation"], f"{where}: dilation")
        if spec["in_channels"] not in (None, shape[0]):
            raise ArchitectureError(
                f"layer {where}: in_channels {spec['in_channels']} != incoming {shape[0]}", field=where
            )
        _tensor(state, f"{name}.weight", (int(c_out), shape[0], *k), where, used)
        spec["bias"] = _bias(spec, state, f"{name}.bias", int(c_out), where, used)
        spec.update(
            in_channels=shape[0],
            out_channels=int(c_out),
            kernel_size=list(k),
            stride=list(s),
            padding=list(p),
            dilation=list(d),
        )
        hw = [(shape[1 + j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) // s[j] + 1 for j in range(2)]
        return _positive((int(c_out), *hw), where)
    if kind == "batchnorm2d":
        for key in ("weight", "bias", "running_mean", "running_var"):
            _tensor(state, f"{name}.{key}", (shape[0],), where, used)
        if np.any(state[f"{name}.running_var"] < 0):
            raise ArchitectureError(f"layer {where}: negative running_var", field=where)
        return shape
    if kind in ("maxpool2d", "avgpool2d"):
        k = _pair(spec["kernel_size"], f"{where}: kernel_size")
        s = _pair(spec["stride"] if spec["stride"] is not None else list(k), f"{where}: stride")
        p = _pair(spec["padding"], f"{where}: padding")
        spec.update(kernel_size=list(k), stride=list(s), padding=list(p))
        return _positive((shape[0], *[(shape[1 + j] + 2 * p[j] - k[j]) // s[j] + 1 for j in range(2)]), where)
    if kind == "global_avgpool2d":
        return (shape[0], 1, 1)
    if kind == "flatten":
        return (math.prod(shape),)
    if kind in ("softmax", "log_softmax") and len(shape) != 1:
        raise ArchitectureError(f"layer {where}: {kind} needs a flat input", field=where)
    if kind == "gelu" and spec["approximate"] not in ("none", "tanh"):
        raise ArchitectureError(f"layer {where}: approximate must be 'none' or 'tanh'", field=where)
    return shape


def _bias(
    spec: dict[str, Any], state: Mapping[str, np.ndarray], key: str, n: int, where: str, used: set[str]
) -> bool:
    want = spec["bias"] if spec["bias"] is not None else key in state
    if want:
        _tensor(state, key, (n,), where, used)
    return bool(want)


def _positive(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    if any(d <= 0 for d in shape):
        raise ArchitectureError(f"layer {where}: the output shape {list(shape)} is empty", field=where)
    return shape


def infer_mlp(state: Mapping[str, np.ndarray], activation: str = "relu") -> dict[str, Any]:
    """A sequential MLP from the 2-D ``*.weight`` (and 1-D ``*.bias``) keys, in order; ``activation``
    between layers, none after the last. Anything else requires an architecture JSON."""
    if activation not in ACTIVATION_KINDS:
        raise ArchitectureError(f"activation must be one of {sorted(ACTIVATION_KINDS)}; got {activation!r}")
    layers: list[dict[str, Any]] = []
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 4:
            raise ArchitectureError(
                f"{key!r} is a convolution weight: convolutional networks need an architecture JSON"
            )
        if key.endswith(".weight") and value.ndim == 2:
            if layers:
                layers.append({"kind": activation})
            layers.append(
                {"kind": "linear", "name": key[: -len(".weight")], "out_features": int(value.shape[0])}
            )
    if not layers:
        raise ArchitectureError("no 2-D '*.weight' tensors: cannot infer an MLP; upload an architecture JSON")
    first = state[f"{layers[0]['name']}.weight"]
    return {"format": FORMAT, "input_shape": [int(first.shape[1])], "layers": layers}
