"""CPU seconds per pipeline stage of one ``netshrink compress`` run, in-process (issue 10, time).

    python -m bench.stage_cpu OUT.json [--profile OUT.prof] -- compress MODEL --calibration CAL ...

Wall seconds on a shared machine move with the other jobs; the process's CPU seconds (user + sys of
every thread, ``time.process_time``) move much less, and with ``--threads 1`` no thread waits on
another. ``StageTimer`` (compression/pipeline.py) is wrapped so that each stage adds its CPU seconds
next to its wall seconds, ``render_html`` is timed the same way, and the peak RSS (``ru_maxrss``)
is recorded at the end of each stage. ``startup_imports`` is the CPU before the command runs (the
interpreter and the CLI's imports), ``other`` the rest (load, write). ``--profile`` adds a cProfile
of the command in CPU seconds. Prints and writes {stage: seconds}.
"""

from __future__ import annotations

import time

T_START = time.process_time()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import netshrink.compression.pipeline as pipeline  # noqa: E402
import netshrink.reporting as reporting  # noqa: E402
from netshrink.cli.main import main as cli_main  # noqa: E402

cpu: dict[str, float] = {}
peak_mib: dict[str, int] = {}
_stage = pipeline.StageTimer.__call__
_render = reporting.render_html


@contextmanager
def _timed(self: pipeline.StageTimer, stage: str) -> Iterator[None]:
    c0 = time.process_time()
    try:
        with _stage(self, stage):
            yield
    finally:
        cpu[stage] = cpu.get(stage, 0.0) + time.process_time() - c0
        peak_mib[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _render_timed(report: dict[str, Any]) -> str:
    c0 = time.process_time()
    out = _render(report)
    cpu["report_html"] = time.process_time() - c0
    return out


def parse_args(argv: list[str]) -> tuple[str, str | None, list[str]]:
    """(OUT, the --profile path or None, netshrink's command line) as before argparse: OUT first, then
    ``--profile P`` only right after it; all that follows (less one leading ``--``) is netshrink's."""
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [-h] OUT.json [--profile OUT.prof] -- compress MODEL --calibration CAL ...",
        epilog="Everything after OUT.json (and --profile OUT.prof) is netshrink's command line, run here.",
    )
    ap.add_argument("out", metavar="OUT.json", help="where {cpu_seconds, peak_mib_after} is written")
    ap.add_argument("--profile", metavar="OUT.prof", help="also a cProfile of the command, in CPU seconds")
    n = 3 if argv[1:2] == ["--profile"] else 1
    args, rest = ap.parse_args(argv[:n]), argv[n:]
    return args.out, args.profile, rest[1:] if rest[:1] == ["--"] else rest


def main() -> None:
    out, prof_path, args = parse_args(sys.argv[1:])
    pipeline.StageTimer.__call__ = _timed  # type: ignore[method-assign]
    reporting.render_html = _render_timed
    cpu["startup_imports"] = time.process_time() - T_START
    c_main = time.process_time()
    prof = cProfile.Profile(time.process_time) if prof_path else None
    if prof is not None:
        prof.enable()
    cli_main(args)
    if prof is not None:
        prof.disable()
        prof.dump_stats(prof_path)
    staged = sum(v for k, v in cpu.items() if k != "startup_imports")
    cpu["other(load,write,...)"] = time.process_time() - c_main - staged
    cpu["total"] = time.process_time()
    result = {k: round(v, 2) for k, v in cpu.items()}
    with open(out, "w") as fh:
        json.dump({"cpu_seconds": result, "peak_mib_after": peak_mib}, fh, indent=1)
    print(json.dumps(result))
    print("peak RSS MiB at the end of each stage:", peak_mib)


if __name__ == "__main__":
    main()
