"""Training data for fine-tuning: an ``.npz`` with ``inputs`` and integer ``labels``, and its split.

Loaded through the calibration loader (docs/method.md §6: ``allow_pickle=False``, decompressed size
capped, shapes checked against the model), then the labels are checked as class indices of the
model's logits. Without an uploaded validation set a stratification-free random fraction is carved
out with the job's seed (the same split for every arm).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netshrink.compression.errors import CalibrationError
from netshrink.compression.graph.calibration import check_calibration, load_calibration
from netshrink.compression.graph.network import Network

MIN_TRAIN, MIN_VALIDATION = 2, 1


@dataclass(frozen=True)
class TrainingData:
    x_train: np.ndarray  # (N, *input_shape) float32
    y_train: np.ndarray  # (N,) int64 in [0, n_classes)
    x_val: np.ndarray  # (V, *input_shape) float32
    y_val: np.ndarray  # (V,) int64
    validation_source: str  # "carved" or "uploaded"
    sha256: str  # of the training file


def load_split(
    path: str | Path,
    net: Network,
    n_classes: int,
    *,
    validation: str | Path | None = None,
    fraction: float = 0.2,
    seed: int = 0,
    max_bytes: int | None = None,
) -> TrainingData:
    """Read the training (and optional validation) ``.npz``; carve a validation split when absent."""
    x, y = _read(path, net, n_classes, "train", max_bytes)
    sha = _sha(path)
    if validation is not None:
        xv, yv = _read(validation, net, n_classes, "validation", max_bytes)
        return TrainingData(x, y, xv, yv, "uploaded", sha)
    n = int(x.shape[0])
    n_val = int(round(n * fraction))
    if n - n_val < MIN_TRAIN or n_val < MIN_VALIDATION:
        raise CalibrationError(
            f"train has {n} samples: too few to carve a validation fraction of {fraction}", field="train"
        )
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)  # (N,)
    val, tr = order[:n_val], order[n_val:]
    return TrainingData(x[tr], y[tr], x[val], y[val], "carved", sha)


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_files(
    path: str | Path,
    net: Network,
    n_classes: int,
    *,
    validation: str | Path | None = None,
    max_bytes: int | None = None,
) -> None:
    """``load_split``'s checks without holding the inputs (the API validates this way): the inputs
    are streamed by ``check_calibration``; only the labels are read, to check their range."""
    for name, p in (("train", path), ("validation", validation)):
        if p is None:
            continue
        try:
            check_calibration(p, net, max_bytes=max_bytes)
        except CalibrationError as exc:
            raise CalibrationError(
                f"{name}: {exc.detail}", field=f"{name}.{exc.field}" if exc.field else name
            ) from exc
        with np.load(p, allow_pickle=False) as npz:  # sizes already capped by check_calibration
            if "labels" not in npz.files:
                raise CalibrationError(f"{name}: the file has no 'labels' array", field=f"{name}.labels")
            check_labels(npz["labels"], n_classes, name)


def _read(
    path: str | Path, net: Network, n_classes: int, name: str, max_bytes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    try:
        cal = load_calibration(path, net, max_bytes=max_bytes)
    except CalibrationError as exc:
        raise CalibrationError(
            f"{name}: {exc.detail}", field=f"{name}.{exc.field}" if exc.field else name
        ) from exc
    if cal.labels is None:
        raise CalibrationError(f"{name}: the file has no 'labels' array", field=f"{name}.labels")
    return cal.inputs, check_labels(cal.labels, n_classes, name)


def check_labels(labels: np.ndarray, n_classes: int, name: str = "train") -> np.ndarray:
    """Integer class indices in [0, n_classes) -> int64; anything else is a ``CalibrationError``."""
    field = f"{name}.labels"
    if labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise CalibrationError(f"{name}: 'labels' must be integer class indices", field=field)
    elif labels.dtype.kind not in "iu":
        raise CalibrationError(f"{name}: 'labels' must be integers; got dtype {labels.dtype}", field=field)
    lo, hi = (labels.min(), labels.max()) if labels.size else (0, 0)
    if lo < 0 or hi >= n_classes:
        raise CalibrationError(
            f"{name}: 'labels' must lie in [0, {n_classes - 1}] (the model has {n_classes} outputs); "
            f"found values in [{lo}, {hi}]",
            field=field,
        )
    return labels.astype(np.int64)
