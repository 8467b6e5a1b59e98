"""Width trade-off (P1 Figs 2 and 4): Δ = c^{−2m}·E‖Φ−Φ̂‖² against the hidden width, with controls.

    python -m bench.width       # writes bench/results/width.{md,json,svg,png}; ~1-2 min on 2 CPU cores

Setup (P1 §5 experiments, scaled down to run on a CPU in minutes): sklearn digits, MLPs 64→w→40→10
(ReLU), w ∈ {64, 256, 1024, 4096}, trained with Adam (20 epochs, batch 64, same seed) on 1000 images.
Randomized greedy pruning with P1's f = 0.9, p = 0.3 (spec: prune keep = 1 − f + f·p = 0.37, fraction
0.9), unstructured ("weight") and neuron pruning, several compression seeds. Scores use the 500
calibration images; every error is measured on 297 test images no step has seen.

Reported per run: Δ = c^{−2m}·E‖Φ−Φ̂‖² with c = max_ℓ σ_ℓ (σ_ℓ = ‖W_ℓ‖_op) and m = 3 the depth; the
relative error sqrt(E‖Φ−Φ̂‖²/E‖Φ‖²); the test accuracy; and each bound tier's B_m over the measured
E‖Φ−Φ̂‖² (docs/method.md §3). Controls: the same architectures untrained (PyTorch's default init) on
isotropic Gaussian inputs, where P1 predicts no relative gain with width (docs/method.md §3, "The width
trade-off"); keep-fraction (p) and bit-width sweeps at w = 256.

The core is driven through ``search.greedy.draw_network`` and ``search.measure.measure``:
exactly the draw and the measurement ``compress`` runs, without its artifacts, linearized prediction
and diagnostics (those cost ~10× more at w = 4096 and are not what this experiment measures).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import accuracy, digits_split, machine, md_table, mlp, mlp_architecture, to_network, train  # noqa: E402
from netshrink.compression.evaluation.executor import Executor  # noqa: E402
from netshrink.compression.graph.network import Network  # noqa: E402
from netshrink.compression.search.greedy import draw_network  # noqa: E402
from netshrink.compression.search.measure import measure  # noqa: E402
from netshrink.compression.spec import CompressSpec  # noqa: E402

RESULTS = Path(__file__).parent / "results"
COMMAND = "python -m bench.width"
WIDTHS = (64, 256, 1024, 4096)
SEEDS = (0, 1, 2, 3, 4)
SWEEP_SEEDS = (0, 1, 2)
F, P = 0.9, 0.3
KEEP = 1 - F + F * P  # 0.37: expected density of P1's (f, p) rule
EPOCHS = 20
LONG_EPOCHS = 100  # control: does longer training (further from the random init) change the width trend?
TIERS = ("E", "T", "P", "W")
SWEEP_P = (0.1, 0.2, 0.3, 0.5, 0.7)
SWEEP_BITS = (2, 3, 4, 6, 8)
SWEEP_WIDTH = 256


def one_run(
    net: Network,
    ex: Executor,
    spec: dict[str, Any],
    seed: int,
    X_fit: np.ndarray,
    X_ho: np.ndarray,
    y_ho: np.ndarray | None,
) -> dict[str, Any]:
    """One randomized greedy draw (R = 1) scored on X_fit and measured on X_ho."""
    cs = CompressSpec.from_dict({**spec, "seed": seed})
    nd = draw_network(net, ex, cs, torch.from_numpy(X_fit), draw=0)
    m = measure(net, ex, nd, torch.from_numpy(X_ho), None)
    mse = m.error.mse
    c = max(m.sigmas.values())
    depth = len(net.layers)
    return {
        "seed": seed,
        "mse": mse,
        "relative_l2": m.error.relative_l2,
        "delta": mse / c ** (2 * depth),
        "c": c,
        "sigmas": dict(m.sigmas),
        "ratio": {t: (None if (b := m.end_to_end[t]) is None else b / mse) for t in TIERS},
        "accuracy": None if y_ho is None else accuracy(m.phi_hat, y_ho),
        "accuracy_dense": None if y_ho is None else accuracy(m.phi, y_ho),
        "layers": {n: {"f": d.f, "p": d.p, "keep": d.realized_keep} for n, d in nd.layers.items()},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of the headline numbers; mean tier ratios."""

    def ms(key: str) -> tuple[float | None, float | None]:
        vals = [r[key] for r in runs if r[key] is not None]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)

    out: dict[str, Any] = {k: ms(k) for k in ("delta", "relative_l2", "accuracy", "mse")}
    out["accuracy_dense"] = runs[0]["accuracy_dense"]
    out["c"] = runs[0]["c"]
    out["ratio"] = {}
    for t in TIERS:
        vals = [r["ratio"][t] for r in runs if r["ratio"][t] is not None]
        out["ratio"][t] = float(np.mean(vals)) if vals else None
    return out


def prune_spec(granularity: str, keep: float = KEEP) -> dict[str, Any]:
    return {"prune": {"keep": keep, "granularity": granularity, "fraction": F}}


