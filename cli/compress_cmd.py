"""``netshrink compress MODEL [spec flags] --out DIR``: the CI step without a server."""

from __future__ import annotations

import argparse
import sys

from netshrink.cli.local_run import EXIT_BAD_INPUT, add_common, execute
from netshrink.cli.spec_flags import SpecFlagError, add_input_arguments, add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    add_input_arguments(parser)
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        spec = spec_from_args(args)
    except SpecFlagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return execute(args, spec)
