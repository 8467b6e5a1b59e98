"""Shared by ``netshrink compress`` and ``analyze``: load, run the core locally, write, summarize."""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netshrink.cli.preflight import json_arg
from netshrink.cli.threads import limit_threads

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET = 0, 2, 3
DEFAULT_OUT = "netshrink-out"


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX file, or a PyTorch state dict (.pt/.pth/.safetensors)")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output directory (default ./{DEFAULT_OUT}, and says so)"
    )
    parser.add_argument("--no-html", action="store_true", help="skip report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    parser.add_argument(
        "--verbose", action="store_true", help="print the seconds spent in each stage (also in report.json)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch/onnxruntime threads (default: NETSHRINK_TORCH_THREADS, else every core torch sees)",
    )


def set_threads(n: int | None) -> int:
    """Use ``n`` threads (torch and numpy's BLAS), else ``NETSHRINK_TORCH_THREADS``, else torch's
    default (the machine's cores)."""
    import os

    import torch

    env = os.environ.get("NETSHRINK_TORCH_THREADS")
    if n is None and env:
        try:
            n = int(env)
        except ValueError as exc:
            raise ValueError(f"NETSHRINK_TORCH_THREADS must be an integer, got {env!r}") from exc
    if n is not None:
        if n < 1:
            raise ValueError(f"the number of threads must be at least 1, got {n}")
        limit_threads(n)
    return int(torch.get_num_threads())


def process_age() -> float | None:
    """Wall seconds since this process started (Linux ``/proc``; None elsewhere): the interpreter's
    start and the imports (torch, onnx, onnxruntime) before the command's own work begins."""
    import os
    import time

    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime (clock ticks after boot)
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def print_timings(err: Console, timings: dict[str, Any]) -> None:
    """The per-stage wall seconds of the run (``--verbose``), as ``report.json`` keeps them."""
    stages = dict(timings.get("stages") or {})
    total = sum(stages.values())
    err.print(f"stage timings (wall seconds, {timings.get('torch_threads')} torch threads):")
    for name, sec in stages.items():
        share = 100 * sec / total if total > 0 else 0.0
        err.print(f"  {name:<24} {sec:8.2f} s  {share:5.1f}%")
    err.print(f"  {'total':<24} {total:8.2f} s")
    for name, o in (timings.get("overlapped") or {}).items():  # worker-thread work, not in the total
        beside = ", ".join(o.get("during") or [])
        line = f"  {name:<24} {o.get('seconds', 0.0):8.2f} s  on a worker thread, beside {beside}"
        err.print(line, soft_wrap=True)


