"""Compressed state dict (``.pt`` / ``.safetensors``) + ``architecture.json``, and its loader.

Ref: docs/method.md §5 ("Storage that really shrinks"), docs/api.md "download" (architecture.json states
the new shapes, the integer codes, the scales and the packing layout, so the file loads without
guessing).

Layout of the file (canonical PyTorch orientation, dropped neurons/channels deleted):
- float layers: ``{name}.weight`` float32; below the fp32 sparse break-even (storage.BREAK_EVEN_FP32)
  ``{name}.weight_values`` float32 (nnz,) + ``{name}.weight_indices`` int64 (nnz,) flat row-major.
- quantized layers: ``{name}.weight_codes`` + ``{name}.weight_scale`` float32 instead of ``{name}.weight``:
  - int8 container (5..8 bits): int8 tensor of the weight's shape;
  - int4 container (2..4 bits): uint8 (ceil(n/2),), two's-complement nibbles of the row-major
    flattened codes, two per byte, **low nibble first** (element 2i in bits 0-3, 2i+1 in bits 4-7;
    an odd count is padded with a zero nibble);
  - scale (n_out,) per output row (axis 0), or (1,) per layer: weight = codes · scale;
  - float outliers (f < 1): codes are 0 there and weight += outliers, stored as
    ``{name}.weight_outliers`` (dense float32) or ``_outlier_values`` / ``_outlier_indices`` (sparse).
- ``{name}.bias`` float32 (BatchNorm already folded into the conv before it).

Determinism: ``torch.save`` of a plain dict (zip, no timestamps; the ``.data/serialization_id``
record is derived from the content) and safetensors both give identical bytes for identical inputs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors.numpy
import torch

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.algorithm.cost import sparse_saves_bytes
from netshrink.compression.errors import ArchitectureError, ModelFormatError
from netshrink.compression.export.physical import PhysicalLayer, physical_layers
from netshrink.compression.export.state_dict_architecture import reloadable_architecture
from netshrink.compression.graph.network import Network

FORMAT = "netshrink.compressed-state-dict/v1"
INT4_PACKING = "int4_two_per_uint8_low_nibble_first"
INT2_PACKING = "int2_four_per_uint8_low_bits_first"


def pack_int2(codes: np.ndarray) -> np.ndarray:
    """int8 codes in [-2, 1] -> uint8 (ceil(n/4),), row-major; element 4i+j in bits 2j..2j+1."""
    flat = codes.reshape(-1).astype(np.int16)  # (n,)
    if flat.size and (flat.min() < -2 or flat.max() > 1):
        raise ValueError("int2 codes must lie in [-2, 1]")
    crumbs = (flat & 0x3).astype(np.uint8)  # two's complement 2-bit
    crumbs = np.append(crumbs, np.zeros((-crumbs.size) % 4, np.uint8)).reshape(-1, 4)  # (ceil(n/4), 4)
    return (crumbs[:, 0] | crumbs[:, 1] << 2 | crumbs[:, 2] << 4 | crumbs[:, 3] << 6).astype(np.uint8)


def unpack_int2(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_int2`: uint8 (ceil(n/4),) -> int8 codes of ``shape``."""
    n = int(np.prod(shape))
    c = np.stack([(packed >> s) & 0x3 for s in (0, 2, 4, 6)], axis=1).reshape(-1).astype(np.int16)  # (4m,)
    return np.where(c >= 2, c - 4, c)[:n].astype(np.int8).reshape(shape)


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """int8 codes in [-8, 7] -> uint8 (ceil(n/2),), row-major, low nibble first."""
    flat = codes.reshape(-1).astype(np.int16)  # (n,)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError("int4 codes must lie in [-8, 7]")
    nib = (flat & 0xF).astype(np.uint8)  # two's complement nibble
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)  # (ceil(n/2),)


