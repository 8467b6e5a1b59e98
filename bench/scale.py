"""Scale benchmark (issue 10): a 17M-parameter MLP against onnxruntime's ``quantize_dynamic``, same run.

    python -m bench.scale                  # writes bench/results/scale.{md,json}; long on 2 shared cores
    python -m bench.scale --part table     # the 17M table only (merged into an existing scale.json)
    python -m bench.scale --part scaling   # the width / sample sweeps only (merged likewise)

Every job runs as its own process under ``/usr/bin/time`` (wall seconds and the process's peak RSS),
as a user would run it: ``netshrink compress MODEL --calibration CAL ... --seed 0 --out DIR`` with the full
report (every bound tier, prediction, diagnostics, both onnxruntime re-checks, report.html), and the
peer ``quantize_dynamic(model, out, weight_type=QInt8)`` (load, quantize, write). The ratio column is
wall time / the peer's wall time measured in the same run (wall clocks on a shared machine are
noisy; ratios are what the targets are stated in). The 17M table runs ``--rounds`` (3) interleaved
rounds, the peer first in each: a row's wall time is its median, the ratio that median over the
peer's median, and each round's own ratio is printed beside it (the peer alone took 1.32-1.73 s in
five one-round runs on 2026-12-04, so one round's ratio moved by ±13 % with the peer). Errors: each
shipped ONNX file is run in onnxruntime (default settings) on the 1,437 calibration digits; relative
L2 on the logits and the top-1 accuracy against the labels.

Models (``bench/scale_models.py``, cached under ``bench/.cache/``): 64→w→w→10 ReLU MLPs trained
briefly on digits (w = 256, 1024, 4096), w = 8192 with random weights, and a random 784→4096→4096→10
with Gaussian inputs. Scaling: ``--bits 4`` over the widths at 1,437 samples, and over 256 → 4,096
calibration samples at w = 1024; the exponents are least-squares slopes of log time against
log(params) and log(samples), for the whole run and for the compression + measurement stages alone
(``report.json`` timings: compress, measure_and_bounds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.common import machine, md_table
from bench.scale_models import mlp_files

RESULTS = Path(__file__).resolve().parent / "results"
PY = sys.executable
TIME = "/usr/bin/time"
SEED = 0  # every netshrink job passes --seed: the same run gives the same artifacts and report
SPEED_TARGET = 10.0  # × quantize_dynamic
SEARCH_TARGET = 3.0  # budget search / single compress
GiB = 2**30


def timed(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command run under /usr/bin/time; raises on failure."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.run([TIME, "-f", "%e %M", "-o", tf.name, *cmd], capture_output=True, text=True)
        if proc.returncode not in (0, 3):  # 3: budget not met, still a finished job
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        wall, rss_kb = tf.read().split()[-2:]
    return float(wall), int(rss_kb) * 1024


def evaluate(model: Path, cal: Path, ref: Path) -> dict[str, float | None]:
    """Relative L2 of ``model``'s logits vs ``ref``'s and top-1 accuracy, on the calibration set."""
    data = np.load(cal)
    X, y = data["inputs"], data.get("labels")

    def logits(p: Path) -> np.ndarray:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        s = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        return np.asarray(s.run(None, {s.get_inputs()[0].name: X})[0], dtype=np.float64).reshape(
            X.shape[0], -1
        )

    phi, phi_hat = logits(ref), logits(model)
    rel = float(np.sqrt(((phi - phi_hat) ** 2).sum(1).mean() / (phi**2).sum(1).mean()))
    acc = None if y is None else float((phi_hat.argmax(1) == y).mean())
    return {"relative_l2": rel, "accuracy": acc}


def ort_peer(model: Path, cal: Path, out: Path) -> dict[str, Any]:
    code = (
        "import sys; from onnxruntime.quantization import QuantType, quantize_dynamic; "
        "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)"
    )
    wall, rss = timed([PY, "-c", code, str(model), str(out)])
    return {
        "job": "onnxruntime quantize_dynamic int8",
        "wall_s": wall,
        "peak_rss": rss,
        "file_ratio": out.stat().st_size / model.stat().st_size,
        **evaluate(out, cal, model),
    }


def netshrink_job(name: str, model: Path, cal: Path, out: Path, flags: list[str]) -> dict[str, Any]:
    cmd = [PY, "-m", "netshrink.cli.main", "compress", str(model), "--calibration", str(cal)]
    wall, rss = timed([*cmd, *flags, "--seed", str(SEED), "--out", str(out), "--quiet"])
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    return {
        "job": name,
        "wall_s": wall,
        "peak_rss": rss,
        "file_ratio": (out / "model.onnx").stat().st_size / model.stat().st_size,
        **evaluate(out / "model.onnx", cal, model),
        "holdout_relative_l2": s["error"]["relative_l2"],
        "stages": report["timings"]["stages"],
        "sigma": s.get("sigma"),
        "params": s["params"]["before"],
        "samples": int(np.load(cal)["inputs"].shape[0]),
    }


def slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than 2 points)."""
    if len(x) < 2:
        return None
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    return float(np.polyfit(lx, ly, 1)[0])