def _progress_bar(err: Console) -> tuple[AbstractContextManager[Any], Callable[[Any], None]]:
    """The progress bar on stderr and the ``on_progress`` callback that moves it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("compressing", total=1.0)

    def on_progress(ev: Any) -> None:
        label = f"{ev.stage} {ev.layer}/{ev.layers_total}" if ev.layers_total else ev.stage
        bar.update(task, completed=ev.fraction, description=label)

    return bar, on_progress


def _import_renderer_early() -> threading.Thread:
    """Import the report renderer (matplotlib's modules: 0.39 s on the 2-core machine) on a thread
    while the core computes. The core's big steps are torch and numpy calls that release the GIL,
    and a core was idle for ~15 % of a 17M-parameter job (user + sys 1.7x the wall time), so the
    import overlaps them; the main thread joins it before rendering and imports the renderer itself
    (a no-op by then, or the same error where the import failed). Nothing of the core is imported
    by it, so the two threads never wait on each other's module locks."""

    def run() -> None:
        try:
            import netshrink.reporting  # noqa: F401
        except Exception:  # the main thread's own import reports it
            pass

    thread = threading.Thread(target=run, name="netshrink-import-renderer", daemon=True)
    thread.start()
    return thread


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def execute(args: argparse.Namespace, spec_dict: dict[str, Any]) -> int:
    """Run the core on ``args.model`` with ``spec_dict``; exit 0/2/3 per docs/api.md."""
    import time

    from netshrink.compression import CompressionError, CompressSpec
    from netshrink.compression.graph.calibration import load_calibration
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.io.memory import release_large_buffers
    from netshrink.compression.pipeline import compress

    # rich (about 0.1 s CPU of imports) only when something is drawn: --quiet without --verbose draws
    # nothing on the console (warnings and the last line are plain prints)
    quiet = bool(args.quiet) and not getattr(args, "verbose", False)
    err = None if quiet else _stderr_console()
    extra: dict[str, float] = {}
    try:
        set_threads(getattr(args, "threads", None))
        release_large_buffers()  # freed float64 temporaries go back to the OS (peak RSS)
        t0 = time.perf_counter()
        # a command run as its own process (not main([...]) inside another program, e.g. a test):
        # the interpreter's start and the imports so far are a stage of their own
        startup = process_age() if getattr(args, "_own_process", False) else None
        if startup is not None:
            extra["startup"] = startup
        spec = CompressSpec.from_dict(spec_dict)
        # the architecture as the pre-check read it: a piped --architecture is read once
        net = load_model(args.model, architecture=json_arg(args, "architecture"))
        cal_path = getattr(args, "calibration", None)
        cal = load_calibration(cal_path, net) if cal_path else None
        with open(args.model, "rb") as fh:  # streamed: the file's bytes are never held whole
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        extra["load"] = time.perf_counter() - t0
        bar, on_progress = (nullcontext(), None) if args.quiet or err is None else _progress_bar(err)
        renderer = None if args.no_html else _import_renderer_early()
        with bar:
            result = compress(net, spec, calibration=cal, on_progress=on_progress, input_sha256=sha)
    except CompressionError as exc:
        nodes = (
            f" (nodes: {', '.join(exc.nodes[:10])})" if exc.nodes and exc.nodes[0] not in exc.detail else ""
        )
        print(f"netshrink {args.command}: error: {exc.title}: {exc.detail}{nodes}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:  # e.g. --threads 0 or a bad NETSHRINK_TORCH_THREADS
        print(f"netshrink {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    t1 = time.perf_counter()
    if not args.no_html:
        if renderer is not None:
            renderer.join()
        from netshrink.reporting import render_html

        html = render_html(result.report).encode()
        extra["report_html"] = time.perf_counter() - t1
        result.add("report.html", html)
    timings = result.report.get("timings")
    if isinstance(timings, dict):  # the CLI's own stages join the pipeline's in report.json
        timings["stages"] = {
            **{k: round(v, 4) for k, v in extra.items() if k in ("startup", "load")},
            **timings.get("stages", {}),
            **({"report_html": round(extra["report_html"], 4)} if "report_html" in extra else {}),
        }
        # wall seconds from the process's start (else from the load) to report.json's writing
        timings["total"] = round(extra.get("startup", 0.0) + time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    out = args.out if args.out is not None else Path(DEFAULT_OUT)
    paths = result.write(out)
    if getattr(args, "verbose", False) and err is not None:
        print_timings(err, {**result.report.get("timings", {})})
        err.print(f"  {'write':<24} {time.perf_counter() - t0:8.2f} s  (after report.json was written)")
    if not args.quiet:
        from netshrink.cli.summary import print_summary

        print_summary(result.report)
    for warning in (result.report.get("summary") or {}).get("warnings") or []:
        print(f"netshrink {args.command}: warning: {warning}", file=sys.stderr)
    where = "" if args.out is not None else " (no --out given)"
    names = ", ".join(p.name for p in paths.values())
    print(f"wrote {names} to {out.resolve()}{where}", file=sys.stderr)
    met = (result.report.get("summary") or {}).get("budget_met")
    return EXIT_BUDGET if met is False else EXIT_OK
