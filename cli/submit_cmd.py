"""``netshrink submit MODEL --server URL [spec flags] --wait --out DIR``: the remote CI step.

Uploads the model, follows the job with a progress bar, downloads the artifacts and prints the
summary. Exit codes (docs/api.md "CLI exit codes"): 0 ok, 2 bad input (flags or a 4xx problem),
3 budget not met (``report.summary.budget_met is false``; for ``--kind finetune``, the follow-up
compress's ``report.compress.summary.budget_met``), 4 job failed/cancelled/timed out or a corrupt
download, 5 server unreachable (no answer, or 5xx after the retries). Exit 3 comes after the download.
Heavy imports (httpx, rich) happen inside ``run`` so ``netshrink --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netshrink.cli.preflight import InputFileError, json_arg
from netshrink.cli.spec_flags import SpecFlagError, add_input_arguments, add_spec_arguments, spec_from_args

if TYPE_CHECKING:
    from rich.console import Console

    from netshrink.client import Job, NetshrinkClient

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_FAILED, EXIT_UNREACHABLE = 0, 2, 3, 4, 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX model or PyTorch state dict (.pt/.pth/.safetensors)")
    conn = parser.add_argument_group("server")
    conn.add_argument("--server", metavar="URL", help="server base URL (default: $NETSHRINK_SERVER)")
    conn.add_argument("--api-key", metavar="KEY", help="API key (default: $NETSHRINK_API_KEY)")
    conn.add_argument("--max-retries", type=int, default=5, metavar="N", help="retries on 429/503/no answer")
    conn.add_argument("--idempotency-key", metavar="KEY", help="makes re-running the same step safe")
    add_input_arguments(parser)
    parser.add_argument(
        "--train", type=Path, metavar="NPZ", help="--kind finetune: 'inputs' + integer 'labels'"
    )
    parser.add_argument(
        "--validation", type=Path, metavar="NPZ", help="--kind finetune: optional validation set"
    )
    add_spec_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--wait", action="store_true", help="follow the job to the end (implied by --out)")
    out.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="give up waiting after S s")
    out.add_argument("--out", type=Path, metavar="DIR", help="download every artifact into DIR")
    out.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from netshrink.client import (
        ApiError,
        DigestMismatchError,
        NetshrinkClient,
        RetryPolicy,
        ServerUnreachableError,
        WaitTimeoutError,
    )

    err = Console(stderr=True)
    try:
        spec = spec_from_args(args)
        architecture = json_arg(args, "architecture")  # as the pre-check read it: a pipe is read once
    except (SpecFlagError, InputFileError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_BAD_INPUT
    if not isinstance(architecture, dict):  # not an object: the file goes up as is, the server says why
        architecture = args.architecture
    if not args.model.is_file():
        err.print(f"[red]error:[/] {args.model}: no such file")
        return EXIT_BAD_INPUT
    retry = RetryPolicy(max_retries=max(0, args.max_retries))
    with NetshrinkClient(args.server, args.api_key, retry=retry) as ns:
        try:
            return _submit_and_follow(ns, args, spec, architecture, err)
        except ServerUnreachableError as exc:
            err.print(f"[red]server unreachable:[/] {escape(str(exc))}")
            return EXIT_UNREACHABLE
        except ApiError as exc:
            _print_problem(err, exc.problem)
            return EXIT_BAD_INPUT if 400 <= exc.status < 500 else EXIT_UNREACHABLE
        except WaitTimeoutError as exc:
            err.print(f"[red]timed out:[/] {escape(str(exc))} (the job keeps running on the server)")
            return EXIT_FAILED
        except DigestMismatchError as exc:
            err.print(f"[red]corrupt download:[/] {escape(str(exc))}")
            return EXIT_FAILED


def _submit_and_follow(
    ns: NetshrinkClient,
    args: argparse.Namespace,
    spec: dict[str, Any],
    architecture: dict[str, Any] | Path | None,
    err: Console,
) -> int:
    """``architecture``: parsed (sent as the JSON text field, so a piped file is not read twice)."""
    job = ns.submit(
        args.model,
        spec,
        architecture=architecture,
        calibration=args.calibration,
        idempotency_key=args.idempotency_key,
        train=args.train,
        validation=args.validation,
    )
    err.print(f"submitted [bold]{job.id}[/] ({job.kind}, seed {job.spec.get('seed')}) to {ns.base_url}")
    if not (args.wait or args.out):
        print(job.id)
        return EXIT_OK
    job = _follow(ns, job, args.timeout, err)
    if job.status != "succeeded":
        err.print(f"[red]job {job.id} {job.status}[/]")
        if job.error:
            _print_problem(err, job.error)
        return EXIT_FAILED
    report = ns.report(job.id)
    paths = ns.download(job.id, args.out) if args.out else {}
    if job.kind == "finetune":
        return _finetune_done(job, report, paths, args.json, err)
    summary = report.get("summary") or {}
    if args.json:
        body = {"job": job.id, "status": job.status, "summary": summary, "artifacts": _str_paths(paths)}
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        _print_summary(job, summary, paths)
    if summary.get("budget_met") is False:
        err.print("[yellow]the error budget was not met[/]")
        return EXIT_BUDGET
    return EXIT_OK


def _finetune_done(
    job: Job, report: dict[str, Any], paths: dict[str, Path], as_json: bool, err: Console
) -> int:
    """The summary of a finetune job; exit 3 when its follow-up compress missed the error budget."""
    from netshrink.cli.finetune_cmd import (
        BUDGET_NOT_MET,
        finetune_summary,
        follow_up_budget_met,
        print_summary,
    )

    if as_json:
        body = {"job": job.id, "status": job.status, "summary": finetune_summary(report)}
        print(json.dumps({**body, "artifacts": _str_paths(paths)}, indent=2, sort_keys=True))
    else:
        print_summary(report)
    if follow_up_budget_met(report) is False:
        err.print(f"[yellow]{BUDGET_NOT_MET}[/]")
        return EXIT_BUDGET
    return EXIT_OK


def _follow(ns: NetshrinkClient, job: Job, timeout_s: float, err: Console) -> Job:
    """Wait for the job with a rich progress bar fed by ``job.progress`` (stage, layer i/n, fraction)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(job.status, total=1.0)

        def update(j: Job) -> None:
            p = j.progress
            layer = f" layer {p.layer}/{p.layers_total}" if p.layers_total else ""
            bar.update(task, completed=p.fraction, description=f"{j.status}: {p.stage or j.status}{layer}")

        return ns.wait(job.id, timeout_s=timeout_s, on_progress=update)


