"""The leaf layers of the architecture JSON: their keys, and one layer checked against its tensors.

Ref: docs/architecture-json.md ("Full form", "Version 2"). ``check_layer`` validates one leaf
(filling in defaults and sizes read from the weights) and returns its output shape; a failure is an
``ArchitectureError`` whose ``field`` is the leaf's JSON pointer (``/layers/3/body/1``). Blocks
(``residual``, ``concat``) and the document itself are checked in ``io.architecture``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from netshrink.compression.errors import ArchitectureError

ACTIVATION_KINDS = {
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softplus": "Softplus",
    "gelu": "Gelu",
}
_CONV = {
    "name": None,
    "in_channels": None,
    "out_channels": None,
    "kernel_size": None,
    "stride": 1,
    "padding": 0,
    "dilation": 1,
    "bias": None,
}
LEAF_KEYS_V1: dict[str, dict[str, Any]] = {  # kind -> allowed keys and their defaults (None = inferred)
    "linear": {"name": None, "in_features": None, "out_features": None, "bias": None},
    "conv2d": _CONV,
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
# Version 2 adds grouped/depthwise convs and the MobileNet activations (torch's ReLU6, Hardswish,
# Hardsigmoid); blocks are not leaves and live in io.architecture.
LEAF_KEYS_V2: dict[str, dict[str, Any]] = {
    **LEAF_KEYS_V1,
    "conv2d": {**_CONV, "groups": 1},
    "relu6": {},
    "hardswish": {},
    "hardsigmoid": {},
}
SPATIAL = frozenset({"conv2d", "batchnorm2d", "maxpool2d", "avgpool2d", "global_avgpool2d"})


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(value: Any, what: str, ptr: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum`` (1 for kernels, strides and dilations,
    0 for padding: a zero stride would divide by zero in the shape arithmetic below)."""
    v = [value, value] if _int(value) else value
    if not (isinstance(v, list | tuple) and len(v) == 2 and all(_int(x) for x in v)):
        raise ArchitectureError(f"{what} must be an integer or a pair of integers; got {value!r}", field=ptr)
    if min(v) < minimum:
        raise ArchitectureError(f"{what} must be at least {minimum}; got {value!r}", field=ptr)
    return int(v[0]), int(v[1])


def _scalars(spec: dict[str, Any], where: str, ptr: str) -> None:
    """The leaves' scalar options: finite numbers in range, booleans where torch takes one."""
    ranges = {"negative_slope": (-math.inf, math.inf), "eps": (0.0, math.inf), "momentum": (0.0, 1.0)}
    ranges["p"] = (0.0, 1.0)
    for key, (lo, hi) in ranges.items():
        if key not in spec:
            continue
        v = spec[key]
        if v is None and key == "momentum":  # torch's cumulative average; unused here (eval mode)
            continue
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or not lo <= v <= hi or (key == "eps" and v <= 0):
            bounds = "a positive number" if key == "eps" else f"a finite number in [{lo:g}, {hi:g}]"
            raise ArchitectureError(f"layer {where}: {key} must be {bounds}; got {v!r}", field=ptr)
    if "count_include_pad" in spec and not isinstance(spec["count_include_pad"], bool):
        raise ArchitectureError(
            f"layer {where}: count_include_pad must be true or false; got {spec['count_include_pad']!r}",
            field=ptr,
        )


def _tensor(
    state: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], where: str, ptr: str, used: set[str]
) -> None:
    if key not in state:
        raise ArchitectureError(f"layer {where}: the state dict has no {key!r}", field=ptr)
    if tuple(state[key].shape) != shape:
        raise ArchitectureError(
            f"layer {where}: {key!r} has shape {list(state[key].shape)}; the architecture implies "
            f"{list(shape)}",
            field=ptr,
        )
    used.add(key)


def _bias(
    spec: dict[str, Any],
    state: Mapping[str, np.ndarray],
    key: str,
    n: int,
    where: str,
    ptr: str,
    used: set[str],
) -> bool:
    want = spec["bias"] if spec["bias"] is not None else key in state
    if want:
        _tensor(state, key, (n,), where, ptr, used)
    return bool(want)


def _positive(shape: tuple[int, ...], where: str, ptr: str) -> tuple[int, ...]:
    if any(d <= 0 for d in shape):
        raise ArchitectureError(f"layer {where}: the output shape {list(shape)} is empty", field=ptr)
    return shape


def _out_size(state: Mapping[str, np.ndarray], key: str, given: Any) -> int:
    """A width the spec gives, else the weight's first dimension (0 when neither: ``_tensor`` says why)."""
    w = state.get(key)
    return int(given if given is not None else (w.shape[0] if w is not None and w.ndim else 0))


