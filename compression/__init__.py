"""netshrink's compression core: randomized greedy pruning and quantization with bounds.

Imports only numpy, torch, onnx, onnxruntime and safetensors (``tests/test_boundaries.py``).
"""

from compression.api import CompressionResult, ProgressEvent
from compression.errors import (
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
from compression.network import Layer, Network
from compression.spec import CompressSpec, EvaluationSpec, PruneSpec, QuantizeSpec, TargetSpec

__version__ = "0.1.0"
ALGORITHM_VERSION = "rgpq-1"

__all__ = [
    "ALGORITHM_VERSION",
    "ArchitectureError",
    "CalibrationError",
    "CancelledError",
    "CompressSpec",
    "CompressionError",
    "CompressionResult",
    "EvaluationSpec",
    "ExternalDataError",
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
