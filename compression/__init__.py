"""netshrink's compression core: randomized greedy pruning and quantization with bounds.

Imports only numpy, torch, onnx, onnxruntime and safetensors (import-linter contracts in
``pyproject.toml``, checked by ``tests/test_boundaries.py``). The core is cut into stages, each a
subpackage that imports only the stages below it:

    io -> graph -> diagnostics -> algorithm -> evaluation -> bounds -> search -> export -> report

with ``errors``, ``spec`` and ``api`` beneath them all, ``pipeline`` (the compress and analyze
jobs) above them, and ``finetune`` (the heavy-tailed-noise fine-tuning job, whose optional
follow-up compress calls ``pipeline``) on top. This module re-exports the public API.
"""

from netshrink.compression.api import CompressionResult, ProgressEvent
from netshrink.compression.errors import (
    ArchitectureError,
    CalibrationError,
    CancelledError,
    CompressionError,
    ExternalDataError,
    InvalidSpecError,
    InvalidWeightsError,
    LimitExceededError,
    ModelFormatError,
    NothingToCompressError,
    UnsupportedModelError,
)
from netshrink.compression.export.export_torch import load_compressed_state_dict
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.graph.calibration import Calibration, load_calibration
from netshrink.compression.graph.loading import LoadLimits, load_model
from netshrink.compression.graph.network import Layer, Network
from netshrink.compression.pipeline import analyze, compress
from netshrink.compression.report.provenance import ALGORITHM_VERSION, NETSHRINK_VERSION
from netshrink.compression.spec import CompressSpec, EvaluationSpec, PruneSpec, QuantizeSpec, TargetSpec

__version__ = NETSHRINK_VERSION

__all__ = [
    "ALGORITHM_VERSION",
    "Calibration",
    "LoadLimits",
    "analyze",
    "compress",
    "load_calibration",
    "load_compressed_state_dict",
    "load_model",
    "ArchitectureError",
    "CalibrationError",
    "CancelledError",
    "CompressSpec",
    "CompressionError",
    "CompressionResult",
    "EvaluationSpec",
    "ExternalDataError",
    "FinetuneSpec",
    "InvalidSpecError",
    "InvalidWeightsError",
    "Layer",
    "LimitExceededError",
    "ModelFormatError",
    "Network",
    "NothingToCompressError",
    "ProgressEvent",
    "PruneSpec",
    "QuantizeSpec",
    "TargetSpec",
    "UnsupportedModelError",
]
