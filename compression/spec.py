"""What to do to a model: the core's compression spec.

Plain frozen dataclasses, so the core needs no web library. ``CompressSpec.from_dict`` validates
a JSON-like dict (the API's ``JobSpec`` and the CLI flags both end up here) and raises
``InvalidSpecError`` naming the offending field. Ref: docs/api.md "JobSpec".
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from netshrink.compression.errors import InvalidSpecError

Granularity = Literal["weight", "neuron", "channel"]
PruneMethod = Literal["randomized_greedy", "magnitude", "obd"]
QuantMethod = Literal["randomized_greedy", "rtn"]
ScoreKind = Literal["layer", "output"]
ScaleKind = Literal["per_row", "per_layer"]
InputsKind = Literal["calibration", "gaussian", "uniform"]
Device = Literal["auto", "cpu", "cuda"]
JobKind = Literal["compress", "analyze"]

MIN_BITS, MAX_BITS = 2, 8
MAX_DRAWS = 64
DRAWS_AUTO: Literal["auto"] = (
    "auto"  # keep drawing until the fit-split error stops improving (search/greedy.py)
)
SEED_MAX = 2**63 - 1
# What kind analyze refuses: it reports diagnostics of the model as uploaded and compresses nothing, so
# these would be ignored (until 2026-12-05 they were, silently). It takes seed, device, full_diagnostics.
COMPRESSION_ONLY = (
    "prune",
    "quantize",
    "target",
    "exclude",
    "draws",
    "compensate",
    "evaluation",
    "compare_baselines",
    "target_opset",
)


@dataclass(frozen=True)
class PruneSpec:
    """Pruning stage. ``keep`` is the target kept fraction κ (globally or per layer name)."""

    keep: float | Mapping[str, float] = 0.5
    granularity: Granularity = "weight"
    fraction: float | Literal["auto"] = "auto"  # f, P1's randomized fraction (α in P1)
    score: ScoreKind = "layer"
    method: PruneMethod = "randomized_greedy"

    def keep_for(self, layer: str) -> float:
        if isinstance(self.keep, Mapping):
            return float(self.keep.get(layer, 1.0))
        return float(self.keep)


@dataclass(frozen=True)
class QuantizeSpec:
    """Quantization stage: symmetric b-bit grid with k = 2^(b-1) - 1 levels per sign."""

    bits: int | Mapping[str, int] = 8  # one width, or per layer name (unnamed layers stay float)
    scale: ScaleKind = "per_row"
    method: QuantMethod = "randomized_greedy"
    fraction: float = 1.0  # f: 1.0 puts every weight on the grid (pure integer storage)

    def bits_for(self, layer: str) -> int | None:
        """This layer's bits; None when a per-layer mapping leaves it out (kept float)."""
        if isinstance(self.bits, Mapping):
            b = self.bits.get(layer)
            return None if b is None else int(b)
        return int(self.bits)

    @property
    def width(self) -> int:
        """The single bit width (a per-layer spec is resolved by ``search.greedy.stages_for`` first)."""
        if isinstance(self.bits, Mapping):
            raise TypeError("per-layer bits: resolve the layer's QuantizeSpec first (stages_for)")
        return int(self.bits)

    @property
    def levels(self) -> int:
        return 2 ** (self.width - 1) - 1

    @property
    def container_bits(self) -> int:
        return 2 if self.width <= 2 else 4 if self.width <= 4 else 8


@dataclass(frozen=True)
class TargetSpec:
    """Error budget for the search: ``relative_l2 <= max`` or ``top1_agreement >= min``."""

    metric: Literal["relative_l2", "top1_agreement"] = "relative_l2"
    max: float | None = None
    min: float | None = None


@dataclass(frozen=True)
class EvaluationSpec:
    """Which inputs measure the error (docs/method.md §2)."""

    inputs: InputsKind = "calibration"  # falls back to "gaussian" when no calibration is given
    scale: float = 1.0
    samples: int = 256
    holdout_fraction: float = 0.2
    delta: float = 0.1  # Markov: P(error > B/δ) <= δ


