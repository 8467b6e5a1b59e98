"""CPU seconds of the budget search against one compress, on bench.budget's models (issue 11, cost).

    python -m bench.search_cpu [--reps 5] [--models cnn,mlp]

Wall seconds on the shared machine move with the other jobs; the process's CPU seconds
(``time.process_time``, one torch thread) move much less. The models are trained as
``python -m bench.budget`` trains them (same seeds, epochs and splits). Per model: one untimed
``--bits 4`` compress (warm-up), then ``--reps`` rounds of the four settings in turn: ``--target-top1
0.99`` (compensated, the default), ``--bits 4`` (the single compress it is costed against), and both
with ``--no-compensate``. Prints each setting's CPU seconds, the ratios of the medians and of the
minima, the model.onnx sha256 of each setting (same seed and inputs: the same bytes in every round)
and the load average. Writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import Any

import torch

from bench.budget import SEED, TARGET, BNDigitsCNN
from bench.common import Split, digits_split, mlp, mlp_architecture, to_network, train
from netshrink.cli.threads import limit_threads
from netshrink.compression.graph.calibration import Calibration
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec

TOP1 = {"target": {"metric": "top1_agreement", "min": TARGET}}
SETTINGS: dict[str, dict[str, Any]] = {
    "search": TOP1,
    "single": {"quantize": {"bits": 4}},
    "search_plain": {**TOP1, "compensate": False},
    "single_plain": {"quantize": {"bits": 4}, "compensate": False},
}


def model(name: str) -> tuple[Network, Split]:
    """bench.budget's model ``name`` ("cnn": the BN-folded digits CNN, "mlp": 64→256→256→10), trained."""
    torch.manual_seed(SEED)
    if name == "cnn":
        cnn, split = BNDigitsCNN(), digits_split(image=True)
        train(cnn, split.train_X, split.train_y, epochs=30, seed=SEED)
        return to_network(cnn, cnn.architecture()), split
    m, split = mlp((64, 256, 256, 10)), digits_split()
    train(m, split.train_X, split.train_y, epochs=40, seed=SEED)
    return to_network(m, mlp_architecture(m, 64)), split


def cpu_seconds(net: Network, split: Split, reps: int) -> dict[str, Any]:
    cal = Calibration(split.cal_X, split.cal_y, sha256="bench")
    run = lambda s: compress(net, CompressSpec.from_dict({**s, "seed": SEED}), calibration=cal)  # noqa: E731
    run(SETTINGS["single"])  # warm-up: first-call costs, as bench.budget's
    cpu: dict[str, list[float]] = {k: [] for k in SETTINGS}
    onnx: dict[str, set[str]] = {k: set() for k in SETTINGS}
    for _ in range(reps):
        for k, s in SETTINGS.items():
            c0 = time.process_time()
            res = run(s)
            cpu[k].append(time.process_time() - c0)
            onnx[k].add(hashlib.sha256(res.artifacts["model.onnx"]).hexdigest()[:16])
    med = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
    low = {k: min(v) for k, v in cpu.items()}
    return {
        "cpu_seconds": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "ratio_of_medians": {p: round(med[f"search{p}"] / med[f"single{p}"], 2) for p in ("", "_plain")},
        "ratio_of_minima": {p: round(low[f"search{p}"] / low[f"single{p}"], 2) for p in ("", "_plain")},
        "model_onnx_sha256": {k: sorted(v) for k, v in onnx.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", default="cnn,mlp")
    args = ap.parse_args()
    limit_threads(1)  # torch and numpy's BLAS, as a one-thread worker (cli/threads.py)
    for name in args.models.split(","):
        net, split = model(name)
        load0 = os.getloadavg()
        out = cpu_seconds(net, split, args.reps)
        print(json.dumps({"model": name, **out, "loadavg_start_end": [load0, os.getloadavg()]}))


if __name__ == "__main__":
    main()