# (label, spec, seeds): P1's randomized pruning at (f, p) both ways, the deterministic magnitude baseline at
# the same expected density (one seed: it draws nothing), and 4-bit randomized quantization (P1 Thm 3).
METHODS: tuple[tuple[str, dict[str, Any], tuple[int, ...]], ...] = (
    ("prune weight", prune_spec("weight"), SEEDS),
    ("prune neuron", prune_spec("neuron"), SEEDS),
    (
        "magnitude weight",
        {"prune": {"keep": KEEP, "granularity": "weight", "method": "magnitude"}},
        SEEDS[:1],
    ),
    ("quantize 4 bit", {"quantize": {"bits": 4}}, SEEDS),
)


def width_experiment() -> tuple[list[dict[str, Any]], dict[str, Network]]:
    """Trained nets on digits and random nets on Gaussian inputs, both granularities, every width."""
    split = digits_split()
    gauss = np.random.default_rng(0).standard_normal((500 + 297, 64)).astype(np.float32)  # (S, 64)
    rows, trained_nets = [], {}
    for w in WIDTHS:
        torch.manual_seed(0)
        model = mlp((64, w, 40, 10))
        random_net = to_network(model, mlp_architecture(model, 64))  # before training: PyTorch init
        secs = train(model, split.train_X, split.train_y, epochs=EPOCHS)
        net = to_network(model, mlp_architecture(model, 64))
        trained_nets[str(w)] = net
        torch.manual_seed(0)
        long_model = mlp((64, w, 40, 10))
        long_secs = train(long_model, split.train_X, split.train_y, epochs=LONG_EPOCHS)
        long_net = to_network(long_model, mlp_architecture(long_model, 64))
        cases = (
            ("trained, digits", net, split.cal_X, split.test_X, split.test_y, METHODS),
            ("random, Gaussian", random_net, gauss[:500], gauss[500:], None, METHODS),
            (
                f"trained {LONG_EPOCHS} epochs, digits",
                long_net,
                split.cal_X,
                split.test_X,
                split.test_y,
                tuple((label, spec, SWEEP_SEEDS) for label, spec, _ in METHODS[:2]),
            ),
        )
        for case, n, X_fit, X_ho, y, methods in cases:
            ex = Executor(n, "cpu")
            for label, spec, seeds in methods:
                runs = [one_run(n, ex, spec, s, X_fit, X_ho, y) for s in seeds]
                rows.append({"case": case, "width": w, "method": label, "runs": runs, **summarize(runs)})
        print(f"width {w}: trained in {secs:.1f} s ({LONG_EPOCHS} epochs: {long_secs:.1f} s)")
    return rows, trained_nets


def sweeps(net: Network) -> list[dict[str, Any]]:
    """Keep-fraction (p at f = 0.9) and bit-width (f = 1) sweeps on the trained w = 256 net."""
    split = digits_split()
    ex = Executor(net, "cpu")
    rows = []
    for p in SWEEP_P:
        keep = round(1 - F + F * p, 6)
        runs = [
            one_run(net, ex, prune_spec("weight", keep), s, split.cal_X, split.test_X, split.test_y)
            for s in SWEEP_SEEDS
        ]
        rows.append({"sweep": "prune", "setting": f"p={p} (keep {keep:.2f})", "x": keep, **summarize(runs)})
    for b in SWEEP_BITS:
        spec = {"quantize": {"bits": b}}
        runs = [one_run(net, ex, spec, s, split.cal_X, split.test_X, split.test_y) for s in SWEEP_SEEDS]
        rows.append({"sweep": "quantize", "setting": f"{b} bit", "x": b, **summarize(runs)})
    return rows


def _pm(v: tuple[float | None, float | None], fmt: str = ".3g") -> str:
    mean, std = v
    return "–" if mean is None or std is None else f"{mean:{fmt}} ± {std:{fmt}}"