def core_seconds(r: dict[str, Any]) -> float:
    st = r["stages"]
    return float(st.get("compress", 0.0) + st.get("measure_and_bounds", 0.0))


ROUNDS = 3  # the table's rounds: the peer's wall time alone moved 1.32-1.73 s between runs (2026-12-04)


def table(work: Path, rounds: int = ROUNDS) -> dict[str, Any]:
    """The 17M table: the peer, four netshrink jobs and the random 784-input model, run ``rounds``
    times interleaved (the peer, then the five jobs; again), so that a slow spell of the shared
    machine falls on all of them. A row's wall time is the median of its rounds and its ratio that
    median over the peer's; each round's own ratio (job / the peer of that round) is kept beside it.
    Peak RSS is the largest of the rounds; errors and stage timings are the last round's (the
    artifacts are the same bytes every round: one seed)."""
    model, cal = mlp_files(4096)
    r784m, r784c = mlp_files(4096, n_in=784, trained=False)
    jobs: list[tuple[str, Path, Path, list[str]]] = [
        ("netshrink --bits 8", model, cal, ["--bits", "8"]),
        ("netshrink --bits 4", model, cal, ["--bits", "4"]),
        (
            "netshrink neuron keep 0.5 + 4 bits",
            model,
            cal,
            ["--prune-keep", "0.5", "--granularity", "neuron", "--bits", "4"],
        ),
        ("netshrink --target-top1 0.99", model, cal, ["--target-top1", "0.99"]),
        ("random 784→4096→4096→10 --bits 4", r784m, r784c, ["--bits", "4"]),
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    for i in range(rounds):
        peer = ort_peer(model, cal, work / f"ort{i}.onnx")
        runs.setdefault(peer["job"], []).append(peer)
        for k, (name, m, c, flags) in enumerate(jobs):
            runs.setdefault(name, []).append(netshrink_job(name, m, c, work / f"j{k}-{i}", flags))
    peers = next(rs for name, rs in runs.items() if name.startswith("onnxruntime"))
    peer_wall = float(np.median([r["wall_s"] for r in peers]))
    rows = []
    for rs in runs.values():
        walls = [r["wall_s"] for r in rs]
        row = dict(rs[-1], wall_s=float(np.median(walls)), wall_s_rounds=walls)
        row["peak_rss"] = max(r["peak_rss"] for r in rs)
        row["ratio"] = row["wall_s"] / peer_wall
        row["ratio_rounds"] = [r["wall_s"] / p["wall_s"] for r, p in zip(rs, peers, strict=True)]
        rows.append(row)
    single = next(r for r in rows if r["job"] == "netshrink --bits 4")
    search = next(r for r in rows if r["job"] == "netshrink --target-top1 0.99")
    return {
        "model": {
            "file": model.name,
            "bytes": model.stat().st_size,
            "rss_limit": 3 * model.stat().st_size + GiB,
        },
        "rounds": rounds,
        "rows": rows,
        "search_over_single": search["wall_s"] / single["wall_s"],
    }


def scaling(work: Path, widths_list: tuple[int, ...], samples_list: tuple[int, ...]) -> dict[str, Any]:
    """--bits 4 over widths (1,437 samples) and over samples (w = 1024), with fitted exponents."""
    widths: list[dict[str, Any]] = []
    for w in widths_list:
        m, c = mlp_files(w, trained=w <= 4096)
        widths.append(netshrink_job(f"w={w}", m, c, work / f"w{w}", ["--bits", "4", "--no-html"]))
    samples: list[dict[str, Any]] = []
    for n in samples_list:
        m, c = mlp_files(1024, samples=n)
        samples.append(netshrink_job(f"S={n}", m, c, work / f"s{n}", ["--bits", "4", "--no-html"]))
    return {
        "widths": widths,
        "samples": samples,
        "exponents": {
            "params_total": slope([r["params"] for r in widths], [r["wall_s"] for r in widths]),
            "params_core": slope([r["params"] for r in widths], [core_seconds(r) for r in widths]),
            "params_rss": slope([r["params"] for r in widths], [r["peak_rss"] for r in widths]),
            "samples_total": slope([r["samples"] for r in samples], [r["wall_s"] for r in samples]),
            "samples_core": slope([r["samples"] for r in samples], [core_seconds(r) for r in samples]),
        },
    }


TABLE_JOBS = {
    "bits8": ("netshrink --bits 8", ["--bits", "8"]),
    "bits4": ("netshrink --bits 4", ["--bits", "4"]),
    "neuron4": (
        "netshrink neuron keep 0.5 + 4 bits",
        ["--prune-keep", "0.5", "--granularity", "neuron", "--bits", "4"],
    ),
    "top1": ("netshrink --target-top1 0.99", ["--target-top1", "0.99"]),
}


def table_job(name: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    model, cal = mlp_files(4096)
    if name == "ort":
        r = ort_peer(model, cal, work / "ort.onnx")
    elif name == "random784":
        m, c = mlp_files(4096, n_in=784, trained=False)
        r = netshrink_job("random 784→4096→4096→10 --bits 4", m, c, work / "r", ["--bits", "4"])
    else:
        label, flags = TABLE_JOBS[name]
        r = netshrink_job(label, model, cal, work / "j", flags)
    with (RESULTS / "scale-table.jsonl").open("a") as fh:
        fh.write(json.dumps(r, sort_keys=True) + "\n")


def table_from_jobs() -> dict[str, Any]:
    """The table from the ``--job`` rows (each one measured as its own process, in one session)."""
    model, _ = mlp_files(4096)
    rows = [json.loads(line) for line in (RESULTS / "scale-table.jsonl").read_text().splitlines() if line]
    peer = next(r for r in rows if r["job"].startswith("onnxruntime"))
    for r in rows:
        r["ratio"] = r["wall_s"] / peer["wall_s"]
    single = [r for r in rows if r["job"] == "netshrink --bits 4"]
    search = [r for r in rows if r["job"] == "netshrink --target-top1 0.99"]
    return {
        "model": {
            "file": model.name,
            "bytes": model.stat().st_size,
            "rss_limit": 3 * model.stat().st_size + GiB,
        },
        "rows": [peer] + [r for r in rows if r is not peer],
        "search_over_single": search[0]["wall_s"] / single[0]["wall_s"] if search and single else None,
    }


def merge_points(result: dict[str, Any]) -> dict[str, Any]:
    """Sweeps from the ``--point`` runs, plus the 17M table's --bits 4 run as the w = 4096 point."""
    pts = [json.loads(line) for line in (RESULTS / "scale-points.jsonl").read_text().splitlines() if line]
    table4 = [r for r in result.get("rows", []) if r["job"] == "netshrink --bits 4"]
    widths = sorted([r for r in pts if r["samples"] == 1437], key=lambda r: r["params"])
    widths += (
        [dict(table4[0], job="w=4096 S=1437 (the table's --bits 4 run, with report.html)")] if table4 else []
    )
    samples = sorted([r for r in pts if r["job"].startswith("w=1024 ")], key=lambda r: r["samples"])
    return {
        "widths": widths,
        "samples": samples,
        "exponents": {
            "params_total": slope([r["params"] for r in widths], [r["wall_s"] for r in widths]),
            "params_core": slope([r["params"] for r in widths], [core_seconds(r) for r in widths]),
            "params_rss": slope([r["params"] for r in widths], [r["peak_rss"] for r in widths]),
            "samples_total": slope([r["samples"] for r in samples], [r["wall_s"] for r in samples]),
            "samples_core": slope([r["samples"] for r in samples], [core_seconds(r) for r in samples]),
        }
        if len(widths) >= 2 and len(samples) >= 2
        else {},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("all", "table", "scaling", "merge"), default="all")
    ap.add_argument("--json", default="scale.json", help="results file under bench/results/")
    ap.add_argument("--job", help="one table row: ort | bits8 | bits4 | neuron4 | top1 | random784")
    ap.add_argument("--point", help="one sweep point, WIDTH:SAMPLES, appended to scale-points.jsonl at once")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds of the 17M table")
    args = ap.parse_args()
    if args.job:  # one row of the 17M table, appended to scale-table.jsonl at once
        table_job(args.job)
        return
    if args.point:
        w, n = (int(v) for v in args.point.split(":"))
        m, c = mlp_files(w, trained=w <= 4096, samples=n)
        r = netshrink_job(
            f"w={w} S={n}", m, c, Path(tempfile.mkdtemp(prefix="scale-")), ["--bits", "4", "--no-html"]
        )
        with (RESULTS / "scale-points.jsonl").open("a") as fh:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
        return
    RESULTS.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scale-"))
    path = RESULTS / args.json
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() and args.part != "all" else {}
    if args.part == "merge":  # the --job rows (scale-table.jsonl) and the --point runs (scale-points.jsonl)
        result["machine"] = machine()
        if (RESULTS / "scale-table.jsonl").exists():
            result.update(table_from_jobs())
        if (RESULTS / "scale-points.jsonl").exists():
            result.update(merge_points(result))
    else:
        result["machine"] = machine()
    if args.part in ("all", "table"):
        result.update(table(work, args.rounds))
    if args.part in ("all", "scaling"):
        result.update(scaling(work, (256, 1024, 4096, 8192), (256, 1024, 4096)))
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    md = render(result)
    (RESULTS / "scale.md").write_text(md)
    print(md)


def render(result: dict[str, Any]) -> str:
    if "rows" not in result:
        return render_scaling(result)
    lim = result["model"]["rss_limit"]
    n = result.get("rounds", 1)
    head = [
        "job",
        "wall s" if n == 1 else f"wall s (median of {n})",
        "× quantize_dynamic",
        f"≤ {SPEED_TARGET:g}×",
        "each round's ×",
        "peak RSS GiB",
        f"RSS ≤ {lim / GiB:.2f} GiB",
        "file",
        "rel. err",
        "accuracy",
    ]
    rows = [
        [
            r["job"],
            r["wall_s"],
            r["ratio"],
            "-" if i == 0 else ("yes" if r["ratio"] <= SPEED_TARGET else "NO"),
            " / ".join(f"{x:.2f}" for x in r.get("ratio_rounds", [r["ratio"]])),
            r["peak_rss"] / GiB,
            "yes" if r["peak_rss"] <= lim else "NO",
            f"{r['file_ratio']:.3f}×",
            r["relative_l2"],
            r["accuracy"],
        ]
        for i, r in enumerate(result["rows"])
    ]
    out = [
        f"# Scale: {result['model']['file']} ({result['model']['bytes'] / 2**20:.1f} MiB)\n",
        f"machine: {result['machine']}\n",
        ""
        if n == 1
        else f"{n} rounds, interleaved (the peer, then each job; again): wall s is a row's median\n",
        md_table(head, rows),
        "\nbudget search / single compress: "
        + ("not measured" if result["search_over_single"] is None else f"{result['search_over_single']:.2f}×")
        + f" (target ≤ {SEARCH_TARGET}×); speed target ≤ {SPEED_TARGET}× quantize_dynamic\n",
    ]
    stage_rows = [  # netshrink rows only (a second peer row, measured later in the session, has none)
        [r["job"], *(f"{k} {v:.1f}" for k, v in r["stages"].items())]
        for r in result["rows"][1:]
        if r.get("stages")
    ]
    width = max(len(r) for r in stage_rows)
    out += [
        "\n## Seconds per stage (report.json timings)\n",
        md_table(["job", *[""] * (width - 1)], [r + [""] * (width - len(r)) for r in stage_rows]),
    ]
    return "".join(out) + render_scaling(result)


def render_scaling(result: dict[str, Any]) -> str:
    out: list[str] = []
    if "widths" in result:
        sc_head = ["run", "params", "samples", "wall s", "compress+measure s", "peak RSS GiB"]
        sc = [
            [r["job"], r["params"], r["samples"], r["wall_s"], core_seconds(r), r["peak_rss"] / GiB]
            for r in result["widths"] + result["samples"]
        ]
        ex = result["exponents"]
        out += [
            "\n## Scaling (--bits 4, no report.html)\n",
            md_table(sc_head, sc),
            "\nfitted exponents (log-log slopes): "
            + ", ".join(f"{k} {v:.2f}" for k, v in ex.items() if v is not None)
            + " (target ≤ 1.1 for compression + measurement)\n",
        ]
    return "".join(out)


if __name__ == "__main__":
    main()
