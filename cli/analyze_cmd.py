"""``netshrink analyze MODEL``: how compressible is my model, before any compression is spent."""

from __future__ import annotations

import argparse
from pathlib import Path

from netshrink.cli.local_run import add_common, execute


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--architecture", type=Path, metavar="JSON", help="layer order of a state dict")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    return execute(args, {"kind": "analyze", "seed": args.seed})
