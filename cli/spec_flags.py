"""Command-line flags → a JSON-ready ``JobSpec`` (docs/api.md "JobSpec"; ``CompressSpec.from_dict`` format).

Shared by ``netshrink submit`` (sent to a server) and ``netshrink compress`` (run locally), so both
accept exactly the same flags. Only flags the user gave end up in the spec; everything else keeps
the validator's default, and range checks stay in one place (``compression.spec``/the server).

A stage is switched on by its defining flag: ``--prune-keep`` for pruning, ``--bits`` for
quantization, ``--target-error``/``--target-top1`` for the budget search. Its modifiers
(``--granularity``, ``--scale``, ...) without the stage are refused rather than silently ignored.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netshrink.cli.preflight import InputFileError, json_arg

PRUNE_METHODS = ("randomized_greedy", "magnitude", "obd")
QUANT_METHODS = ("randomized_greedy", "rtn")


class SpecFlagError(ValueError):
    """Flags that cannot form a spec (a modifier without its stage, a method the stage lacks)."""


def _keep(value: str) -> float | dict[str, float]:
    """``0.5`` (every layer) or ``fc1=0.5,fc2=0.25`` (per layer; unnamed layers keep 1.0)."""
    try:
        if "=" not in value:
            return float(value)
        pairs = (item.split("=", 1) for item in value.split(",") if item.strip())
        return {name.strip(): float(keep) for name, keep in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or layer=keep,...; got {value!r}") from None


def _bits(value: str) -> int | dict[str, int]:
    """``4`` (every layer) or ``fc1=4,fc2=8`` (per layer; unnamed layers stay float)."""
    try:
        if "=" not in value:
            return int(value)
        pairs = (item.split("=", 1) for item in value.split(",") if item.strip())
        return {name.strip(): int(bits) for name, bits in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or layer=bits,...; got {value!r}") from None


def _fraction(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'auto'; got {value!r}") from None


def _draws(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto'; got {value!r}") from None


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the JobSpec flags (defaults are ``None``: unset flags do not appear in the spec)."""
    g = parser.add_argument_group("compression spec (see docs/api.md 'JobSpec')")
    g.add_argument("--spec", type=Path, metavar="JSON", help="base JobSpec file; the flags below override it")
    g.add_argument(
        "--kind", choices=("compress", "analyze", "finetune"), help="analyze = diagnostics only; finetune: P3"
    )
    g.add_argument("--prune-keep", type=_keep, metavar="KEEP", help="kept fraction: 0.5 or fc1=0.5,fc2=0.3")
    g.add_argument("--granularity", choices=("weight", "neuron", "channel"))
    g.add_argument("--fraction", type=_fraction, metavar="F", help="randomized fraction f in (0, 1], or auto")
    g.add_argument("--score", choices=("layer", "output"))
    g.add_argument("--bits", type=_bits, metavar="B", help="quantize to B bits (2..8), or fc1=4,fc2=8")
    g.add_argument("--scale", choices=("per_row", "per_layer"))
    g.add_argument(
        "--method",
        choices=sorted({*PRUNE_METHODS, *QUANT_METHODS}),
        help="method for every enabled stage that supports it",
    )
    g.add_argument("--prune-method", choices=PRUNE_METHODS)
    g.add_argument("--quant-method", choices=QUANT_METHODS)
    g.add_argument("--exclude", action="append", metavar="LAYER", help="layers to leave as is (repeatable)")
    g.add_argument(
        "--draws",
        type=_draws,
        metavar="R",
        help="best of R whole-network draws, or auto (default: until 3 draws bring no gain, "
        "at most min(16, max(4, 2^34 / (parameters x fit samples))))",
    )
    g.add_argument(
        "--compensate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="error compensation: bias mean replacement, LS refit, GPTQ-style rounding (default: on "
        "wherever it applies, each layer's refit fit on 3/4 of the fit split and kept only where it "
        "lowers the layer's error on the held-back 1/4; off above 2^38 refit multiply-adds; "
        "--compensate: every refit kept; --no-compensate: the unbiased randomized draws, tiers E/T/P)",
    )
    g.add_argument("--seed", type=int)
    target = g.add_mutually_exclusive_group()
    target.add_argument("--target-error", type=float, metavar="MAX", help="budget: relative_l2 <= MAX")
    target.add_argument("--target-top1", type=float, metavar="MIN", help="budget: top-1 agreement >= MIN")
    g.add_argument("--eval-inputs", choices=("calibration", "gaussian", "uniform"))
    g.add_argument("--eval-scale", type=float, metavar="S", help="scale of synthetic inputs")
    g.add_argument("--eval-samples", type=int, metavar="N", help="number of synthetic inputs")
    g.add_argument("--holdout-fraction", type=float, metavar="H")
    g.add_argument("--delta", type=float, help="failure probability for the (1-δ) bounds")
    g.add_argument("--target-opset", type=int, metavar="N")
    g.add_argument("--compare-baselines", action="store_true", default=None)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"))
    g.add_argument(
        "--full-diagnostics",
        action="store_true",
        default=None,
        help="exact heavy-tail diagnostics on large layers (all rows for alpha, every singular value: cubic)",
    )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The optional inputs next to the model (docs/api.md ``POST /v1/jobs`` form fields)."""
    parser.add_argument("--architecture", type=Path, metavar="JSON", help="layer order of a state dict")
    parser.add_argument("--calibration", type=Path, metavar="NPZ", help=".npz with 'inputs' (and 'labels')")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Build the JobSpec dict. Raises ``SpecFlagError`` for flag combinations that make no sense."""
    spec: dict[str, Any] = _load_base(args) if getattr(args, "spec", None) else {}
    _set(spec, "kind", args.kind)
    prune_flags = {"keep": args.prune_keep, "granularity": args.granularity, "fraction": args.fraction}
    prune_flags["score"] = args.score
    prune = _stage(spec, "prune", args.prune_keep is not None, "--prune-keep", prune_flags)
    quant_flags = {"bits": args.bits, "scale": args.scale}
    quant = _stage(spec, "quantize", args.bits is not None, "--bits", quant_flags)
    _methods(args, prune, quant)
    if args.exclude:
        names = [n.strip() for item in args.exclude for n in item.split(",") if n.strip()]
        spec["exclude"] = [*spec.get("exclude", []), *names]
    if args.target_error is not None:
        spec["target"] = {"metric": "relative_l2", "max": args.target_error}
    elif args.target_top1 is not None:
        spec["target"] = {"metric": "top1_agreement", "min": args.target_top1}
    evaluation = {
        "inputs": args.eval_inputs,
        "scale": args.eval_scale,
        "samples": args.eval_samples,
        "holdout_fraction": args.holdout_fraction,
        "delta": args.delta,
    }
    if any(v is not None for v in evaluation.values()):
        given = {k: v for k, v in evaluation.items() if v is not None}
        spec["evaluation"] = {**spec.get("evaluation", {}), **given}
    keys = ("draws", "compensate", "seed", "target_opset", "compare_baselines", "device", "full_diagnostics")
    for key in keys:
        _set(spec, key, getattr(args, key))
    return spec


def _load_base(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--spec`` file as the pre-check read it (``cli/preflight.py``): a pipe is read only once."""
    try:
        base = json_arg(args, "spec")
    except InputFileError as exc:
        raise SpecFlagError(str(exc)) from None
    if not isinstance(base, dict):
        raise SpecFlagError(f"--spec {args.spec}: expected a JSON object")
    return base


def _set(spec: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        spec[key] = value


def _stage(
    spec: dict[str, Any], name: str, enabled: bool, flag: str, values: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge a stage's flags into ``spec[name]``; modifiers need the stage (from ``flag`` or ``--spec``)."""
    given = {k: v for k, v in values.items() if v is not None}
    stage = spec.get(name)
    if not enabled and stage is None:
        if given:
            opts = ", ".join("--" + k.replace("_", "-") for k in given)
            raise SpecFlagError(f"{opts} need(s) {flag}")
        return None
    stage = {**(stage or {}), **given}
    spec[name] = stage
    return stage


def _methods(args: argparse.Namespace, prune: dict[str, Any] | None, quant: dict[str, Any] | None) -> None:
    """``--method`` applies to each enabled stage; a stage that lacks it needs its own ``--*-method``."""
    for stage, own, options, flag, enabler in (
        (prune, args.prune_method, PRUNE_METHODS, "--prune-method", "--prune-keep"),
        (quant, args.quant_method, QUANT_METHODS, "--quant-method", "--bits"),
    ):
        if own is not None and stage is None:
            raise SpecFlagError(f"{flag} needs {enabler}")
        method = own or args.method
        if stage is None or method is None:
            continue
        if method not in options:
            raise SpecFlagError(f"--method {method} does not apply to this stage; set {flag} explicitly")
        stage["method"] = method
    if args.method is not None and prune is None and quant is None:
        raise SpecFlagError("--method needs --prune-keep or --bits")