def check_layer(
    spec: dict[str, Any],
    shape: tuple[int, ...],
    state: Mapping[str, np.ndarray],
    ptr: str,
    used: set[str],
) -> tuple[int, ...]:
    """Validate one leaf at JSON pointer ``ptr`` (filling inferred sizes into ``spec``); its output shape."""
    kind, name = spec["kind"], spec.get("name")
    where = f"{name or kind} ({ptr})"
    _scalars(spec, where, ptr)
    if kind in SPATIAL and len(shape) != 3:
        raise ArchitectureError(
            f"layer {where}: {kind} needs a (C, H, W) input; got {list(shape)}", field=ptr
        )
    if kind == "linear":
        if len(shape) != 1:
            raise ArchitectureError(
                f"layer {where}: linear needs a flat input; got {list(shape)} (add a flatten)", field=ptr
            )
        n_out = _out_size(state, f"{name}.weight", spec["out_features"])
        if spec["in_features"] not in (None, shape[0]):
            raise ArchitectureError(
                f"layer {where}: in_features {spec['in_features']} != incoming {shape[0]}", field=ptr
            )
        _tensor(state, f"{name}.weight", (n_out, shape[0]), where, ptr, used)
        spec["bias"] = _bias(spec, state, f"{name}.bias", n_out, where, ptr, used)
        spec["in_features"], spec["out_features"] = shape[0], n_out
        return (n_out,)
    if kind == "conv2d":
        return _check_conv(spec, shape, state, where, ptr, used)
    if kind == "batchnorm2d":
        for key in ("weight", "bias", "running_mean", "running_var"):
            _tensor(state, f"{name}.{key}", (shape[0],), where, ptr, used)
        if np.any(state[f"{name}.running_var"] < 0):
            raise ArchitectureError(f"layer {where}: negative running_var", field=ptr)
        return shape
    if kind in ("maxpool2d", "avgpool2d"):
        k = _pair(spec["kernel_size"], f"{where}: kernel_size", ptr)
        s = _pair(spec["stride"] if spec["stride"] is not None else list(k), f"{where}: stride", ptr)
        p = _pair(spec["padding"], f"{where}: padding", ptr, minimum=0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:  # torch and onnxruntime refuse it too
            raise ArchitectureError(
                f"layer {where}: padding {list(p)} must be at most half the kernel {list(k)}", field=ptr
            )
        spec.update(kernel_size=list(k), stride=list(s), padding=list(p))
        hw = [(shape[1 + j] + 2 * p[j] - k[j]) // s[j] + 1 for j in range(2)]
        return _positive((shape[0], *hw), where, ptr)
    if kind == "global_avgpool2d":
        return (shape[0], 1, 1)
    if kind == "flatten":
        return (math.prod(shape),)
    if kind in ("softmax", "log_softmax") and len(shape) != 1:
        raise ArchitectureError(f"layer {where}: {kind} needs a flat input", field=ptr)
    if kind == "gelu" and spec["approximate"] not in ("none", "tanh"):
        raise ArchitectureError(f"layer {where}: approximate must be 'none' or 'tanh'", field=ptr)
    return shape


def _check_conv(
    spec: dict[str, Any],
    shape: tuple[int, ...],
    state: Mapping[str, np.ndarray],
    where: str,
    ptr: str,
    used: set[str],
) -> tuple[int, ...]:
    """A (grouped) conv: weight (c_out, c_in / groups, kh, kw); groups = c_in = c_out is depthwise."""
    name = spec["name"]
    w = state.get(f"{name}.weight")
    c_out = _out_size(state, f"{name}.weight", spec["out_channels"])
    if spec["kernel_size"] is None and w is not None and w.ndim == 4:
        spec["kernel_size"] = [int(w.shape[2]), int(w.shape[3])]
    k, s = (
        _pair(spec["kernel_size"], f"{where}: kernel_size", ptr),
        _pair(spec["stride"], f"{where}: stride", ptr),
    )
    p, d = (
        _pair(spec["padding"], f"{where}: padding", ptr, minimum=0),
        _pair(spec["dilation"], f"{where}: dilation", ptr),
    )
    if spec["in_channels"] not in (None, shape[0]):
        raise ArchitectureError(
            f"layer {where}: in_channels {spec['in_channels']} != incoming {shape[0]}", field=ptr
        )
    groups = spec.get("groups", 1)
    if not _int(groups) or groups < 1 or shape[0] % groups or (c_out and c_out % groups):
        raise ArchitectureError(
            f"layer {where}: groups must be a positive integer dividing in_channels {shape[0]} and "
            f"out_channels {c_out}; got {groups!r}",
            field=ptr,
        )
    _tensor(state, f"{name}.weight", (c_out, shape[0] // groups, *k), where, ptr, used)
    spec["bias"] = _bias(spec, state, f"{name}.bias", c_out, where, ptr, used)
    spec.update(in_channels=shape[0], out_channels=c_out, kernel_size=list(k), stride=list(s))
    spec.update(padding=list(p), dilation=list(d))
    hw = [(shape[1 + j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) // s[j] + 1 for j in range(2)]
    return _positive((c_out, *hw), where, ptr)