def unpack_int4(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_int4`: uint8 (ceil(n/2),) -> int8 codes of ``shape``."""
    n = int(np.prod(shape))
    nib = np.empty(packed.size * 2, dtype=np.int16)
    nib[0::2] = packed & 0xF
    nib[1::2] = packed >> 4
    nib = np.where(nib >= 8, nib - 16, nib)[:n]  # sign-extend the nibble
    return nib.astype(np.int8).reshape(shape)


def _sparse_pair(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.flatnonzero(a).astype(np.int64)  # (nnz,) flat row-major
    return np.ascontiguousarray(a.reshape(-1)[idx], dtype=np.float32), idx


def _depthwise(p: PhysicalLayer) -> bool:
    """A depthwise conv (group = c_in = c_out before pruning): its group follows its channel count."""
    g = p.layer.conv
    return g is not None and g.group > 1 and g.group == p.shape_before[0] and p.shape_before[1] == 1


def _layer_entry(p: PhysicalLayer, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Store one layer's tensors in ``arrays`` and describe them (architecture.json)."""
    layer, name = p.layer, p.layer.name
    shape = [int(d) for d in p.weight.shape]
    weight: dict[str, Any]
    if p.codes is None or p.scale is None or p.bits is None:
        density = float(np.count_nonzero(p.weight)) / max(p.weight.size, 1)
        if p.compressed and sparse_saves_bytes(density, 32):
            values, idx = _sparse_pair(p.weight)
            arrays[f"{name}.weight_values"], arrays[f"{name}.weight_indices"] = values, idx
            weight = {"storage": "sparse_float32", "values_key": f"{name}.weight_values",
                      "indices_key": f"{name}.weight_indices", "index_layout": "flat row-major"}  # fmt: skip
        else:
            arrays[f"{name}.weight"] = np.ascontiguousarray(p.weight, dtype=np.float32)
            weight = {"storage": "float32", "key": f"{name}.weight"}
    else:
        mask = p.outliers if p.outliers is not None else np.zeros(p.weight.shape, dtype=bool)
        codes = np.where(mask, 0, p.codes).astype(np.int8)  # outliers carried separately
        int4, int2 = p.bits <= 4, p.bits <= 2
        packed = pack_int2(codes) if int2 else pack_int4(codes) if int4 else codes
        arrays[f"{name}.weight_codes"] = packed
        arrays[f"{name}.weight_scale"] = np.ascontiguousarray(p.scale, dtype=np.float32).reshape(-1)
        weight = {
            "storage": "quantized",
            "bits": int(p.bits),
            "container": "int2" if int2 else "int4" if int4 else "int8",
            "codes_key": f"{name}.weight_codes",
            "codes_dtype": "uint8" if int4 else "int8",
            "packing": INT2_PACKING if int2 else INT4_PACKING if int4 else "none",
            "scale_key": f"{name}.weight_scale",
            "scale_axis": 0 if p.per_row else None,
            "formula": "weight = codes * scale (per output row when scale_axis = 0) + outliers",
            "outliers": None,
        }
        if mask.any():
            O = np.where(mask, p.weight, 0).astype(np.float32)  # same shape as weight
            if sparse_saves_bytes(float(mask.mean()), 32):
                values, idx = _sparse_pair(O)
                arrays[f"{name}.weight_outlier_values"] = values
                arrays[f"{name}.weight_outlier_indices"] = idx
                weight["outliers"] = {"storage": "sparse", "values_key": f"{name}.weight_outlier_values",
                                      "indices_key": f"{name}.weight_outlier_indices"}  # fmt: skip
            else:
                arrays[f"{name}.weight_outliers"] = O
                weight["outliers"] = {"storage": "dense", "key": f"{name}.weight_outliers"}
    bias_key = None
    if p.bias is not None:
        bias_key = f"{name}.bias"
        arrays[bias_key] = np.ascontiguousarray(p.bias, dtype=np.float32)
    geom = layer.conv
    return {
        "name": name,
        "kind": layer.kind,
        "shape_before": list(p.shape_before),
        "shape": shape,
        "bias_key": bias_key,
        "activation": layer.activation,
        "conv": None
        if geom is None
        else {
            "kernel_shape": list(geom.kernel_shape),
            "strides": list(geom.strides),
            "pads": list(geom.pads),
            "dilations": list(geom.dilations),
            "group": int(p.weight.shape[0]) if _depthwise(p) else geom.group,
        },  # fmt: skip
        "input_group": layer.input_group,
        "dropped_inputs": [int(u) for u in p.dropped_inputs],
        "weight": weight,
    }


def export_state_dict(
    net: Network, compressed: Mapping[str, CompressedWeight], *, fmt: Literal["pt", "safetensors"]
) -> tuple[bytes, dict[str, Any]]:
    """The compressed state dict as file bytes, and its ``architecture.json`` dict.

    Ref: docs/method.md §5; the layout is in this module's docstring.
    """
    if fmt not in ("pt", "safetensors"):
        raise ValueError(f"fmt must be 'pt' or 'safetensors', got {fmt!r}")
    phys = physical_layers(net, compressed)
    arrays: dict[str, np.ndarray] = {}
    layers = [_layer_entry(phys[layer.name], arrays) for layer in net.layers]
    architecture: dict[str, Any] = {
        "format": FORMAT,
        "file_format": fmt,
        "batchnorm_folded": True,
        "input_shape": [int(d) for d in net.input_shape],
        "source_format": net.source_format,
        "architecture": reloadable_architecture(net, phys),
        "layers": layers,
    }
    # safetensors writes the raw buffer: a non-C-contiguous view (column deletion) would be scrambled
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if fmt == "safetensors":
        return bytes(safetensors.numpy.save(arrays)), architecture
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, buf)
    return buf.getvalue(), architecture


def _read_tensors(source: bytes | str | Path) -> dict[str, np.ndarray]:
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if data[:2] == b"PK":
        sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(sd, Mapping) or not all(isinstance(t, torch.Tensor) for t in sd.values()):
            raise ModelFormatError("a compressed .pt must be a mapping of names to tensors")
        return {str(k): t.numpy() for k, t in sd.items()}
    try:
        return dict(safetensors.numpy.load(data))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ModelFormatError(f"not a .pt or .safetensors file: {exc}") from exc


def _need(t: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in t:
        raise ArchitectureError(f"architecture.json names {key!r}, which the file does not hold")
    return t[key]


def _weight(entry: Mapping[str, Any], t: Mapping[str, np.ndarray]) -> np.ndarray:
    shape = tuple(int(d) for d in entry["shape"])
    w = entry["weight"]
    if w["storage"] == "float32":
        return np.array(_need(t, w["key"]), dtype=np.float32).reshape(shape)
    if w["storage"] == "sparse_float32":
        W = np.zeros(int(np.prod(shape)), dtype=np.float32)
        W[_need(t, w["indices_key"])] = _need(t, w["values_key"])
        return W.reshape(shape)
    if w["storage"] != "quantized":
        raise ArchitectureError(f"unknown weight storage {w['storage']!r} for layer {entry['name']!r}")
    raw = _need(t, w["codes_key"])
    unpack = {INT4_PACKING: unpack_int4, INT2_PACKING: unpack_int2}.get(w["packing"])
    codes = unpack(raw, shape) if unpack is not None else raw.reshape(shape)
    scale = np.asarray(_need(t, w["scale_key"]), dtype=np.float32)
    if w["scale_axis"] == 0:
        scale = scale.reshape((-1,) + (1,) * (len(shape) - 1))  # (n_out, 1, ...)
    W = codes.astype(np.float32) * scale  # same float32 product the quantizer forms
    out = w.get("outliers")
    if out is not None and out["storage"] == "dense":
        W = W + np.asarray(_need(t, out["key"]), dtype=np.float32)
    elif out is not None:
        flat = W.reshape(-1)
        flat[_need(t, out["indices_key"])] = _need(t, out["values_key"])
        W = flat.reshape(shape)
    return np.ascontiguousarray(W, dtype=np.float32)


def load_compressed_state_dict(
    model_bytes_or_path: bytes | str | Path, architecture: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Rebuild the float state dict (``{name}.weight`` = Ŵ with dropped units removed, ``{name}.bias``)."""
    if architecture.get("format") != FORMAT:
        raise ArchitectureError(f"architecture.json format must be {FORMAT!r}")
    t = _read_tensors(model_bytes_or_path)
    out: dict[str, torch.Tensor] = {}
    for entry in architecture["layers"]:
        out[f"{entry['name']}.weight"] = torch.from_numpy(_weight(entry, t))
        if entry.get("bias_key"):
            out[f"{entry['name']}.bias"] = torch.from_numpy(np.array(_need(t, entry["bias_key"]), np.float32))
    return out


__all__ = [
    "FORMAT",
    "INT4_PACKING",
    "export_state_dict",
    "load_compressed_state_dict",
    "pack_int2",
    "pack_int4",
    "unpack_int2",
    "unpack_int4",
]