def _print_summary(job: Job, summary: dict[str, Any], paths: dict[str, Path]) -> None:
    """bytes before/after, ratio, relative error, tier-E bound, bound holds, budget met; then the files."""
    from rich.console import Console
    from rich.table import Table

    nbytes = summary.get("bytes") or {}
    error = summary.get("error") or {}
    bound_e = (summary.get("bounds") or {}).get("E") or {}
    holds = (summary.get("bound_holds") or {}).get("holds", bound_e.get("holds"))
    table = Table(title=f"netshrink job {job.id} ({job.kind}, {job.status})", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("bytes before", _fmt((nbytes.get("before") or {}).get("total"))),
        ("bytes after", _fmt((nbytes.get("after") or {}).get("total"))),
        ("compression ratio", _fmt(nbytes.get("ratio"), "{:.2f}x")),
        ("relative error (rel_l2)", _fmt(error.get("relative_l2"), "{:.4g}")),
        ("bound, tier E, on the mean over draws (relative)", _fmt(bound_e.get("relative"), "{:.4g}")),
        ("this draw / mean bound (squared error)", _fmt(bound_e.get("measured_over_bound"), "{:.2f}x")),
        ("this draw within the (1-delta) bound B/delta", _fmt(holds)),
        ("budget met", _fmt(summary.get("budget_met"), none="no target")),
    ]
    bound_w = (summary.get("bounds") or {}).get("W") or {}
    if bound_e.get("value") is None and bound_w.get("value") is not None:  # compensated: tier W only
        rows[4:7] = [
            ("bound, tier W, every draw (relative)", _fmt(bound_w.get("relative"), "{:.4g}")),
            ("this draw / tier-W bound (squared error)", _fmt(bound_w.get("measured_over_bound"), "{:.2g}x")),
            ("this draw within the tier-W bound", _fmt(holds)),
        ]
    for name, value in rows:
        table.add_row(name, value)
    for name, path in paths.items():
        table.add_row(f"artifact {name}", str(path))
    Console(file=sys.stdout, width=110).print(table)


def _fmt(value: Any, pattern: str = "{:,}", none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return pattern.format(value)


def _print_problem(err: Console, problem: dict[str, Any]) -> None:
    err.print(
        f"[red]{problem.get('status', '')} {problem.get('title', 'error')}[/]: {problem.get('detail', '')}"
    )
    for item in problem.get("errors") or []:
        where = item.get("pointer") or item.get("field") or ""
        err.print(f"  {where}: {item.get('detail', '')}")


def _str_paths(paths: dict[str, Path]) -> dict[str, str]:
    return {name: str(path) for name, path in paths.items()}
