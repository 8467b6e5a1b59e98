"""Shared by ``netshrink compress`` and ``analyze``: load, run the core locally, write, summarize."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET = 0, 2, 3


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX file, or a PyTorch state dict (.pt/.pth/.safetensors)")
    parser.add_argument("--out", type=Path, default=Path("netshrink-out"), help="output directory")
    parser.add_argument("--no-html", action="store_true", help="skip report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary table")


def execute(args: argparse.Namespace, spec_dict: dict[str, Any]) -> int:
    """Run the core on ``args.model`` with ``spec_dict``; exit 0/2/3 per docs/api.md."""
    from netshrink.cli.summary import print_summary
    from netshrink.compression import CompressionError, CompressSpec
    from netshrink.compression.graph.calibration import load_calibration
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.pipeline import compress

    err = Console(stderr=True)
    try:
        spec = CompressSpec.from_dict(spec_dict)
        arch = getattr(args, "architecture", None)
        net = load_model(args.model, architecture=json.loads(arch.read_text()) if arch else None)
        cal_path = getattr(args, "calibration", None)
        cal = load_calibration(cal_path, net) if cal_path else None
        sha = hashlib.sha256(args.model.read_bytes()).hexdigest()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err,
            disable=args.quiet,
            transient=True,
        ) as bar:
            task = bar.add_task("compressing", total=1.0)

            def on_progress(ev: Any) -> None:
                label = f"{ev.stage} {ev.layer}/{ev.layers_total}" if ev.layers_total else ev.stage
                bar.update(task, completed=ev.fraction, description=label)

            result = compress(net, spec, calibration=cal, on_progress=on_progress, input_sha256=sha)
    except CompressionError as exc:
        err.print(f"[bold red]error[/] ({exc.slug}): {exc.detail}")
        if exc.nodes:
            err.print("offending nodes: " + ", ".join(exc.nodes))
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as exc:
        err.print(f"[bold red]error[/]: {exc}")
        return EXIT_BAD_INPUT
    if not args.no_html:
        from netshrink.reporting import render_html

        result.add("report.html", render_html(result.report).encode())
    paths = result.write(args.out)
    if not args.quiet:
        print_summary(result.report)
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    met = (result.report.get("summary") or {}).get("budget_met")
    return EXIT_BUDGET if met is False else EXIT_OK
