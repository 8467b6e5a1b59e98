"""The architecture JSON (``netshrink.architecture/v1`` and ``/v2``): validation against a state dict.

Ref: docs/architecture-json.md (the schema), docs/method.md "Notation" (PyTorch orientation).
A state dict alone does not say how its tensors are wired; the JSON does. Version 1 is a chain of
layers; version 2 adds blocks, so residual and concatenating CNNs (a DAG) can be described:
- ``{"kind": "residual", "body": [...], "shortcut": [...]}``: ``body(x) + shortcut(x)``, the shortcut
  optional (absent or ``[]`` is the identity), both ending in the same shape;
- ``{"kind": "concat", "branches": [[...], [...]]}``: every branch reads the block's input and the
  outputs are joined along the channel (feature) axis.
Blocks nest. Every shape is checked against the weights, every state-dict entry must be used, and
every failure is an ``ArchitectureError`` whose ``field`` (and message) holds the JSON pointer of
the bad layer or block (``/layers/3/body/1``). ``io.architecture_onnx.build_onnx`` then writes the
graph; a BatchNormalization stays a node there and ``graph.batchnorm.fold_batchnorm`` folds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netshrink.compression.errors import ArchitectureError
from netshrink.compression.io.architecture_layers import (
    ACTIVATION_KINDS,
    LEAF_KEYS_V1,
    LEAF_KEYS_V2,
    check_layer,
)

FORMAT = "netshrink.architecture/v1"
FORMAT_V2 = "netshrink.architecture/v2"
FORMATS = (FORMAT, FORMAT_V2)
OPSET = 21
BLOCK_KEYS = {"residual": {"name", "body", "shortcut"}, "concat": {"name", "branches"}}
IGNORED_KEYS = ("num_batches_tracked",)

__all__ = ["ACTIVATION_KINDS", "FORMAT", "FORMAT_V2", "OPSET", "infer_mlp", "validate_architecture"]


@dataclass
class _Walk:
    """What one validation pass carries through the (nested) layer lists."""

    state: Mapping[str, np.ndarray]
    leaves: dict[str, dict[str, Any]]  # the leaf table of the document's version
    used: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    n_weighted: int = 0  # linear and conv2d layers seen


def validate_architecture(arch: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Check ``arch`` against ``state``; return it normalized (defaults and inferred sizes written out)."""
    if not isinstance(arch, Mapping):
        raise ArchitectureError("the architecture must be a JSON object")
    extra = set(arch) - {"format", "input_shape", "layers"}
    if extra:
        raise ArchitectureError(f"unknown architecture keys: {sorted(extra)}")
    fmt = arch.get("format", FORMAT)
    if fmt not in FORMATS:
        raise ArchitectureError(
            f"unsupported architecture format {fmt!r}; expected one of {list(FORMATS)}", field="/format"
        )
    shape_in = arch.get("input_shape")
    if not (
        isinstance(shape_in, list)
        and len(shape_in) in (1, 3)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape_in)
    ):
        raise ArchitectureError(
            "input_shape must be [features] or [channels, height, width] of positive integers",
            field="/input_shape",
        )
    walk = _Walk(state, LEAF_KEYS_V2 if fmt == FORMAT_V2 else LEAF_KEYS_V1)
    layers, shape = _check_list(arch.get("layers"), tuple(shape_in), "/layers", walk, top=True)
    if walk.n_weighted == 0:
        raise ArchitectureError("the architecture has no linear or conv2d layer", field="/layers")
    left = [k for k in state if k not in walk.used and k.rsplit(".", 1)[-1] not in IGNORED_KEYS]
    if left:
        raise ArchitectureError(f"state dict entries not used by the architecture: {left[:10]}", nodes=left)
    if len(shape) != 1:
        raise ArchitectureError(
            f"the network must end in a flat feature vector; it ends with shape {list(shape)}",
            field="/layers",
        )
    return {"format": fmt, "input_shape": list(shape_in), "layers": layers}


def _check_list(
    specs: Any, shape: tuple[int, ...], ptr: str, walk: _Walk, *, top: bool = False
) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """A non-empty list of layers and blocks applied in order; the normalized list and its output shape."""
    if not isinstance(specs, list) or not specs:
        raise ArchitectureError(f"{ptr} must be a non-empty list of layers", field=ptr)
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(specs):
        here = f"{ptr}/{i}"
        kind = raw.get("kind") if isinstance(raw, Mapping) else None
        blocks = BLOCK_KEYS if walk.leaves is LEAF_KEYS_V2 else {}
        if not isinstance(raw, Mapping) or (kind not in walk.leaves and kind not in blocks):
            raise ArchitectureError(
                f"{here}: kind must be one of {sorted([*walk.leaves, *blocks])}; got {raw!r}", field=here
            )
        allowed = blocks[kind] if kind in blocks else set(walk.leaves[kind])
        unknown = set(raw) - allowed - {"kind"}
        if unknown:
            raise ArchitectureError(f"{here} ({kind}): unknown keys {sorted(unknown)}", field=here)
        if kind in ("softmax", "log_softmax") and not (top and i == len(specs) - 1):
            raise ArchitectureError(f"{here}: {kind} is only allowed as the last layer", field=here)
        named = "name" in allowed and (kind not in blocks or raw.get("name") is not None)
        if named:
            name = raw.get("name")
            if not isinstance(name, str) or not name or name in walk.names:
                raise ArchitectureError(f"{here} ({kind}): a unique non-empty name is required", field=here)
            walk.names.add(name)
        if kind in blocks:
            spec, shape = _check_block(dict(raw), shape, here, walk)
        else:
            spec = {"kind": kind, **walk.leaves[kind], **raw}
            shape = check_layer(spec, shape, walk.state, here, walk.used)
            walk.n_weighted += kind in ("linear", "conv2d")
        out.append(spec)
    return out, shape


