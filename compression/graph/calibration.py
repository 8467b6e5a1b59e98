"""Calibration inputs: an ``.npz`` with ``inputs`` (S, *input_shape) and optional ``labels`` (S,).

Ref: docs/api.md "POST /v1/jobs" (calibration), docs/method.md §6 "Loading safely"
(``np.load(allow_pickle=False)``, the decompressed size of zip-based files capped), §2 (the inputs
every error is measured on).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netshrink.compression.errors import CalibrationError, LimitExceededError
from netshrink.compression.graph.network import Network
from netshrink.compression.io.arrays import ArrayHeader, index_arrays, iter_chunks, read_arrays
from netshrink.compression.io.limits import DEFAULT_MAX_DECOMPRESSED_BYTES
from netshrink.compression.io.onnx_io import static_shapes

ALLOWED_KEYS = frozenset({"inputs", "labels"})
MIN_SAMPLES = 2  # the error and its bound are a mean over samples; the hold-out split needs two


@dataclass(frozen=True)
class Calibration:
    """Validated calibration data; ``sha256`` is the hash of the uploaded file (for the report)."""

    inputs: np.ndarray  # (S, *input_shape) float32
    labels: np.ndarray | None  # (S,)
    sha256: str

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])


def load_calibration(
    path: str | Path, net: Network, *, max_bytes: int | None = None, min_samples: int = 1
) -> Calibration:
    """Read and validate a calibration ``.npz`` (or a bare ``.npy`` of inputs) against ``net``.

    ``max_bytes`` (default ``DEFAULT_MAX_DECOMPRESSED_BYTES``, the same cap as model archives) caps
    both the file and the array data its headers declare; sizes, keys, dtypes and shapes are checked
    from the headers before any data is decompressed (``netshrink.compression.io.arrays``). Raises
    ``CalibrationError`` for anything that does not fit and ``LimitExceededError`` over the cap.
    Labels of a model with K ≥ 2 outputs are class indices in [0, K) (``check_labels``); with one
    output they are regression targets (finite numbers).
    """
    path = Path(path)
    headers = _check_headers(path, net, max_bytes, min_samples)
    arrays = read_arrays(path, headers, invalid=CalibrationError)
    inputs, labels = arrays["inputs"], arrays.get("labels")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, refused below
        out = np.ascontiguousarray(inputs, dtype=np.float32)
    _check_values("inputs", out)
    if labels is not None:
        _check_values("labels", labels)
        classes = output_classes(net)
        if classes is not None:
            labels = check_labels(labels, classes)
    return Calibration(
        inputs=out,
        labels=None if labels is None else np.ascontiguousarray(labels),
        sha256=_sha256(path),
    )


def check_calibration(
    path: str | Path, net: Network, *, max_bytes: int | None = None, min_samples: int = 1
) -> None:
    """Every check ``load_calibration`` makes, without holding the arrays: values are streamed in
    1 MiB chunks, so memory stays O(chunk) whatever the file declares (the API validates this way)."""
    path = Path(path)
    headers = _check_headers(path, net, max_bytes, min_samples)
    classes = output_classes(net) if "labels" in headers else None
    for key, header in headers.items():
        for chunk in iter_chunks(path, header, invalid=CalibrationError):  # (k,) in storage order
            with np.errstate(over="ignore"):
                _check_values(key, chunk.astype(np.float32) if key == "inputs" else chunk)
            if key == "labels" and classes is not None:
                check_labels(chunk, classes)


def output_classes(net: Network) -> int | None:
    """K, the model's outputs per sample when its logits are (batch, K) with K ≥ 2 statically:
    labels are then class indices. None for one output (labels are regression targets) or a shape
    the graph does not state."""
    shape = static_shapes(net.model).get(net.logits)
    if shape is None or len(shape) != 2 or shape[1] is None:
        return None
    return int(shape[1]) if shape[1] >= 2 else None


def check_labels(labels: np.ndarray, n_classes: int, name: str | None = None) -> np.ndarray:
    """Integer class indices in [0, n_classes) -> int64 (booleans, unsigned and integer-valued
    floats included); anything else is a ``CalibrationError`` (``name`` prefixes the message and
    the field: ``train`` for fine-tuning data). Before 2026-12-05 calibration labels went unchecked:
    an index past the classes failed the job as an internal error, -1 scored as the last class."""
    field, what = ("labels", "'labels'") if name is None else (f"{name}.labels", f"{name}: 'labels'")
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise CalibrationError(f"{what} must be integer class indices", field=field)
    elif labels.dtype.kind not in "iub":
        raise CalibrationError(f"{what} must be integers; got dtype {labels.dtype}", field=field)
    lo, hi = (labels.min(), labels.max()) if labels.size else (0, 0)
    if lo < 0 or hi >= n_classes:
        raise CalibrationError(
            f"{what} must lie in [0, {n_classes - 1}] (the model has {n_classes} outputs); "
            f"found values in [{lo}, {hi}]",
            field=field,
        )
    return labels.astype(np.int64)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _check_headers(
    path: Path, net: Network, max_bytes: int | None, min_samples: int
) -> dict[str, ArrayHeader]:
    """Sizes, keys, dtypes and shapes from the file's headers; returns them keyed ``inputs``/``labels``."""
    cap = DEFAULT_MAX_DECOMPRESSED_BYTES if max_bytes is None else max_bytes
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CalibrationError(f"cannot read the calibration file: {exc}") from exc
    if size > cap:
        raise LimitExceededError(f"the calibration file has {size} bytes; the limit is {cap}")
    headers = index_arrays(path, max_bytes=cap, invalid=CalibrationError)
    if "" in headers:  # a bare .npy holds the inputs only
        headers = {"inputs": headers.pop("")}  # name "" still tells the reader it is a bare .npy
    unknown = set(headers) - ALLOWED_KEYS
    if unknown:
        raise CalibrationError(
            f"unknown arrays in the calibration file: {sorted(unknown)}; "
            "expected 'inputs' and optionally 'labels'"
        )
    inputs, labels = headers.get("inputs"), headers.get("labels")
    if inputs is None:
        raise CalibrationError("the calibration file has no 'inputs' array", field="inputs")
    _check_inputs_shape(inputs.shape, net, min_samples)
    if labels is not None and (len(labels.shape) != 1 or labels.shape[0] != inputs.shape[0]):
        raise CalibrationError(
            f"'labels' must have shape ({inputs.shape[0]},) to match 'inputs'; got {labels.shape}",
            field="labels",
        )
    return headers


def _check_inputs_shape(shape: tuple[int, ...], net: Network, min_samples: int) -> None:
    if len(shape) < 1 or tuple(shape[1:]) != tuple(net.input_shape):
        raise CalibrationError(
            f"'inputs' must have shape (S, {', '.join(map(str, net.input_shape))}) for this model; "
            f"got {shape}",
            field="inputs",
        )
    if shape[0] < 1:
        raise CalibrationError("'inputs' holds no samples", field="inputs")
    if shape[0] < min_samples:
        raise CalibrationError(
            f"'inputs' holds {shape[0]} sample(s); measuring the error needs at least {min_samples}",
            field="inputs",
        )


def _check_values(key: str, values: np.ndarray) -> None:
    """``inputs`` (already float32) and float ``labels`` must be finite."""
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        what = "NaN or Inf (or values outside float32)" if key == "inputs" else "NaN or Inf"
        raise CalibrationError(f"'{key}' contains {what}", field=key)
