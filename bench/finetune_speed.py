"""Speed of a ``finetune`` job on a 1M-parameter MLP, against a bare torch loop measured in the same run.

Issue 15's target: a finetune job on a 1M-parameter MLP with 1,437 training samples runs 20 epochs in
under 60 s on 2 CPU cores. The model is the digits MLP 64→1024→1024→10 (1,126,410 parameters),
pretrained briefly with Adam (seeded) and saved as a state dict; the data are sklearn's digits, 1,437
training and 360 validation samples (the split of ``bench/finetune.py``).

- **job**: ``netshrink finetune MODEL --train … --validation … --seed 0 --threads N --verbose`` in a
  fresh process: the real local job path with the spec defaults (α = 1.75, σ = 0.003, η = 0.01,
  SGD momentum 0.9, batch 64, 20 epochs): interpreter start and imports, load, both arms (plain and
  noise), the measurement of the three models (accuracy, α̂, q(ε), curves, 40-point prune curves),
  the export, report.html. Its ``--verbose`` stage seconds are kept.
- **peer**: ``python -m bench.finetune_peer DIR N`` in a fresh process: torch and numpy only, then
  ``nn.Sequential`` + ``torch.optim.SGD`` (momentum 0.9, η 0.01, batch 64) training the same model
  for the same 2 × 20 epochs, and nothing else (no validation, no noise, no measurement).

Both run with the same torch thread count. The machine is shared: ratios job / peer of the same run
are the comparable figure; the load average before each run is recorded, and each process's CPU
seconds (user + system, from ``getrusage``), which the other tenants inflate much less than the wall.

    python -m bench.finetune_speed [--threads 1 [2 ...]] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import digits_split, machine, md_table, mlp, mlp_architecture, train

RESULTS = Path(__file__).parent / "results"
WIDTHS = (64, 1024, 1024, 10)
N_TEST = 360  # 1797 - 360 = 1437 training digits (the size)
EPOCHS = 20
PRETRAIN_EPOCHS = 5
TARGET_S = 60.0
_STAGE = re.compile(r"^\s+(.+?)\s+([0-9.]+) s\s+[0-9.]+%$")


def prepare(d: Path) -> tuple[Path, Path, Path, Path, int]:
    """Pretrain the MLP (seed 0); write the state dict, its architecture and the two .npz files."""
    split = digits_split(n_cal=0, n_test=N_TEST, seed=0)
    torch.manual_seed(0)
    model = mlp(WIDTHS)
    train(model, split.train_X, split.train_y, epochs=PRETRAIN_EPOCHS, seed=0)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, d / "mlp.pt")
    (d / "arch.json").write_text(json.dumps(mlp_architecture(model, WIDTHS[0])))
    np.savez(d / "train.npz", inputs=split.train_X, labels=split.train_y)
    np.savez(d / "val.npz", inputs=split.test_X, labels=split.test_y)
    n_params = sum(p.numel() for p in model.parameters())
    return d / "mlp.pt", d / "arch.json", d / "train.npz", d / "val.npz", n_params


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall s, CPU s of the child: user + system, all its threads), the finished process."""
    c0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]}… exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, cpu, proc


def one_run(files: tuple[Path, Path, Path, Path], d: Path, threads: int) -> dict[str, Any]:
    model, arch, tr, val = files
    load_peer = os.getloadavg()[0]
    peer_s, peer_cpu, proc = _timed([sys.executable, "-m", "bench.finetune_peer", str(d), str(threads)])
    loop_s = json.loads(proc.stdout.strip().splitlines()[-1])["loop_s"]
    load_job = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "netshrink.cli.main", "finetune", str(model), "--architecture", str(arch)]
    cmd += ["--train", str(tr), "--validation", str(val), "--seed", "0", "--out", str(d / "out")]
    job_s, job_cpu, proc = _timed([*cmd, "--threads", str(threads), "--verbose", "--quiet"])
    stages = {m[1]: float(m[2]) for m in map(_STAGE.match, proc.stderr.splitlines()) if m}
    stages.pop("total", None)
    report = json.loads((d / "out" / "report.json").read_text())
    return {
        "threads": threads,
        "job_s": round(job_s, 2),
        "peer_s": round(peer_s, 2),
        "peer_loop_s": round(loop_s, 2),
        "ratio": round(job_s / peer_s, 3),
        "job_cpu_s": round(job_cpu, 2),
        "peer_cpu_s": round(peer_cpu, 2),
        "cpu_ratio": round(job_cpu / peer_cpu, 3),
        "met": job_s < TARGET_S,
        "load_before_peer": round(load_peer, 2),
        "load_before_job": round(load_job, 2),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "accuracy": {k: report["finetune"]["arms"][k]["accuracy"] for k in ("plain", "noise")},
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ["torch threads", "job s", "met (< 60 s)", "peer s (process)", "peer loop s", "job / peer"]
    head += ["CPU s job / peer", "load avg before peer / job", "job stages s"]
    body = [
        [
            r["threads"],
            r["job_s"],
            "yes" if r["met"] else "NO",
            r["peer_s"],
            r["peer_loop_s"],
            r["ratio"],
            f"{r['job_cpu_s']} / {r['peer_cpu_s']}",
            f"{r['load_before_peer']} / {r['load_before_job']}",
            ", ".join(f"{k} {v}" for k, v in r["stages_s"].items()),
        ]
        for r in rows
    ]
    return md_table(head, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts to time")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ft-speed-") as tmp:
        d = Path(tmp)
        *files, n_params = prepare(d)
        rows = [
            one_run((files[0], files[1], files[2], files[3]), d, th)
            for _ in range(args.repeats)
            for th in args.threads
        ]
    out = {"machine": machine(), "params": n_params, "train_samples": 1797 - N_TEST, "rows": rows}
    md = (
        f"### 1M-parameter finetune job: {n_params:,} params, {1797 - N_TEST:,} samples, {EPOCHS} epochs "
        f"× 2 arms (`python -m bench.finetune_speed {' '.join(sys.argv[1:])}`)\n\n" + table(rows)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "finetune_speed.md").write_text(md, encoding="utf-8")
    (RESULTS / "finetune_speed.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(md)
    print(f"wrote {RESULTS}/finetune_speed.{{md,json}} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
