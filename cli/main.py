"""``netshrink``: compress/analyze locally, serve/worker the service, submit to a server, manage keys.

Exit codes (docs/api.md): 0 ok, 2 bad input, 3 budget not met, 4 job failed, 5 server unreachable.
Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports its
heavy dependencies inside ``run`` so that ``netshrink --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

SUBCOMMANDS = {
    "compress": (
        "netshrink.cli.compress_cmd",
        "compress a model locally (no server) and write the artifacts + report",
    ),
    "analyze": (
        "netshrink.cli.analyze_cmd",
        "heavy-tail diagnostics and per-layer advice, without compressing",
    ),
    "finetune": (
        "netshrink.cli.finetune_cmd",
        "fine-tune with heavy-tailed noise (plain vs noise arm) to make a model more prunable",
    ),
    "submit": (
        "netshrink.cli.submit_cmd",
        "upload a model to a netshrink server, wait, download (the CI step)",
    ),
    "serve": ("netshrink.cli.serve_cmd", "run the HTTP API (embedded single-machine mode without Redis)"),
    "worker": ("netshrink.cli.worker_cmd", "run a Celery worker (needs NETSHRINK_REDIS_URL)"),
    "keys": ("netshrink.cli.keys_cmd", "create and list API keys"),
}


def build_parser(only: str | None = None, *, load_all: bool = True) -> argparse.ArgumentParser:
    """The full parser; with ``only`` (or ``load_all=False``) other subcommands' modules are not imported."""
    parser = argparse.ArgumentParser(prog="netshrink", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version="netshrink 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if (only is not None and name != only) or (only is None and not load_all):
            continue
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    own_process = argv is None  # the ``netshrink`` entry point, not main([...]) inside another program
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None, load_all=False)
    args = parser.parse_args(argv)
    args._own_process = own_process  # local_run times the process's startup as a stage
    from netshrink.cli.preflight import InputFileError, check_inputs, remove_spools

    try:
        check_inputs(args)  # local files first: no network call, no model load before this passes
        code = int(args._run(args))
    except InputFileError as exc:
        return _fail(args.command, str(exc), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if os.environ.get("NETSHRINK_DEBUG"):
            raise
        return _unexpected(args.command, exc)
    finally:
        remove_spools()  # the copies of piped inputs
    if own_process and args.command in ONE_SHOT:
        _exit_now(code)  # pragma: no cover (a subprocess test runs it)
    return code


# One-shot local commands: once they return, every output file is written and closed.
ONE_SHOT = frozenset({"compress", "analyze"})


def _exit_now(code: int) -> NoReturn:  # pragma: no cover (a subprocess test runs it)
    """End the process without the interpreter's teardown: unloading torch alone costs about 0.3 s
    of CPU (more on a loaded machine), a share of a 17M-parameter job (issue 10). Logging and the
    standard streams are flushed first; the artifacts and report.json were written and closed."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNREACHABLE = 2, 4, 5


def _unreachable(exc: Exception) -> bool:
    """The Redis job store did not answer (found by probing, 2026-12-05)."""
    import redis

    from netshrink.workers.jobs import StoreUnavailableError

    return isinstance(exc, StoreUnavailableError | redis.ConnectionError | redis.TimeoutError)


def _fail(command: str, message: str, code: int) -> int:
    print(f"netshrink {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _unexpected(command: str, exc: Exception) -> int:
    """A refusal the core raised (bad input, 2), an unreadable file (2), or a bug (4, say so)."""
    from netshrink.compression.errors import CompressionError

    if isinstance(exc, CompressionError):
        return _fail(command, f"{exc.title}: {exc.detail}", EXIT_BAD_INPUT)
    if _unreachable(exc):  # e.g. `keys create` with Redis down (it was "internal error", exit 4)
        first = (str(exc).splitlines() or [""])[0][:200]
        return _fail(
            command, f"the job store is unreachable ({first}); check NETSHRINK_REDIS_URL", EXIT_UNREACHABLE
        )
    if isinstance(exc, OSError):
        return _fail(command, str(exc), EXIT_BAD_INPUT)
    first = (str(exc).splitlines() or [""])[0][:200]
    return _fail(
        command,
        f"internal error ({type(exc).__name__}: {first}); set NETSHRINK_DEBUG=1 for the traceback",
        EXIT_FAILED,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
