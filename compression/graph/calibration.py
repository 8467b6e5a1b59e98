"""Calibration inputs: an ``.npz`` with ``inputs`` (S, *input_shape) and optional ``labels`` (S,).

Ref: docs/api.md "POST /v1/jobs" (calibration), docs/method.md §6 "Loading safely"
(``np.load(allow_pickle=False)``, the decompressed size of zip-based files capped), §2 (the inputs
every error is measured on).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netshrink.compression.errors import CalibrationError, LimitExceededError
from netshrink.compression.graph.network import Network

DEFAULT_MAX_BYTES = 1 * 2**30
ALLOWED_KEYS = frozenset({"inputs", "labels"})


@dataclass(frozen=True)
class Calibration:
    """Validated calibration data; ``sha256`` is the hash of the uploaded file (for the report)."""

    inputs: np.ndarray  # (S, *input_shape) float32
    labels: np.ndarray | None  # (S,)
    sha256: str

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])


def load_calibration(path: str | Path, net: Network, *, max_bytes: int | None = None) -> Calibration:
    """Read and validate a calibration ``.npz`` (or a bare ``.npy`` of inputs) against ``net``.

    ``max_bytes`` caps both the file and its decompressed size. Raises ``CalibrationError`` for
    anything that does not fit (pickled/object arrays, wrong shapes, non-finite values, bad labels)
    and ``LimitExceededError`` over the cap.
    """
    path = Path(path)
    cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"cannot read the calibration file: {exc}") from exc
    if len(data) > cap:
        raise LimitExceededError(f"the calibration file has {len(data)} bytes; the limit is {cap}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                total = sum(info.file_size for info in zf.infolist())
        except zipfile.BadZipFile as exc:
            raise CalibrationError(f"corrupt .npz archive: {exc}") from exc
        if total > cap:
            raise LimitExceededError(f"the calibration archive expands to {total} bytes; the limit is {cap}")
    arrays = _read_arrays(path)
    inputs, labels = arrays.get("inputs"), arrays.get("labels")
    if inputs is None:
        raise CalibrationError("the calibration file has no 'inputs' array", field="inputs")
    return Calibration(
        inputs=_check_inputs(inputs, net),
        labels=None if labels is None else _check_labels(labels, int(inputs.shape[0])),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a bare .npy holds the inputs only
            return {"inputs": loaded}
        with loaded as npz:
            unknown = set(npz.files) - ALLOWED_KEYS
            if unknown:
                raise CalibrationError(
                    f"unknown arrays in the calibration file: {sorted(unknown)}; "
                    "expected 'inputs' and optionally 'labels'"
                )
            arrays = {k: npz[k] for k in npz.files}
        bad = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]  # NpzFile returns raw bytes
        if bad:
            raise CalibrationError(f"{bad} are not .npy arrays")
        return arrays
    except CalibrationError:
        raise
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
    ) as exc:  # allow_pickle=False refuses object arrays
        raise CalibrationError(f"not a readable .npz of numeric arrays: {exc}") from exc


def _check_inputs(inputs: np.ndarray, net: Network) -> np.ndarray:
    if inputs.dtype.kind not in "fiub":
        raise CalibrationError(f"'inputs' must be numeric; got dtype {inputs.dtype}", field="inputs")
    if inputs.ndim < 1 or tuple(inputs.shape[1:]) != tuple(net.input_shape):
        raise CalibrationError(
            f"'inputs' must have shape (S, {', '.join(map(str, net.input_shape))}) for this model; "
            f"got {tuple(inputs.shape)}",
            field="inputs",
        )
    if inputs.shape[0] < 1:
        raise CalibrationError("'inputs' holds no samples", field="inputs")
    out = np.ascontiguousarray(inputs, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise CalibrationError("'inputs' contains NaN or Inf (or values outside float32)", field="inputs")
    return out


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise CalibrationError(
            f"'labels' must have shape ({n},) to match 'inputs'; got {labels.shape}", field="labels"
        )
    if labels.dtype.kind not in "fiub":
        raise CalibrationError(f"'labels' must be numeric; got dtype {labels.dtype}", field="labels")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise CalibrationError("'labels' contains NaN or Inf", field="labels")
    return np.ascontiguousarray(labels)
