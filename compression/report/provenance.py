"""Reproducibility facts recorded in every report: seed, versions, device, hashes."""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

NETSHRINK_VERSION = "0.1.0"
ALGORITHM_VERSION = "rgpq-1"


def library_versions() -> dict[str, str]:
    return {
        "netshrink": NETSHRINK_VERSION,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when torch sees one, else cpu. Asking for cuda without one is an error upstream."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def reproducibility(
    *,
    seed: int,
    draws: int | str,
    chosen_draw: int,
    device: torch.device,
    spec: dict[str, Any],
    input_sha256: str,
    calibration_sha256: str | None,
) -> dict[str, Any]:
    return {
        "seed": seed,
        "draws": draws,
        "chosen_draw": chosen_draw,
        "algorithm_version": ALGORITHM_VERSION,
        "device": device.type,
        "versions": library_versions(),
        "input_sha256": input_sha256,
        "calibration_sha256": calibration_sha256,
        "spec": spec,
    }
