"""The UTF-8 check of an ONNX upload (issue 13 §8): the proto3 parse that ``POST /v1/jobs`` runs now
(``strings_are_utf8``, column "check") against the Python field walk it ran before (``find_non_utf8``
on the parsed model, column "walk"), in the same run, interleaved, on the test MLP, the test CNN and
a 1M-parameter MLP. Both sides also parse the model with ``onnx.ModelProto`` (timed alone, column
"proto2 parse"): before = proto2 parse + walk, now = proto2 parse + check. The check copies the
weights, so on a large model it costs more than the walk, which reads only the text fields of a
large tensor: the service checks files over ``CHECK_BY_PARSE_BYTES`` (1 MiB) by the walk alone, and
"now" is what the check would cost on them.

    python -m bench.onnx_utf8 [--reps 7]

µs per call: the median of ``--reps`` rounds, each timing a batch of calls (more calls for the
smaller models). Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netshrink.compression.io.onnx_utf8 import find_non_utf8, strings_are_utf8  # noqa: E402
from tests import factories as F  # noqa: E402


def _us(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    models = {
        "test MLP 8-16-16-4": F.mlp_onnx(),
        "test CNN": F.cnn_onnx(),
        "MLP 512-1024-512-10": F.mlp_onnx((512, 1024, 512, 10)),
    }
    print("| model | bytes | check µs | walk µs | proto2 parse µs | before µs | now µs | now/before |")
    print("|---|---|---|---|---|---|---|---|")
    for label, data in models.items():
        calls = max(3, 200_000 // max(1, len(data) // 64))
        parsed = onnx.load_model_from_string(data)
        assert strings_are_utf8(data) and find_non_utf8(parsed) is None

        def check(data: bytes = data) -> bool:
            return strings_are_utf8(data)

        def walk(parsed: onnx.ModelProto = parsed) -> object:
            return find_non_utf8(parsed)

        def parse(data: bytes = data) -> object:
            return onnx.ModelProto().ParseFromString(data)

        rounds: dict[str, list[float]] = {"check": [], "walk": [], "parse": []}
        for _ in range(args.reps):  # interleaved: the machine's other load falls on all three alike
            rounds["check"].append(_us(check, calls))
            rounds["walk"].append(_us(walk, calls))
            rounds["parse"].append(_us(parse, calls))
        med = {k: statistics.median(v) for k, v in rounds.items()}
        before, now = med["parse"] + med["walk"], med["parse"] + med["check"]
        print(
            f"| {label} | {len(data):,} | {med['check']:.1f} | {med['walk']:.1f} | {med['parse']:.1f} | "
            f"{before:.1f} | {now:.1f} | {now / before:.2f} |"
        )


if __name__ == "__main__":
    main()
