"""``load_model``: an uploaded file (ONNX, PyTorch state dict, safetensors) -> a validated ``Network``.

Ref: docs/method.md §6 "Loading safely", "Notation"; docs/api.md "POST /v1/jobs" (format sniffing,
architecture JSON). The format is sniffed from the bytes, never from the file name:
zip or pickle -> ``torch.load(weights_only=True)``; safetensors header -> safetensors; otherwise ONNX.
State dicts become an ONNX graph (``netshrink.compression.io.architecture``) and then follow the ONNX path, so
every input is analyzed by the same code (``netshrink.compression.graph.graph``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from netshrink.compression.errors import (
    ArchitectureError,
    InvalidWeightsError,
    LimitExceededError,
    ModelFormatError,
)
from netshrink.compression.graph.batchnorm import fold_batchnorm
from netshrink.compression.graph.canonical import canonicalize
from netshrink.compression.graph.graph import analyze
from netshrink.compression.graph.network import Network, SourceFormat, UploadFile
from netshrink.compression.io.architecture import infer_mlp, validate_architecture
from netshrink.compression.io.architecture_onnx import build_onnx
from netshrink.compression.io.limits import DEFAULT_MAX_DECOMPRESSED_BYTES
from netshrink.compression.io.onnx_io import graph_input, parse_onnx, parse_onnx_file
from netshrink.compression.io.torch_io import (
    StateDict,
    load_safetensors,
    load_torch_state_dict,
    looks_like_pickle,
    looks_like_safetensors,
    looks_like_zip,
)

Architecture = Mapping[str, Any] | str | Path


@dataclass(frozen=True)
class LoadLimits:
    """Upper bounds enforced while loading (the service passes its settings; docs/api.md "Limits")."""

    max_file_bytes: int = 512 * 2**20
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES  # zip-based .pt, calibration .npz/.npy
    max_params: int = 100_000_000  # values stored in all weight tensors together
    max_dim: int = 1_000_000  # any single tensor / input dimension


def sniff_format(path: str | Path) -> SourceFormat:
    """``"pytorch"`` (zip or pickle), ``"safetensors"`` (8-byte length + JSON header) or ``"onnx"``."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if looks_like_zip(head):
        return "pytorch"
    if looks_like_safetensors(head, path.stat().st_size):  # before pickle: its length may start 0x80 0x02
        return "safetensors"
    if looks_like_pickle(head):
        return "pytorch"
    return "onnx"


def load_model(
    path: str | Path, *, architecture: Architecture | None = None, limits: LoadLimits | None = None
) -> Network:
    """Load, validate and analyze a model file (see the module docstring for the formats).

    ``architecture`` (a dict, a JSON string or a path to a JSON file) is required for state dicts
    that are not plain sequential MLPs; ``{"activation": "tanh"}`` alone picks the MLP activation.
    Raises a ``CompressionError`` subclass for every invalid input.
    """
    limits = limits or LoadLimits()
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelFormatError(f"cannot read the model file: {exc}") from exc
    if size > limits.max_file_bytes:
        raise LimitExceededError(f"the model file has {size} bytes; the limit is {limits.max_file_bytes}")
    fmt = sniff_format(path)
    if fmt == "onnx":
        if architecture is not None:
            raise ArchitectureError("an architecture JSON is only accepted with a state dict, not with ONNX")
        upload = UploadFile.of(path)
        # memory: one ModelProto; the upload stays on disk (``Network.upload``) and the file's bytes
        # are released once parsed (docs/method.md §6 "Memory")
        model = parse_onnx_file(path, max_dim=limits.max_dim, max_params=limits.max_params)
        return network_from_onnx(model, original=upload, source_format="onnx")
    if fmt == "pytorch":
        state = load_torch_state_dict(path, max_decompressed_bytes=limits.max_decompressed_bytes)
    else:
        state = load_safetensors(path)
    return network_from_state_dict(state, _read_architecture(architecture), source_format=fmt, limits=limits)