HELD_BACK: Literal["held_back"] = (
    "held_back"  # compensate: null resolved (search/auto_compensate.py); internal, never user input
)


@dataclass(frozen=True)
class CompressSpec:
    kind: JobKind = "compress"
    prune: PruneSpec | None = None
    quantize: QuantizeSpec | None = None
    exclude: tuple[str, ...] = ()
    draws: int | Literal["auto"] = DRAWS_AUTO
    # error compensation (algorithm/compensate.py): bias + LS refit + GPTQ. None (the default): on
    # wherever it applies, each layer's refit kept only where it lowers the held-back objective
    # (search/auto_compensate.py resolves it to HELD_BACK, never set by a user); False: the
    # uncompensated, unbiased draws; True: every refit kept
    compensate: bool | Literal["held_back"] | None = None
    target: TargetSpec | None = None
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    compare_baselines: bool = False
    target_opset: int | None = None
    seed: int | None = None
    device: Device = "auto"
    full_diagnostics: bool = False  # α̂ on every row, every singular value (cubic); sampled otherwise

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CompressSpec:
        """Validate a JSON-like mapping. Unknown keys are refused so typos never pass silently."""
        data = dict(data or {})
        _no_unknown(data, cls, "")
        prune = _sub(data.get("prune"), PruneSpec, "prune")
        quant = _sub(data.get("quantize"), QuantizeSpec, "quantize")
        target = _sub(data.get("target"), TargetSpec, "target")
        evaluation = _sub(data.get("evaluation"), EvaluationSpec, "evaluation") or EvaluationSpec()
        exclude = data.get("exclude") or ()
        if isinstance(exclude, str) or not all(isinstance(x, str) for x in exclude):
            raise InvalidSpecError("exclude must be a list of layer names", field="exclude")
        spec = cls(
            kind=data.get("kind", "compress"),
            prune=prune,
            quantize=quant,
            exclude=tuple(exclude),
            draws=data.get("draws", DRAWS_AUTO),
            compensate=data.get("compensate"),
            target=target,
            evaluation=evaluation,
            compare_baselines=data.get("compare_baselines", False),
            target_opset=data.get("target_opset"),
            seed=data.get("seed"),
            device=data.get("device", "auto"),
            full_diagnostics=data.get("full_diagnostics", False),
        )
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["exclude"] = list(self.exclude)
        if self.compensate == HELD_BACK:
            out["compensate"] = None  # the default's rule: null re-submitted resolves to it again
        return out

    @property
    def top1_target(self) -> bool:
        """A top-1 agreement target: the output is a classifier's whatever its graph's tail (a
        PyTorch export without Softmax), so top-1 is measured and reported for it."""
        return self.target is not None and self.target.metric == "top1_agreement"

    def with_seed(self) -> CompressSpec:
        """Return the spec with a concrete seed (random when unset); the seed is always echoed."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(2**31))

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        _choice(self.kind, ("compress", "analyze"), "kind")
        _choice(self.device, ("auto", "cpu", "cuda"), "device")
        if self.draws != DRAWS_AUTO:
            _int_range(self.draws, 1, MAX_DRAWS, "draws")
        if self.compensate is not None and not isinstance(self.compensate, bool):
            raise InvalidSpecError(
                "compensate must be a boolean (or null: on wherever it applies)", field="compensate"
            )
        if self.seed is not None:
            _int_range(self.seed, 0, SEED_MAX, "seed")
        if self.target_opset is not None:
            _int_range(self.target_opset, 13, 25, "target_opset")
        if not isinstance(self.full_diagnostics, bool):
            raise InvalidSpecError("full_diagnostics must be a boolean", field="full_diagnostics")
        if not isinstance(self.compare_baselines, bool):
            raise InvalidSpecError("compare_baselines must be a boolean", field="compare_baselines")
        p, q = self.prune, self.quantize
        if p is not None:
            _choice(p.granularity, ("weight", "neuron", "channel"), "prune.granularity")
            _choice(p.method, ("randomized_greedy", "magnitude", "obd"), "prune.method")
            _choice(p.score, ("layer", "output"), "prune.score")
            keeps = p.keep.values() if isinstance(p.keep, Mapping) else [p.keep]
            for k in keeps:
                _float_range(k, 0.0, 1.0, "prune.keep", low_open=True)
            if p.fraction != "auto":
                _float_range(p.fraction, 0.0, 1.0, "prune.fraction", low_open=True)
        if q is not None:
            widths = q.bits.values() if isinstance(q.bits, Mapping) else [q.bits]
            for b in widths:
                _int_range(b, MIN_BITS, MAX_BITS, "quantize.bits")
            _choice(q.scale, ("per_row", "per_layer"), "quantize.scale")
            _choice(q.method, ("randomized_greedy", "rtn"), "quantize.method")
            _float_range(q.fraction, 0.0, 1.0, "quantize.fraction", low_open=True)
        if self.target is not None:
            t = self.target
            _choice(t.metric, ("relative_l2", "top1_agreement"), "target.metric")
            if t.metric == "relative_l2":
                if t.max is None:
                    raise InvalidSpecError("target.max is required for relative_l2", field="target.max")
                _float_range(t.max, 0.0, 10.0, "target.max", low_open=True)
            else:
                if t.min is None:
                    raise InvalidSpecError("target.min is required for top1_agreement", field="target.min")
                _float_range(t.min, 0.0, 1.0, "target.min")
        e = self.evaluation
        _choice(e.inputs, ("calibration", "gaussian", "uniform"), "evaluation.inputs")
        _float_range(e.scale, 0.0, 1e6, "evaluation.scale", low_open=True)
        _int_range(e.samples, 2, 100_000, "evaluation.samples")
        _float_range(e.holdout_fraction, 0.0, 0.9, "evaluation.holdout_fraction")
        _float_range(e.delta, 0.0, 1.0, "evaluation.delta", low_open=True, high_open=True)
        if self.kind == "analyze":
            self._analyze_only()
        if self.kind == "compress" and p is None and q is None and self.target is None:
            # Allowed: a spec that compresses nothing returns the model unchanged (drop-in check).
            pass

    def compression_options(self) -> list[str]:
        """The ``COMPRESSION_ONLY`` fields this spec sets away from their defaults (an empty
        ``exclude``, ``draws: "auto"``, ``compare_baselines: false`` and the rest's null are defaults)."""
        default = CompressSpec()
        return [name for name in COMPRESSION_ONLY if getattr(self, name) != getattr(default, name)]

    def _analyze_only(self) -> None:
        given = self.compression_options()
        if given:
            raise InvalidSpecError(
                f"kind analyze compresses nothing and takes no compression options; got "
                f"{', '.join(given)} (it takes seed, device and full_diagnostics; use kind compress)",
                field=given[0],
            )


# ---- helpers -----------------------------------------------------------------------------------
def _sub(value: Any, cls: type[Any], name: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidSpecError(f"{name} must be an object", field=name)
    _no_unknown(value, cls, name + ".")
    try:
        return cls(**value)
    except TypeError as exc:  # pragma: no cover - guarded by _no_unknown
        raise InvalidSpecError(str(exc), field=name) from exc


def _no_unknown(value: Mapping[str, Any], cls: type[Any], prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            raise InvalidSpecError(f"unknown field {prefix}{key}", field=f"{prefix}{key}")


def _choice(value: Any, options: tuple[str, ...], name: str) -> None:
    if value not in options:
        raise InvalidSpecError(f"{name} must be one of {', '.join(options)}; got {value!r}", field=name)


def _int_range(value: Any, lo: int, hi: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidSpecError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}", field=name)


def _float_range(
    value: Any, lo: float, hi: float, name: str, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        v = float(cast(float, value))
        ok = (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)
    if not ok:
        lb, rb = ("(" if low_open else "["), (")" if high_open else "]")
        raise InvalidSpecError(f"{name} must be a number in {lb}{lo}, {hi}{rb}; got {value!r}", field=name)