def markdown(rows: list[dict[str, Any]], sweep_rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    head = (
        f"Generated by `{COMMAND}` on {info['cores']} cores ({info['cpu']}), torch {info['torch']}, "
        f"{info['torch_threads']} torch thread(s); total {info['total_s']:.0f} s. f = {F}, p = {P} "
        f"(keep {KEEP:.2f}), seeds {list(SEEDS)} (mean ± std; {LONG_EPOCHS}-epoch nets: {list(SWEEP_SEEDS)}; "
        "magnitude is deterministic: one run), R = 1 draw, test split of 297 images "
        "(trained) or 297 Gaussian inputs (random).\n\n### Width trade-off\n\n"
    )
    header = [
        "case",
        "width",
        "method",
        "c = max σ",
        "Δ = c^-6·E‖Φ−Φ̂‖²",
        "E‖Φ−Φ̂‖²",
        "relative error",
        "accuracy after",
        "accuracy dense",
        *[f"{t}/measured" for t in TIERS],
    ]
    table = [
        [
            r["case"],
            r["width"],
            r["method"],
            r["c"],
            _pm(r["delta"]),
            _pm(r["mse"]),
            _pm(r["relative_l2"]),
            _pm(r["accuracy"]),
            r["accuracy_dense"],
            *[r["ratio"][t] for t in TIERS],
        ]
        for r in rows
    ]
    sweep_header = [
        "sweep (trained w=256)",
        "setting",
        "relative error",
        "accuracy after",
        "Δ",
        *[f"{t}/measured" for t in TIERS],
    ]
    sweep_table = [
        [
            s["sweep"],
            s["setting"],
            _pm(s["relative_l2"]),
            _pm(s["accuracy"]),
            _pm(s["delta"]),
            *[s["ratio"][t] for t in TIERS],
        ]
        for s in sweep_rows
    ]
    sweep_head = f"\n### Sweeps at w = {SWEEP_WIDTH} (seeds {list(SWEEP_SEEDS)})\n\n"
    return head + md_table(header, table) + sweep_head + md_table(sweep_header, sweep_table)


def plot(rows: list[dict[str, Any]], sweep_rows: list[dict[str, Any]], stem: Path) -> None:
    plt.rcParams["svg.hashsalt"] = "netshrink"  # stable SVG ids
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    colors = dict(zip((m[0] for m in METHODS), ("C0", "C1", "C2", "C3"), strict=True))
    cases = (
        ("trained, digits", "-"),
        ("random, Gaussian", "--"),
        (f"trained {LONG_EPOCHS} epochs, digits", ":"),
    )
    for r_case, ls in cases:
        for label, _, _ in METHODS:
            sel = [r for r in rows if r["case"] == r_case and r["method"] == label]
            if not sel:
                continue
            ws = [r["width"] for r in sel]
            kw = {"fmt": "o" + ls, "color": colors[label], "capsize": 3}
            for ax, key in ((axes[0, 0], "delta"), (axes[0, 1], "relative_l2")):
                ys, err = [r[key][0] for r in sel], [r[key][1] for r in sel]
                ax.errorbar(ws, ys, yerr=err, label=f"{r_case}: {label}", **kw)
            if r_case == "trained, digits":
                ys, err = [r["accuracy"][0] for r in sel], [r["accuracy"][1] for r in sel]
                axes[0, 2].errorbar(ws, ys, yerr=err, label=label, **kw)
    dense = [r for r in rows if r["case"] == "trained, digits" and r["method"] == METHODS[0][0]]
    axes[0, 2].plot([r["width"] for r in dense], [r["accuracy_dense"] for r in dense], "k^:", label="dense")
    titles = ("Δ = c^{-2m} E‖Φ−Φ̂‖² (P1 Figs 2, 4)", "relative output error", "test accuracy (trained)")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="hidden width w", title=title)
        ax.legend(fontsize=6)
    axes[0, 0].set_yscale("log")
    axes[0, 1].set_yscale("log")
    ax = axes[1, 0]
    for label, _, _ in METHODS[:2]:
        sel = [r for r in rows if r["case"] == "trained, digits" and r["method"] == label]
        for t, mk in zip(TIERS, "oDsv", strict=True):
            vals = [r["ratio"][t] for r in sel]
            if any(v is not None for v in vals):
                ls = "-" if label.endswith("weight") else "--"
                ax.plot([r["width"] for r in sel], vals, mk + ls, label=f"{t}, {label}")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="hidden width w",
        ylabel="bound / measured",
        title="tightness of each tier (trained)",
    )
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=7, ncol=2)
    for ax, kind, xlabel in (
        (axes[1, 1], "prune", "keep fraction (f = 0.9)"),
        (axes[1, 2], "quantize", "bits"),
    ):
        sel = [s for s in sweep_rows if s["sweep"] == kind]
        ax.errorbar(
            [s["x"] for s in sel],
            [s["relative_l2"][0] for s in sel],
            yerr=[s["relative_l2"][1] for s in sel],
            fmt="o-",
            capsize=3,
            label="measured",
        )
        ax.plot(
            [s["x"] for s in sel],
            [s["relative_l2"][0] * np.sqrt(s["ratio"]["E"]) for s in sel],
            "s--",
            label="tier E bound ≈ rel·√(E/measured)",
        )
        ax.set(
            yscale="log",
            xlabel=xlabel,
            ylabel="relative error",
            title=f"{kind} sweep, trained w={SWEEP_WIDTH}",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".svg"), metadata={"Date": None})
    fig.savefig(stem.with_suffix(".png"), dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Takes no options. Writes bench/results/width.{md,json,svg,png}.",
    ).parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows, nets = width_experiment()
    sweep_rows = sweeps(nets[str(SWEEP_WIDTH)])
    info = {**machine(), "total_s": time.perf_counter() - t0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / "width"
    text = markdown(rows, sweep_rows, info)
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    payload = {
        "command": COMMAND,
        "machine": info,
        "f": F,
        "p": P,
        "keep": KEEP,
        "width": rows,
        "sweeps": sweep_rows,
    }
    stem.with_suffix(".json").write_text(
        json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    plot(rows, sweep_rows, stem)
    print(text)


if __name__ == "__main__":
    main()