def _check_block(
    raw: dict[str, Any], shape: tuple[int, ...], ptr: str, walk: _Walk
) -> tuple[dict[str, Any], tuple[int, ...]]:
    """A residual or concat block at ``ptr``: the normalized block and its output shape."""
    spec: dict[str, Any] = {"kind": raw["kind"], "name": raw.get("name")}
    if raw["kind"] == "residual":
        spec["body"], body = _check_list(raw.get("body"), shape, f"{ptr}/body", walk)
        cut = raw.get("shortcut") or []
        if not isinstance(cut, list):
            raise ArchitectureError(
                f"{ptr}/shortcut must be a list of layers (or absent)", field=f"{ptr}/shortcut"
            )
        spec["shortcut"], short = _check_list(cut, shape, f"{ptr}/shortcut", walk) if cut else ([], shape)
        if body != short:
            where = f"{ptr}/shortcut" if cut else ptr
            what = "the shortcut gives" if cut else "the identity shortcut passes"
            raise ArchitectureError(
                f"{where}: residual shapes differ: the body gives {list(body)}, {what} {list(short)}",
                field=where,
            )
        return spec, body
    branches = raw.get("branches")
    if not isinstance(branches, list) or len(branches) < 2:
        raise ArchitectureError(
            f"{ptr}/branches must be a list of at least two layer lists", field=f"{ptr}/branches"
        )
    spec["branches"], shapes = [], []
    for j, branch in enumerate(branches):
        layers, out = _check_list(branch, shape, f"{ptr}/branches/{j}", walk)
        spec["branches"].append(layers)
        shapes.append(out)
        if len(out) != len(shapes[0]) or out[1:] != shapes[0][1:]:
            raise ArchitectureError(
                f"{ptr}/branches/{j}: concat needs equal shapes but for the channels; branch 0 gives "
                f"{list(shapes[0])}, branch {j} gives {list(out)}",
                field=f"{ptr}/branches/{j}",
            )
    return spec, (sum(s[0] for s in shapes), *shapes[0][1:])


def infer_mlp(state: Mapping[str, np.ndarray], activation: str = "relu") -> dict[str, Any]:
    """A sequential MLP from the 2-D ``*.weight`` (and 1-D ``*.bias``) keys; ``activation`` between
    layers, none after the last. Anything else requires an architecture JSON.

    The layers go in the file's order when their shapes chain in it (a ``.pt`` keeps the module's
    order), else in the one order in which they chain (``chain_order``): a ``.safetensors`` header
    keeps no order, and sorted names put ``classifier`` before ``encoder``."""
    if activation not in ACTIVATION_KINDS:
        raise ArchitectureError(f"activation must be one of {sorted(ACTIVATION_KINDS)}; got {activation!r}")
    weights: list[tuple[str, tuple[int, int]]] = []
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 4:
            raise ArchitectureError(
                f"{key!r} is a convolution weight: convolutional networks need an architecture JSON"
            )
        if key.endswith(".weight") and value.ndim == 2:
            weights.append((key[: -len(".weight")], (int(value.shape[0]), int(value.shape[1]))))
    if not weights:
        bare = "weight" in state and np.ndim(state["weight"]) == 2
        hint = (
            "the keys 'weight'/'bias' are one bare layer's: save a module that holds it "
            "(torch.nn.Sequential(layer).state_dict() names them '0.weight', '0.bias')"
            if bare
            else "upload an architecture JSON"
        )
        raise ArchitectureError(f"no 2-D '*.weight' tensors: cannot infer an MLP; {hint}")
    order = chain_order([shape for _, shape in weights])
    if order is None:
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in weights)
        raise ArchitectureError(
            f"cannot infer the MLP's layer order: the 2-D weights ({shapes}; out x in) chain in no "
            "single order (out_features of one = in_features of the next); upload an architecture JSON"
        )
    layers: list[dict[str, Any]] = []
    for i in order:
        name, (n_out, _) = weights[i]
        if layers:
            layers.append({"kind": activation})
        layers.append({"kind": "linear", "name": name, "out_features": n_out})
    return {"format": FORMAT, "input_shape": [weights[order[0]][1][1]], "layers": layers}


def chain_order(shapes: Sequence[tuple[int, int]], budget: int = 100_000) -> list[int] | None:
    """Indices of ``shapes`` ((out, in) each) in an order where each out equals the next in: the
    given order when it chains, else the unique such order; None when there is none, several, or
    the search passes ``budget`` steps (square layers of one width chain in any order)."""
    given = list(range(len(shapes)))
    if all(shapes[a][0] == shapes[b][1] for a, b in zip(given, given[1:], strict=False)):
        return given
    found: list[list[int]] = []
    steps = 0

    def extend(path: list[int], left: set[int]) -> None:
        nonlocal steps
        steps += 1
        if len(found) > 1 or steps > budget:
            return
        if not left:
            found.append(list(path))
            return
        for j in sorted(left):
            if not path or shapes[path[-1]][0] == shapes[j][1]:
                extend([*path, j], left - {j})

    extend([], set(given))
    return found[0] if len(found) == 1 and steps <= budget else None
