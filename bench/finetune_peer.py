"""The peer of ``bench/finetune_speed.py``, run in its own process: a bare torch training loop.

``nn.Sequential`` 64→1024→1024→10 + ``torch.optim.SGD`` (momentum 0.9, η 0.01, batch 64) trains the
model in DIR/mlp.pt on DIR/train.npz for 2 × 20 epochs (two arms, as the job) and nothing else: no
validation, no noise, no measurement, no export. Only torch and numpy are imported. Prints its loop
seconds as JSON.

    python -m bench.finetune_peer DIR THREADS
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

WIDTHS = (64, 1024, 1024, 10)
EPOCHS, BATCH, ETA, MOMENTUM = 20, 64, 0.01, 0.9


def mlp() -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True)):
        mods += [nn.ReLU()] if i else []
        mods.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*mods)  # the layer names of bench.common.mlp: 0, 2, 4


def main(d: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    data = np.load(d / "train.npz")
    X, y = torch.from_numpy(data["inputs"]), torch.from_numpy(data["labels"])  # (1437, 64), (1437,)
    t0 = time.perf_counter()
    for _arm in range(2):
        model = mlp()
        model.load_state_dict(torch.load(d / "mlp.pt", weights_only=True))
        opt = torch.optim.SGD(model.parameters(), lr=ETA, momentum=MOMENTUM)
        gen = torch.Generator().manual_seed(0)
        for _ in range(EPOCHS):
            for idx in torch.randperm(X.shape[0], generator=gen).split(BATCH):  # (≤ 64,)
                opt.zero_grad()
                nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()  # logits (≤ 64, 10)
                opt.step()
    print(json.dumps({"loop_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "dir", type=Path, metavar="DIR", help="holds mlp.pt and train.npz (bench.finetune_speed writes them)"
    )
    ap.add_argument("threads", type=int, metavar="THREADS", help="torch threads (torch.set_num_threads)")
    args = ap.parse_args()
    main(args.dir, args.threads)
