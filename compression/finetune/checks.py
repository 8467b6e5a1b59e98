"""Refusals a finetune job makes after loading its data and before training any arm.

- A follow-up compress (``"compress": {...}``) measures its error on the validation split, as a
  compress job measures it on its calibration inputs (docs/method.md §2: a mean over at least
  ``MIN_SAMPLES`` = 2 samples). A smaller split used to fail only after every epoch of every arm, as
  "calibration needs at least 2 samples" on a calibration file the user never gave (found by probing,
  2026-12-05): it is refused up front, naming ``validation`` (an uploaded set) or ``train`` (the
  split was carved from it).
- The train and validation inputs get compress's float32 activation-range check
  (``evaluation.activation_range.check_activation_range``: max|a|² · N must fit float32). Inputs
  ×1e30 used to overflow the first forward pass and fail as ``training-diverged`` on ``eta`` ("lower
  sigma or eta", even in the plain arm): they are refused as invalid-calibration on
  ``train.inputs`` / ``validation.inputs``, asking to rescale them. A genuine divergence (too large
  an η or σ on inputs in range) is still ``training-diverged``.
"""

from __future__ import annotations

import torch

from netshrink.compression.errors import CalibrationError
from netshrink.compression.evaluation.activation_range import check_activation_range
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.graph.calibration import MIN_SAMPLES
from netshrink.compression.graph.network import Network


def check_follow_up_samples(
    spec: FinetuneSpec, n_validation: int, *, carved: bool, n_train_file: int
) -> None:
    """Refuse a validation split of fewer than ``MIN_SAMPLES`` when a follow-up compress measures on it.

    ``n_validation``: the validation samples (uploaded, or carved from the ``n_train_file`` samples of
    the training file when ``carved``). Only label counts are needed, so a submit-time check can call
    this without loading the inputs. No follow-up compress, or one on synthetic inputs
    (``evaluation.inputs`` gaussian/uniform), needs no validation sample at all."""
    follow = spec.compress
    if follow is None or follow.evaluation.inputs != "calibration" or n_validation >= MIN_SAMPLES:
        return
    why = (  # as the API words its submit-time refusal (service/submission.py)
        "the follow-up compress measures its error on the validation split, which needs at least "
        f"{MIN_SAMPLES} samples"
    )
    if not carved:
        raise CalibrationError(
            f"validation holds {n_validation} sample(s); {why} (give a validation file of at least "
            f"{MIN_SAMPLES})",
            field="validation",
        )
    raise CalibrationError(
        f"train has {n_train_file} samples: validation_fraction {spec.validation_fraction:g} carves "
        f"{n_validation} for validation; {why} (give a validation file, or raise validation_fraction)",
        field="train",
    )


def check_input_range(ex: Executor, net: Network, X: torch.Tensor, name: str) -> None:
    """Compress's activation-range check on the ``name`` ("train" / "validation") inputs X: (S, *in).

    A refusal at the model's input blames the inputs: ``CalibrationError`` on ``{name}.inputs``. A
    hidden activation out of range stays ``InvalidWeightsError``, naming the tensor and the ``name``
    inputs."""
    if int(X.shape[0]) > 0:
        check_activation_range(ex, net, X, inputs=name, data_field=f"{name}.inputs")
