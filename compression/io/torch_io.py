"""Loading PyTorch state dicts safely: ``.pt``/``.pth`` (zip or legacy pickle) and ``.safetensors``.

Ref: docs/method.md §6 "Loading safely". ``.pt`` files go through
``torch.load(weights_only=True, map_location="cpu")`` only, so a pickle that tries to import or call
anything is refused by torch's restricted unpickler before it runs; zip archives are checked
against a decompressed-size cap first. Only loading lives here (the exporter writes state dicts).
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netshrink.compression.errors import LimitExceededError, ModelFormatError, NothingToCompressError

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2_PLUS = b"\x80"
SAFETENSORS_MAX_HEADER = 100 * 2**20


def looks_like_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def looks_like_pickle(head: bytes) -> bool:
    """Legacy (non-zip) ``torch.save`` files start with a pickle PROTO opcode."""
    return head.startswith(PICKLE_PROTOCOL_2_PLUS) and len(head) > 1 and 2 <= head[1] <= 5


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
    """safetensors: an 8-byte little-endian header length N, then N bytes of JSON starting with '{'."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(SAFETENSORS_MAX_HEADER, file_size - 8) and head[8:9] == b"{"


def check_zip_size(path: Path, max_decompressed_bytes: int) -> None:
    """Cap the total uncompressed size of a zip before anything reads it (zip bombs)."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFormatError(f"corrupt zip archive: {exc}") from exc
    if total > max_decompressed_bytes:
        raise LimitExceededError(
            f"the archive expands to {total} bytes; the limit is {max_decompressed_bytes}"
        )


class StateDict(dict[str, np.ndarray]):
    """name -> array (float tensors as float32), in file order. ``uploaded`` keeps what the float32
    arrays no longer say: each tensor's type as uploaded (``float16``, ``bfloat16``, ``float64``, ...)
    and its bytes in it (numel · element size), by name; the report's "bytes before" counts those."""

    def __init__(self) -> None:
        super().__init__()
        self.uploaded: dict[str, tuple[str, int]] = {}


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise ModelFormatError(
            f"state dict entry {name!r} is a {type(value).__name__}, not a tensor; upload a plain state dict "
            "(model.state_dict()), not a pickled model or checkpoint"
        )
    t = value.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)  # float16/bfloat16/float64 -> float32 (Network convention)
    elif t.is_complex():
        raise ModelFormatError(f"state dict entry {name!r} is complex")
    return np.ascontiguousarray(t.numpy())


def _validate(state: Any) -> StateDict:
    if not isinstance(state, Mapping):
        raise ModelFormatError(
            f"expected a state dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    if not state:  # a valid container with nothing in it: 422 like any model without weights
        raise NothingToCompressError("the state dict is empty: there are no weights to compress")
    out = StateDict()
    for key, value in state.items():
        if not isinstance(key, str):
            raise ModelFormatError(f"state dict key {key!r} is not a string")
        out[key] = _to_numpy(key, value)
        out.uploaded[key] = (str(value.dtype).removeprefix("torch."), value.numel() * value.element_size())
    return out


def load_torch_state_dict(path: str | Path, *, max_decompressed_bytes: int) -> StateDict:
    """A ``torch.save``-d state dict -> name -> numpy array (float tensors as float32), in file order,
    with each tensor's type and bytes as uploaded (``StateDict.uploaded``).

    Uses ``torch.load(path, weights_only=True, map_location="cpu")``; any unpickling failure
    (including a refused global, i.e. a malicious pickle) becomes ``ModelFormatError``.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if looks_like_zip(head):
        check_zip_size(path, max_decompressed_bytes)
        _refuse_foreign_zip(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu", mmap=False)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        ImportError,
        zipfile.BadZipFile,
        struct.error,
    ) as exc:
        raise ModelFormatError(
            f"this file is not a PyTorch state dict that torch.load(weights_only=True) can read "
            f"({_first_line(exc)}); expected an ONNX model, a state dict saved with "
            "torch.save(model.state_dict(), path), or a .safetensors file"
        ) from exc
    return _validate(state)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message, without C++ source locations ("[enforce fail at …]")."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    line = re.sub(r"\[enforce fail at [^\]]*\]\s*", "", line).strip() or type(exc).__name__
    return line[:160]


def _refuse_foreign_zip(path: Path) -> None:
    """A zip that ``torch.save`` did not write (an ``.npz``, an archive of files) gets its own message."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if any(n.endswith("data.pkl") for n in names):
        return
    arrays = [n.removesuffix(".npy") for n in names if n.endswith(".npy")]
    if arrays and len(arrays) == len(names):
        raise ModelFormatError(
            f"this file is a NumPy .npz archive (arrays: {', '.join(arrays[:5])}), not a model; expected "
            "an ONNX model, a PyTorch state dict (.pt/.pth from torch.save) or a .safetensors file "
            "(an .npz belongs in the calibration input)"
        )
    raise ModelFormatError(
        f"this file is a zip archive of {len(names)} file(s) ({', '.join(names[:3])}) that torch.save did "
        "not write (no data.pkl); expected an ONNX model, a PyTorch state dict (.pt/.pth from "
        "torch.save) or a .safetensors file"
    )


def load_safetensors(path: str | Path) -> StateDict:
    """A ``.safetensors`` file -> name -> numpy array, in header order (safetensors.torch, CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, struct.error) as exc:
        raise ModelFormatError(f"not a valid safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelFormatError("not a valid safetensors file: the header is not a JSON object")
    # safetensors does not keep insertion order: use a natural sort ("2.weight" < "10.weight").
    return _validate({k: state[k] for k in sorted(state, key=natural_key)})


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key treating digit runs as numbers: ``features.2`` < ``features.10``."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]
