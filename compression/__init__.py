"""netshrink's compression core: randomized greedy pruning and quantization with bounds.

Imports only numpy, torch, onnx, onnxruntime and safetensors (``tests/test_boundaries.py``).
"""

from compression.api import CompressionResult, ProgressEvent
from compression.calibration import Calibration, load_calibration
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
from compression.loading import LoadLimits, load_model
from compression.network import Layer, Network
from compression.pipeline import analyze, compress
from compression.provenance import ALGORITHM_VERSION, NETSHRINK_VERSION
from compression.spec import CompressSpec, EvaluationSpec, PruneSpec, QuantizeSpec, TargetSpec

__version__ = NETSHRINK_VERSION

__all__ = [
    "ALGORITHM_VERSION",
    "Calibration",
    "LoadLimits",
    "analyze",
    "compress",
    "load_calibration",
    "load_model",
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
