"""Where a submit's time goes (issue 13 §8): py-spy samples a real ``netshrink serve`` submit instance
(no worker, keys mode, ``bench.load``'s small ONNX model and spec) while wrk keeps 20 submits in
flight, then prints the share of samples per function, inclusive (the function and what it calls)
and by line (where the samples stopped).

    python -m bench.profile_submit [--mode embedded|redis] [--seconds 15] [--gil] [--rate 400]
                                   [--top 60] [--match TEXT] [--raw FILE]

``--gil`` samples only the thread holding the GIL (py-spy ``--gil``): the shares are then of the
Python work that serializes the process; the header says how much of the time the GIL was held
(samples / (rate × seconds)). Without it every thread that is not idle is sampled, waits for the
GIL included. Redis mode runs one API process (``serve`` without ``--workers``) and no worker.
py-spy is not a dependency (``pip install py-spy`` into any environment, then ``--py-spy PATH``, or
have it on PATH); wrk as for ``bench.load``. It needs to ptrace the server (root, or
``kernel.yama.ptrace_scope=0``). Prints; writes nothing unless ``--raw``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.load import _model, multipart, wrk
from bench.load_servers import start_netshrink

_FRAME = re.compile(r"(.*) \((.*?):(\d+)\)$")


def _short(path: str) -> str:
    return path.split("site-packages/")[-1].split(f"{Path(__file__).resolve().parents[1]}/")[-1]


def shares(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's raw (collapsed) output -> (samples, inclusive samples per function, samples per
    innermost line). A function counts once per stack however often it recurs."""
    total, inclusive, lines = 0, Counter[str](), Counter[str]()
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        seen = set()
        frames = stack.split(";")
        for frame in frames:
            m = _FRAME.match(frame)
            if m:
                key = f"{m.group(1)} ({_short(m.group(2))})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += n
        m = _FRAME.match(frames[-1])
        if m:
            lines[f"{m.group(1)} ({_short(m.group(2))}:{m.group(3)})"] += n
    return total, inclusive, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--match", default="", help="list only the functions whose row contains this")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw output here")
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        service = start_netshrink("profiled", args.mode, Path(tmp) / "data", worker=False)
        try:
            body, ctype = multipart(_model())
            body_path = Path(tmp) / "submit.body"
            body_path.write_bytes(body)
            wrk(service.base + "/v1/jobs", 2, 2, service.key, body_path, ctype)  # warm-up, not sampled
            out = Path(tmp) / "py-spy.txt"
            argv = [args.py_spy, "record", "-r", str(args.rate), "-d", str(args.seconds), "-f", "raw"]
            argv += ["-o", str(out), "-p", str(service.api.pid), "--threads", "--nonblocking"]
            spy = subprocess.Popen(argv + (["--gil"] if args.gil else []), stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            load = wrk(service.base + "/v1/jobs", 20, args.seconds - 1, service.key, body_path, ctype)
            if spy.wait(timeout=args.seconds + 60) != 0:
                sys.exit("py-spy failed (is it installed, and may it ptrace the server?)")
            raw = out.read_text()
        finally:
            service.stop()
    if args.raw:
        args.raw.write_text(raw)
    total, inclusive, lines = shares(raw)
    p50, p99 = load["p50_us"] / 1000, load["p99_us"] / 1000
    print(
        f"{args.mode} submits: {load['requests']} in {args.seconds - 1} s of wrk, p50 {p50:.1f} "
        f"ms, p99 {p99:.1f} ms; {total} samples at {args.rate}/s over {args.seconds} s"
        + (
            f" (the GIL held {100 * total / (args.rate * args.seconds):.0f} % of the time)"
            if args.gil
            else ""
        )
    )
    print("\n| inclusive % | function |\n|---|---|")
    for key, n in [(k, n) for k, n in inclusive.most_common() if args.match in k][: args.top]:
        print(f"| {100 * n / total:.1f} | {key} |")
    print("\n| % | innermost line |\n|---|---|")
    for key, n in lines.most_common(args.top // 2):
        print(f"| {100 * n / total:.1f} | {key} |")


if __name__ == "__main__":
    main()
