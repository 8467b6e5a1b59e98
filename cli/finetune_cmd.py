"""``netshrink finetune MODEL --train data.npz [--spec JSON] --seed N --out DIR``: P3 fine-tuning locally.

Trains a plain arm and a heavy-tailed-noise arm (docs/method.md §4) and writes the noise-arm model in
the upload's format, ``report.json`` (the ``finetune`` section) and ``report.html``. Exit codes as
``compress``: 0 ok, 2 bad input (one line naming the field; a diverged training is bad input too),
3 the follow-up compress (``"compress": {...}``) missed its error budget, every file written first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from netshrink.cli.local_run import EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_OK, print_timings, set_threads
from netshrink.cli.preflight import json_arg


class StageClock:
    """Wall seconds per stage of a finetune run, from the core's progress events (``--verbose``).

    A ``training`` event with epoch 0 starts an arm ("train arm 1" is the plain arm, then one per σ);
    every other stage runs from its event to the next one. Arm 1 includes torch.optim's first-use
    import of ``torch._dynamo`` (seconds on a loaded machine).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.current, self.arm, self.t = "load", 0, time.perf_counter()

    def event(self, stage: str, epoch: int | None = None) -> None:
        label = stage
        if stage == "training":
            if epoch:
                return  # within an arm
            self.arm += 1
            label = f"train arm {self.arm}"
        if label == self.current:
            return
        now = time.perf_counter()
        self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self.t
        self.current, self.t = label, now


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX file, or a PyTorch state dict (.pt/.pth/.safetensors)")
    parser.add_argument("--train", type=Path, required=True, help=".npz with 'inputs' and integer 'labels'")
    parser.add_argument("--validation", type=Path, help="validation .npz (default: carved from --train)")
    parser.add_argument("--architecture", type=Path, metavar="JSON", help="layer order of a state dict")
    parser.add_argument("--spec", metavar="JSON", help="finetune spec: a JSON file or an inline JSON object")
    parser.add_argument("--sigma", type=float, nargs="+", help="noise scale σ (several values: a σ sweep)")
    parser.add_argument("--alpha", type=float, help="stability index α of the noise (default 1.75)")
    parser.add_argument("--eta", type=float, help="learning rate η (default 0.01)")
    parser.add_argument("--epochs", type=int, help="epochs per arm (default 20)")
    parser.add_argument("--batch-size", type=int, help="default 64")
    parser.add_argument("--optimizer", choices=("sgd", "adam"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, help="same seed, inputs and device -> same bytes")
    parser.add_argument("--out", type=Path, default=Path("netshrink-out"), help="output directory")
    parser.add_argument("--no-html", action="store_true", help="skip report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary")
    parser.add_argument("--verbose", action="store_true", help="print the wall seconds spent in each stage")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads (default: NETSHRINK_TORCH_THREADS, else every core torch sees); on a shared "
        "machine 1 is fastest (docs/results.md §4, speed)",
    )


def spec_dict(args: argparse.Namespace) -> dict[str, Any]:
    """--spec (file or inline JSON) overridden by the individual flags that were given."""
    spec: dict[str, Any] = {}
    if args.spec:
        value = json_arg(args, "spec")  # as the pre-check read it: a piped --spec is read once
        if not isinstance(value, dict):
            raise ValueError("--spec must be a JSON object")
        spec.update(value)
    flags = {
        "alpha": args.alpha,
        "eta": args.eta,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "device": args.device,
        "seed": args.seed,
    }
    spec.update({k: v for k, v in flags.items() if v is not None})
    if args.sigma:
        spec["sigma"] = args.sigma[0] if len(args.sigma) == 1 else list(args.sigma)
    spec["kind"] = "finetune"
    return spec


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from netshrink.compression import CompressionError
    from netshrink.compression.finetune.job import finetune
    from netshrink.compression.finetune.spec import FinetuneSpec
    from netshrink.compression.graph.loading import load_model

    err = Console(stderr=True)
    stages = StageClock()
    try:
        threads = set_threads(args.threads)
        spec = FinetuneSpec.from_dict(spec_dict(args))
        net = load_model(args.model, architecture=json_arg(args, "architecture"))

        def on_progress(ev: Any) -> None:
            stages.event(ev.stage, ev.layer)
            if not args.quiet and ev.stage == "training" and ev.layer and ev.layers_total:
                err.print(
                    f"training: epoch {ev.layer}/{ev.layers_total} ({ev.fraction:.0%})", highlight=False
                )

        result = finetune(
            net, spec, args.train, upload=args.model, validation=args.validation, on_progress=on_progress
        )
    except CompressionError as exc:
        where = f" {exc.field}" if exc.field else ""
        print(f"error ({exc.slug}){where}: {exc.detail}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.no_html:
        stages.event("html")  # matplotlib's import included
        from netshrink.reporting import render_html

        result.add("report.html", render_html(result.report).encode())
    stages.event("write")
    paths = result.write(args.out)
    stages.event("end")
    if args.verbose:
        print_timings(err, {"torch_threads": threads, "stages": stages.seconds})
    if not args.quiet:
        print_summary(result.report)
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if follow_up_budget_met(result.report) is False:
        err.print(f"[yellow]{BUDGET_NOT_MET}[/]")
        return EXIT_BUDGET
    return EXIT_OK


BUDGET_NOT_MET = "the error budget of the follow-up compress was not met"


def follow_up_budget_met(report: dict[str, Any]) -> bool | None:
    """The follow-up compress's ``summary.budget_met`` (exit 3 when false, here and in ``submit``);
    None without a follow-up compress or without a target."""
    follow = report.get("compress") or {}
    met = (follow.get("summary") or {}).get("budget_met")
    return None if met is None else bool(met)


def finetune_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Accuracy and prunable fraction of the three models, with the σ kept, and the follow-up
    compress's summary under ``compress`` when there was one (``submit --json``)."""
    ft = report["finetune"]
    models = {"original": ft["original"], **ft["arms"]}
    out: dict[str, Any] = {"sigma": ft["noise"]["sigma"], "tolerance_points": ft["tolerance_points"]}
    for name, m in models.items():
        out[name] = {"accuracy": m["accuracy"], "prunable_fraction": m["prune"]["prunable_fraction"]}
    if report.get("compress"):
        out["compress"] = report["compress"].get("summary") or {}
    return out


def print_summary(report: dict[str, Any]) -> None:
    """Accuracy and the prunable fraction at ≤ tolerance points, for the three models."""
    from rich.console import Console
    from rich.table import Table

    ft = report["finetune"]
    tol = ft["tolerance_points"]
    table = Table(title=f"finetune (sigma={ft['noise']['sigma']:g}, alpha={ft['noise']['alpha']:g})")
    for col in ("model", "accuracy %", f"prunable fraction (≤ {tol:g} pt)"):
        table.add_column(col)
    rows = [("original", ft["original"]), ("plain", ft["arms"]["plain"]), ("noise", ft["arms"]["noise"])]
    for name, m in rows:
        pf = m["prune"]["prunable_fraction"]
        table.add_row(name, f"{m['accuracy']:.2f}", "n/a" if pf is None else f"{pf:.3f}")
    Console(stderr=True).print(table)
