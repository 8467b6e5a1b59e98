"""Which inputs measure the error, and the fit / held-out split (docs/method.md §2).

Everything fitted (scores, best-of-R, the budget search) sees only the fit split; every reported
error comes from the held-out split. The inputs of a float16 model are rounded to float16, as
onnxruntime feeds them (``input_dtype.as_model_input``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from netshrink.compression.errors import CalibrationError
from netshrink.compression.evaluation.input_dtype import as_model_input
from netshrink.compression.graph.network import Network
from netshrink.compression.spec import EvaluationSpec

MIN_SAMPLES_FOR_HOLDOUT = 50  # docs/method.md §2: keep a held-out fraction when S >= 50


class CalibrationLike(Protocol):
    @property
    def inputs(self) -> np.ndarray: ...
    @property
    def labels(self) -> np.ndarray | None: ...
    @property
    def sha256(self) -> str: ...


@dataclass
class EvalData:
    fit: np.ndarray  # (S_fit, *input_shape) float32
    holdout: np.ndarray  # (S_ho, *input_shape); the same array as ``fit`` when split == "none"
    fit_labels: np.ndarray | None
    holdout_labels: np.ndarray | None
    inputs: str  # calibration | gaussian | uniform
    split: str  # holdout | none | synthetic
    scale: float | None
    calibration_sha256: str | None

    def describe(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "split": self.split,
            "samples_fit": int(self.fit.shape[0]),
            "samples_holdout": int(self.holdout.shape[0]),
            "scale": self.scale,
        }


def evaluation_data(
    net: Network, spec: EvaluationSpec, calibration: CalibrationLike | None, seed: int
) -> EvalData:
    """Split the calibration inputs, or draw synthetic ones (Gaussian/uniform with a stated scale)."""
    rng = np.random.default_rng([seed, 0x5EED])
    if calibration is not None and spec.inputs == "calibration":
        X = as_model_input(net, np.asarray(calibration.inputs, dtype=np.float32), calibration=True)
        y = calibration.labels
        S = X.shape[0]
        if S < 2:
            raise CalibrationError("calibration needs at least 2 samples", field="calibration")
        n_ho = int(round(spec.holdout_fraction * S)) if S >= MIN_SAMPLES_FOR_HOLDOUT else 0
        if n_ho == 0 or n_ho >= S:
            return EvalData(X, X, y, y, "calibration", "none", None, calibration.sha256)
        perm = rng.permutation(S)
        ho, fit = np.sort(perm[:n_ho]), np.sort(perm[n_ho:])
        return EvalData(
            X[fit],
            X[ho],
            None if y is None else y[fit],
            None if y is None else y[ho],
            "calibration",
            "holdout",
            None,
            calibration.sha256,
        )
    kind = "gaussian" if spec.inputs == "calibration" else spec.inputs
    shape = (spec.samples, *net.input_shape)
    n_ho = max(2, int(round(spec.holdout_fraction * spec.samples))) if spec.holdout_fraction > 0 else 0

    def draw(n: int) -> np.ndarray:
        s = (n, *net.input_shape)
        if kind == "uniform":
            return rng.uniform(-spec.scale, spec.scale, size=s).astype(np.float32)
        return (spec.scale * rng.standard_normal(size=s)).astype(np.float32)

    fit = as_model_input(net, draw(shape[0]), calibration=False)
    holdout = as_model_input(net, draw(n_ho), calibration=False) if n_ho else fit
    return EvalData(fit, holdout, None, None, kind, "synthetic" if n_ho else "none", spec.scale, None)
