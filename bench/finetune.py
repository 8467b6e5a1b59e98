"""Heavy-tailed-noise fine-tuning [P3] on digits: is the noise arm more prunable than the plain arm?

For each model (digits MLPs 64→256→256→10 and 64→1024→1024→10, the digits CNN conv16-pool-conv32-fc)
and each seed in {0, 1, 2}: pretrain with Adam (seeded), save as a state dict, then run the real
``finetune`` job (``netshrink.compression.finetune``, the defaults of docs/method.md §4: α = 1.75,
σ = 0.003, η = 0.01, 20 epochs, SGD momentum 0.9, batch 64) on the 1,437 training digits, validated on
the 360 held-out digits. Reported: validation accuracy and the largest neuron/channel prune fraction
keeping accuracy within 1 point, for the original, plain-fine-tuned and noise-fine-tuned models.

``--sweep``: the σ sweep on the 256-wide MLP (P3 picks the largest σ within the accuracy tolerance).
The speed of the 1M-parameter job (issue 15's < 60 s target) is ``bench/finetune_speed.py``.

    python -m bench.finetune [--sweep] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import DigitsCNN, digits_split, machine, md_table, mlp, mlp_architecture, train
from netshrink.compression.finetune.job import finetune
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.graph.loading import load_model

RESULTS = Path(__file__).parent / "results"
N_TEST = 360  # 1797 - 360 = 1437 training digits (the size)
PRETRAIN_EPOCHS = 30


def _models() -> dict[str, tuple[Callable[[], nn.Module], bool]]:
    return {
        "mlp 64-256-256-10": (lambda: mlp((64, 256, 256, 10)), False),
        "mlp 64-1024-1024-10": (lambda: mlp((64, 1024, 1024, 10)), False),
        "cnn conv16-pool-conv32-fc": (lambda: DigitsCNN(), True),
    }


def _arch(model: nn.Module) -> dict[str, Any]:
    return model.architecture() if isinstance(model, DigitsCNN) else mlp_architecture(model, 64)  # type: ignore[arg-type]


def prepare(name: str, seed: int, tmp: Path) -> tuple[Path, dict[str, Any], Path, Path]:
    """Pretrain ``name`` with ``seed``; write the state dict and the train/validation files."""
    ctor, image = _models()[name]
    split = digits_split(image=image, n_cal=0, n_test=N_TEST, seed=0)
    torch.manual_seed(seed)
    model = ctor()
    train(model, split.train_X, split.train_y, epochs=PRETRAIN_EPOCHS, seed=seed)
    path = tmp / f"{name.replace(' ', '_')}_{seed}.pt"
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    np.savez(tmp / "train.npz", inputs=split.train_X, labels=split.train_y)
    np.savez(tmp / "val.npz", inputs=split.test_X, labels=split.test_y)
    return path, _arch(model), tmp / "train.npz", tmp / "val.npz"


def run_one(name: str, seed: int, spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ft-") as d:
        path, arch, tr, val = prepare(name, seed, Path(d))
        net = load_model(path, architecture=arch)
        t0 = time.perf_counter()
        res = finetune(net, FinetuneSpec.from_dict({**spec, "seed": seed}), tr, upload=path, validation=val)
        wall = time.perf_counter() - t0
    ft = res.report["finetune"]
    models = {"original": ft["original"], **ft["arms"]}
    row: dict[str, Any] = {"model": name, "seed": seed, "params": net.n_params, "job_s": wall}
    for k, m in models.items():
        row[f"{k}_acc"] = m["accuracy"]
        row[f"{k}_prunable"] = m["prune"]["prunable_fraction"]
    row["sweep"] = ft["sweep"]
    row["sigma"] = ft["noise"]["sigma"]
    return row


def _stats(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.3f} [{a.min():.3f}, {a.max():.3f}]"


def trend_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        wins = sum(r["noise_prunable"] > r["plain_prunable"] for r in rs)
        ties = sum(r["noise_prunable"] == r["plain_prunable"] for r in rs)
        out.append(
            [
                name,
                rs[0]["params"],
                _stats([r["original_prunable"] for r in rs]),
                _stats([r["plain_prunable"] for r in rs]),
                _stats([r["noise_prunable"] for r in rs]),
                f"{wins} / {ties} / {len(rs) - wins - ties}",
                _stats([r["plain_acc"] for r in rs]),
                _stats([r["noise_acc"] for r in rs]),
            ]
        )
    head = [
        "model",
        "params",
        "prunable: original",
        "prunable: plain",
        "prunable: noise",
        "noise vs plain (wins/ties/losses)",
        "acc. plain %",
        "acc. noise %",
    ]
    return md_table(head, out)


def seed_table(rows: list[dict[str, Any]]) -> str:
    head = ["model", "seed", "acc. orig / plain / noise %", "prunable orig / plain / noise", "job s"]
    body = [
        [
            r["model"],
            r["seed"],
            f"{r['original_acc']:.2f} / {r['plain_acc']:.2f} / {r['noise_acc']:.2f}",
            f"{r['original_prunable']:.3f} / {r['plain_prunable']:.3f} / {r['noise_prunable']:.3f}",
            r["job_s"],
        ]
        for r in rows
    ]
    return md_table(head, body)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    sigmas = sorted({s["sigma"] for r in rows for s in r["sweep"]})
    body = []
    for sigma in sigmas:
        cells = [s for r in rows for s in r["sweep"] if s["sigma"] == sigma]
        ok = [c for c in cells if not c["diverged"]]
        body.append(
            [
                sigma,
                _stats([c["accuracy"] for c in ok]) if ok else "diverged",
                _stats([c["prunable_fraction"] for c in ok]) if ok else "–",
                len(cells) - len(ok),
            ]
        )
    plain = [r["plain_prunable"] for r in rows]
    body.append(
        ["plain arm (σ = 0, no noise step)", _stats([r["plain_acc"] for r in rows]), _stats(plain), 0]
    )
    picked = ", ".join(f"seed {r['seed']}: σ = {r['sigma']:g}" for r in rows)
    return (
        md_table(["σ", "accuracy %", "prunable fraction", "diverged seeds"], body)
        + f"\nKept by P3's rule: {picked}\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sweep", action="store_true", help="σ sweep on the 256-wide MLP")
    ap.add_argument("--only", choices=list(_models()), help="one model instead of all three")
    args = ap.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"machine": machine(), "seeds": args.seeds}
    md = []
    if args.sweep:
        sigmas = [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
        rows = [run_one("mlp 64-256-256-10", s, {"sigma": sigmas}) for s in args.seeds]
        out["sweep"] = rows
        md.append("### σ sweep, mlp 64-256-256-10, 20 epochs (`python -m bench.finetune --sweep`)\n\n")
        md.append(sweep_table(rows))
    if not args.sweep or args.only:
        names = [args.only] if args.only else list(_models())
        rows = [run_one(n, s, {}) for n in names for s in args.seeds]
        out["trend"] = [{k: v for k, v in r.items() if k != "sweep"} for r in rows]
        md.append("### Prunable fraction at ≤ 1 pt accuracy drop, defaults (`python -m bench.finetune`)\n\n")
        md.append(trend_table(rows) + "\nPer seed:\n\n" + seed_table(rows))
    stem = RESULTS / ("finetune" + ("_sweep" if args.sweep else ""))
    stem.with_suffix(".md").write_text("".join(md), encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print("".join(md))
    print(f"wrote {stem}.{{md,json}} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
