"""Errors raised by the compression core.

Every failure the core can explain to a user is a ``CompressionError``. The service maps the
classes below to HTTP statuses in one place (``service/errors.py``); the CLI maps them to exit
code 2. Anything else that escapes the core is a bug.

    CompressionError                      (base; ``slug`` names the problem type)
    ├── ModelFormatError                  the bytes are not a loadable model (bad ONNX, bad pickle, ...)
    │   └── ExternalDataError             ONNX that references external data
    ├── UnsupportedModelError             loads, but uses ops/structure we refuse (``nodes`` lists them)
    │   └── NothingToCompressError        no Gemm/MatMul/Conv weights to compress
    ├── InvalidWeightsError               NaN/Inf weights, absurd dims
    ├── ArchitectureError                 architecture JSON missing, malformed, or inconsistent
    ├── CalibrationError                  calibration arrays that do not fit the model
    ├── InvalidSpecError                  a spec value out of range or inconsistent (``field`` names it)
    ├── LimitExceededError                a configured size/parameter limit was exceeded
    └── CancelledError                    the caller asked to stop (between layers)
"""

from __future__ import annotations

from collections.abc import Sequence


class CompressionError(Exception):
    """Base class. ``slug`` is a stable, URL-safe name of the problem type."""

    slug = "compression-error"
    title = "Compression error"

    def __init__(self, detail: str, *, field: str | None = None, nodes: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.nodes = list(nodes)


class ModelFormatError(CompressionError):
    slug = "model-format"
    title = "The model file could not be read"


class ExternalDataError(ModelFormatError):
    slug = "external-data"
    title = "ONNX external data is not accepted"


class UnsupportedModelError(CompressionError):
    slug = "unsupported-model"
    title = "The model uses operators or structure netshrink does not support"


class NothingToCompressError(UnsupportedModelError):
    slug = "nothing-to-compress"
    title = "The model has no weights to compress"


class InvalidWeightsError(CompressionError):
    slug = "invalid-weights"
    title = "The model's weights are invalid"


class ArchitectureError(CompressionError):
    slug = "invalid-architecture"
    title = "The architecture description is missing or does not match the weights"


class CalibrationError(CompressionError):
    slug = "invalid-calibration"
    title = "The calibration data does not fit the model"


class InvalidSpecError(CompressionError):
    slug = "invalid-spec"
    title = "The compression spec is invalid"


class LimitExceededError(CompressionError):
    slug = "limit-exceeded"
    title = "A configured limit was exceeded"


class CancelledError(CompressionError):
    slug = "cancelled"
    title = "The job was cancelled"


MODEL_EXPECTED = "an ONNX model, a PyTorch state dict (.pt/.pth from torch.save) or a .safetensors file"


def not_a_model(head: bytes, size: int) -> str:
    """The one refusal of a model file whose bytes are none of the accepted containers.

    The CLI (``netshrink compress`` / ``submit``, checking the local file) and the service (sniffing
    the upload) both word it with this function, so the same file gets the same sentence.
    """
    if size == 0:
        return f"this file is empty (0 bytes); expected {MODEL_EXPECTED}"
    return (
        f"this file ({size:,} bytes, starting {head[:8]!r}) is neither an ONNX model (it does not "
        f"parse as an ONNX protobuf) nor a zip/pickle/safetensors state dict; expected {MODEL_EXPECTED}"
    )


__all__ = [
    "ArchitectureError",
    "CalibrationError",
    "CancelledError",
    "CompressionError",
    "ExternalDataError",
    "InvalidSpecError",
    "InvalidWeightsError",
    "LimitExceededError",
    "MODEL_EXPECTED",
    "ModelFormatError",
    "NothingToCompressError",
    "UnsupportedModelError",
    "not_a_model",
]
