"""What a ``finetune`` job does: ``FinetuneSpec``, validated from a JSON-like dict.

Defaults follow docs/method.md §4 (P3, Wan et al. 2024): α = 1.75, σ = 0.003, η = 0.01, SGD with
momentum. ``sigma`` may be a list: a σ sweep, of which the largest σ whose accuracy stays within
``tolerance`` points of the plain arm is kept (P3's selection). ``compress`` is an optional
follow-up compress spec (``CompressSpec``) applied to the noise-fine-tuned model.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.spec import SEED_MAX, CompressSpec

Optimizer = Literal["sgd", "adam"]
MAX_EPOCHS = 1000
MAX_SWEEP = 16


@dataclass(frozen=True)
class FinetuneSpec:
    kind: Literal["finetune"] = "finetune"
    alpha: float = 1.75  # stability index of the SαS noise, in (0, 2]
    sigma: float | tuple[float, ...] = 0.003  # noise scale; a tuple is a σ sweep
    eta: float = 0.01  # learning rate η (also in the noise scale σ·η^{1/α})
    epochs: int = 20
    batch_size: int = 64
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9  # SGD only
    validation_fraction: float = 0.2  # carved from the training data when no validation set is given
    tolerance: float = 1.0  # accuracy points: the prune curve's and the σ sweep's budget
    seed: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compress: CompressSpec | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FinetuneSpec:
        """Validate a JSON-like mapping; unknown keys are refused, ``field`` names the culprit."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidSpecError(f"unknown field {key}", field=key)
        sigma = data.get("sigma", cls.sigma)
        if isinstance(sigma, list | tuple):
            if not 1 <= len(sigma) <= MAX_SWEEP:
                raise InvalidSpecError(f"a sigma sweep takes 1 to {MAX_SWEEP} values", field="sigma")
            sigma = tuple(sigma)
        follow = data.get("compress")
        if follow is not None:
            if not isinstance(follow, Mapping):
                raise InvalidSpecError("compress must be an object (a compress spec)", field="compress")
            try:
                follow = CompressSpec.from_dict({**follow, "kind": "compress"})
            except InvalidSpecError as exc:
                raise InvalidSpecError(
                    exc.detail, field=f"compress.{exc.field}" if exc.field else "compress"
                ) from exc
        spec = cls(**{**{k: v for k, v in data.items() if k not in ("sigma", "compress")}})
        spec = dataclasses.replace(spec, sigma=sigma, compress=follow)
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.kind != "finetune":
            raise InvalidSpecError(f"kind must be finetune; got {self.kind!r}", field="kind")
        _number(self.alpha, 0.0, 2.0, "alpha", low_open=True)
        for s in self.sigmas:
            _number(s, 0.0, 100.0, "sigma")
        _number(self.eta, 0.0, 10.0, "eta", low_open=True)
        _integer(self.epochs, 1, MAX_EPOCHS, "epochs")
        _integer(self.batch_size, 1, 1_000_000, "batch_size")
        if self.optimizer not in ("sgd", "adam"):
            raise InvalidSpecError(
                f"optimizer must be sgd or adam; got {self.optimizer!r}", field="optimizer"
            )
        _number(self.momentum, 0.0, 1.0, "momentum", high_open=True)
        _number(self.validation_fraction, 0.0, 0.9, "validation_fraction", low_open=True)
        _number(self.tolerance, 0.0, 100.0, "tolerance")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidSpecError(f"device must be auto, cpu or cuda; got {self.device!r}", field="device")
        if self.seed is not None:
            _integer(self.seed, 0, SEED_MAX, "seed")

    @property
    def sigmas(self) -> tuple[float, ...]:
        return self.sigma if isinstance(self.sigma, tuple) else (self.sigma,)

    @property
    def is_sweep(self) -> bool:
        return isinstance(self.sigma, tuple)

    def with_seed(self) -> FinetuneSpec:
        """A concrete seed (random when unset); the seed is always echoed in the report."""
        return self if self.seed is not None else dataclasses.replace(self, seed=secrets.randbelow(2**31))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["sigma"] = list(self.sigma) if isinstance(self.sigma, tuple) else self.sigma
        out["compress"] = None if self.compress is None else self.compress.to_dict()
        return out


def _number(
    value: Any, lo: float, hi: float, name: str, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)
    if not ok:
        lb, rb = ("(" if low_open else "["), (")" if high_open else "]")
        raise InvalidSpecError(f"{name} must be a number in {lb}{lo}, {hi}{rb}; got {value!r}", field=name)


def _integer(value: Any, lo: int, hi: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidSpecError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}", field=name)
