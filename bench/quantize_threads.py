"""The rounding's sub-block workers (issue 10): ``quantize_matrix`` on one 4096×4096 float32 matrix
with one torch thread and with ``--threads`` (default 2), interleaved, weight only and with Var(t)
and codes; the same bytes each time (checked), so only the time moves.

    python -m bench.quantize_threads [--threads 2] [--reps 4]

Prints each call's wall and CPU seconds and the medians; writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import time

import numpy as np
import torch

from netshrink.compression.algorithm.quantize import quantize_matrix
from netshrink.compression.algorithm.rng import generator
from netshrink.compression.io.memory import release_large_buffers
from netshrink.compression.spec import QuantizeSpec


def one(W: torch.Tensor, col: np.ndarray, weight_only: bool) -> tuple[float, float, str]:
    """(wall s, CPU s, sha256 of Ŵ) of one call."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    q = quantize_matrix(W, col[None], col, QuantizeSpec(bits=4), generator(0, 0, 0), weight_only=weight_only)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return wall, cpu, hashlib.sha256(q.weight.numpy().tobytes()).hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    release_large_buffers()  # as the CLI and the worker run
    W = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))  # (4096, 4096) float32
    col = np.ones(4096)
    for weight_only in (True, False):
        walls: dict[int, list[float]] = {1: [], args.threads: []}
        digests = set()
        for _ in range(args.reps):
            for n in walls:
                torch.set_num_threads(n)
                wall, cpu, digest = one(W, col, weight_only)
                walls[n].append(wall)
                digests.add(digest)
                print(
                    f"weight_only={weight_only} threads={n}: {wall:.3f} s wall, {cpu:.3f} s CPU, Ŵ {digest}"
                )
        assert len(digests) == 1, f"the thread count changed the bytes: {digests}"
        m1, mn = statistics.median(walls[1]), statistics.median(walls[args.threads])
        ratio = f"{m1 / mn:.2f}x"
        print(
            f"weight_only={weight_only}: median {m1:.3f} s (1 thread) vs {mn:.3f} s ({args.threads}): {ratio}"
        )


if __name__ == "__main__":
    main()
