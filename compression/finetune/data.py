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
from netshrink.compression.graph.calibration import check_calibration, check_labels, load_calibration
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
    n_val = carved_validation(n, fraction)
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)  # (N,)
    val, tr = order[:n_val], order[n_val:]
    return TrainingData(x[tr], y[tr], x[val], y[val], "carved", sha)


def carved_validation(n: int, fraction: float) -> int:
    """The validation samples carved from ``n`` training samples; too few either way is a
    ``CalibrationError`` (checked on submit too, so such a job is never created)."""
    n_val = int(round(n * fraction))
    if n - n_val < MIN_TRAIN or n_val < MIN_VALIDATION:
        raise CalibrationError(
            f"train has {n} samples: too few to carve a validation fraction of {fraction}", field="train"
        )
    return n_val


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_files(
    path: str | Path,
    net: Network,
    n_classes: int,
    *,
    validation: str | Path | None = None,
    fraction: float = 0.2,
    max_bytes: int | None = None,
) -> None:
    """``load_split``'s checks without holding the inputs (the API validates this way): the inputs
    are streamed by ``check_calibration``; only the labels are read, to check their range and, with
    no validation file, that ``fraction`` of them can be carved."""
    for name, p in (("train", path), ("validation", validation)):
        if p is None:
            continue
        try:
            check_calibration(p, net, max_bytes=max_bytes)
        except CalibrationError as exc:
            raise CalibrationError(
                f"{name}: {exc.detail}", field=f"{name}.{exc.field}" if exc.field else name
            ) from exc
        loaded = np.load(p, allow_pickle=False)  # sizes already capped by check_calibration
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy holds inputs only
            raise CalibrationError(f"{name}: the file has no 'labels' array", field=f"{name}.labels")
        with loaded as npz:
            if "labels" not in npz.files:
                raise CalibrationError(f"{name}: the file has no 'labels' array", field=f"{name}.labels")
            labels = npz["labels"]
        check_labels(labels, n_classes, name)
        if name == "train" and validation is None:
            carved_validation(int(labels.shape[0]), fraction)


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