def _read_architecture(architecture: Architecture | None) -> Mapping[str, Any] | None:
    if architecture is None or isinstance(architecture, Mapping):
        return architecture
    text = str(architecture)
    if isinstance(architecture, Path) or (
        isinstance(architecture, str) and not architecture.lstrip().startswith("{")
    ):
        try:
            text = Path(architecture).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ArchitectureError(f"cannot read the architecture file: {exc}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchitectureError(f"the architecture is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ArchitectureError("the architecture must be a JSON object")
    return value


def network_from_state_dict(
    state: Mapping[str, np.ndarray],
    architecture: Mapping[str, Any] | None,
    *,
    source_format: SourceFormat,
    limits: LoadLimits,
) -> Network:
    """State dict (+ architecture) -> validated architecture -> ONNX graph -> ``Network``.

    Each tensor's type and bytes as uploaded (``Network.uploaded_tensors``) are ``state.uploaded``
    for a loaded file (``torch_io.StateDict``: the arrays are float32 by then), else the arrays' own.
    """
    n_values = sum(int(v.size) for v in state.values())
    if n_values > limits.max_params:
        raise LimitExceededError(f"the state dict stores {n_values} values; the limit is {limits.max_params}")
    big = [k for k, v in state.items() if any(d > limits.max_dim for d in v.shape)]
    if big:
        raise LimitExceededError(f"tensors with a dimension over {limits.max_dim}: {big[:10]}", nodes=big)
    bad = [k for k, v in state.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise InvalidWeightsError(f"non-finite (NaN/Inf) values in: {', '.join(bad[:10])}", nodes=bad)
    if architecture is None or set(architecture) <= {"activation"}:
        activation = (architecture or {}).get("activation", "relu")
        arch = infer_mlp(state, str(activation))
    else:
        arch = dict(architecture)
    arch = validate_architecture(arch, state)
    built = build_onnx(arch, state)
    # Re-check the graph we wrote exactly as an upload would be checked (names, checker, shapes).
    model = parse_onnx(built.SerializeToString(), max_dim=limits.max_dim, max_params=limits.max_params)
    net = network_from_onnx(model, original=built, source_format=source_format)
    net.architecture = arch
    uploaded = state.uploaded if isinstance(state, StateDict) else {}
    net.uploaded_tensors = {k: uploaded.get(k, (v.dtype.name, int(v.nbytes))) for k, v in state.items()}
    return net


def network_from_onnx(
    model: onnx.ModelProto,
    *,
    original: onnx.ModelProto | UploadFile | None = None,
    source_format: SourceFormat = "onnx",
) -> Network:
    """A parsed, checked, named model (``onnx_io.parse_onnx``) -> ``Network``.

    ``Network.model`` is ``model`` with BatchNorm folded (``model`` itself when nothing is folded or
    rewritten); ``Network.upload`` is ``original`` (the upload untouched, or its file) or ``model``.
    ``raw_weights`` are read before folding; a weight that folding left unchanged is the same array
    as ``Layer.weight`` (one dense copy of each weight; neither is written in place).
    """
    inp = graph_input(model)
    working, _ = fold_batchnorm(canonicalize(model))
    found = analyze(working)
    original_inits = {t.name: t for t in model.graph.initializer}
    raw: dict[str, np.ndarray] = {}
    for layer in found.layers:
        if working is model:  # nothing folded or rewritten: the layer's weight IS the upload's
            raw[layer.name] = layer.weight  # (no second conversion of the initializer, no comparison)
            continue
        init = original_inits.get(layer.weight_key)
        W = numpy_helper.to_array(init).astype(np.float32) if init is not None else layer.weight
        W = layer.from_onnx_layout(W)  # as uploaded, canonical orientation
        same = W is layer.weight or (W.shape == layer.weight.shape and np.array_equal(W, layer.weight))
        raw[layer.name] = layer.weight if same else np.ascontiguousarray(W)
        del W
    return Network(
        model=working,
        upload=original if original is not None else model,
        layers=found.layers,
        support=found.support,
        input_name=inp.name,
        input_shape=inp.shape,
        input_dtype=inp.dtype,
        logits=found.logits,
        tail=found.tail,
        is_classifier=found.is_classifier,
        source_format=source_format,
        raw_weights=raw,
        not_covered=found.not_covered,
        dag=found.dag,
        channel_groups=found.channel_groups,
    )
