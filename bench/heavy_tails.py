"""Heavy-tail diagnostics benchmark: α̂ and q(ε) on synthetic SαS matrices and trained digits MLPs.

    python -m bench.heavy_tails          # writes bench/results/heavy_tails.{md,json,svg,png}

Part 1 checks the estimators where the truth is known: i.i.d. SαS(α) matrices of shape (2000, 500)
for α ∈ {1.5, 1.75, 1.9, 2}. Part 2 applies them to MLPs 64→w→40→10 (ReLU) trained with plain SGD
on sklearn's bundled digits data, w ∈ {64, 256, 1024}, before and after training.
Everything is seeded; it runs in well under a minute on one CPU thread.

Ref: docs/method.md §4; [P2] Barsbey et al. (NeurIPS 2021); [P3] Wan et al. (ICML 2024).
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
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

from netshrink.compression.bounds.stable import sample_sas  # noqa: E402
from netshrink.compression.diagnostics.diagnostics import diagnose_tensor  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ALPHAS = (1.5, 1.75, 1.9, 2.0)
SYNTH_SHAPE = (2000, 500)
WIDTHS = (64, 256, 1024)
EPOCHS = 40
BATCH = 16
LR = 0.1
SEED = 0


def synthetic_rows() -> list[dict[str, Any]]:
    """Diagnostics of i.i.d. SαS matrices, one per α (each with its own seed)."""
    rows = []
    for i, alpha in enumerate(ALPHAS):
        W = sample_sas(alpha, SYNTH_SHAPE, rng=np.random.default_rng(SEED + i))  # (out, in)
        rows.append(
            {"source": f"SαS α={alpha}", "alpha_true": alpha, **diagnose_tensor(f"sas{alpha}", W, full=True)}
        )
    return rows


def _mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 40), nn.ReLU(), nn.Linear(40, 10))


def train_mlp(width: int, X: torch.Tensor, y: torch.Tensor) -> tuple[nn.Sequential, nn.Sequential]:
    """(initial, trained) copies of a digits MLP; plain SGD, lr 0.1, batch 16, 40 epochs."""
    torch.manual_seed(SEED)
    model = _mlp(width)
    initial = _mlp(width)
    initial.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        for idx in torch.randperm(X.shape[0], generator=gen).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return initial, model


def _accuracy(model: nn.Sequential, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).double().mean())


def mlp_rows() -> list[dict[str, Any]]:
    """Diagnostics of every Linear weight (out, in) of each MLP, at initialization and after training."""
    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)  # (1797, 64), pixels in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.int64)  # (1797,)
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(SEED))
    n_train = int(0.8 * X.shape[0])
    train, test = perm[:n_train], perm[n_train:]
    rows = []
    for width in WIDTHS:
        t0 = time.perf_counter()
        initial, trained = train_mlp(width, X[train], y[train])
        seconds = time.perf_counter() - t0
        for state, model in (("init", initial), ("trained", trained)):
            acc = _accuracy(model, X[test], y[test])
            linears = [m for m in model if isinstance(m, nn.Linear)]
            for j, lin in enumerate(linears, start=1):
                W = lin.weight.detach().double().numpy()  # (out, in), as uploaded
                entry = diagnose_tensor(f"fc{j}", W, full=True)
                rows.append({"source": f"MLP w={width} {state}", "test_accuracy": acc, **entry})
        print(f"MLP w={width}: trained in {seconds:.1f} s")
    return rows


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown_table(rows: list[dict[str, Any]], command: str) -> str:
    head = (
        "| source | tensor | shape | α̂ multi [spread] | α̂ uni | q_mag ε=0.1 (Gauss) | q_mag ε²=0.1 (Gauss) "
        "| q_node ε²=0.1 (Gauss) | q_spec ε²=0.1 (Gauss) | test acc |\n" + "|---" * 10 + "|\n"
    )
    lines = []
    for r in rows:
        a, q, g = r["alpha"], r["q"], r["gaussian_reference"]
        spread = "" if a["spread"] is None else f" [{a['spread'][0]:.2f}, {a['spread'][1]:.2f}]"
        low = " (low conf.)" if r["low_confidence"] else ""
        acc = _fmt(r.get("test_accuracy"))
        lines.append(
            f"| {r['source']} | {r['name']}{low} | {r['rows']}×{r['cols']} "
            f"| {_fmt(a['multivariate'])}{spread} "
            f"| {_fmt(a['univariate'])} | {q['magnitude']['eps_0.1']:.3f} ({g['magnitude']['eps_0.1']:.3f}) "
            f"| {q['magnitude']['sq_eps_0.1']:.3f} ({g['magnitude']['sq_eps_0.1']:.3f}) "
            f"| {q['node']['sq_eps_0.1']:.3f} ({g['node']['sq_eps_0.1']:.3f}) "
            f"| {q['spectral']['sq_eps_0.1']:.3f} ({g['spectral']['sq_eps_0.1']:.3f}) | {acc} |"
        )
    return f"Generated by `{command}`.\n\n" + head + "\n".join(lines) + "\n"


def plot(synth: list[dict[str, Any]], mlps: list[dict[str, Any]], path_stem: Path) -> None:
    """Three panels: α̂ vs α (synthetic); magnitude curves; q_mag(ε=0.1) per MLP layer vs Gaussian."""
    plt.rcParams["svg.hashsalt"] = "netshrink"  # stable SVG ids
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    truth = [r["alpha_true"] for r in synth]
    ax = axes[0]
    ax.plot([1.4, 2.05], [1.4, 2.05], color="0.7", lw=1, label="α̂ = α")
    ax.plot(truth, [r["alpha"]["univariate"] for r in synth], "o", label="univariate (10⁶ entries)")
    ax.plot(
        truth, [r["alpha"]["multivariate"] for r in synth], "s", mfc="none", label="multivariate (2000 rows)"
    )
    ax.set(xlabel="true α", ylabel="α̂", title="MMO tail index on SαS matrices")
    ax.legend(fontsize=8)

    ax = axes[1]
    for r in synth:
        ax.plot(r["curves"]["kappa"], r["curves"]["magnitude"], label=r["source"])
    best = next(r for r in mlps if r["source"] == f"MLP w={WIDTHS[-1]} trained" and r["name"] == "fc1")
    ax.plot(best["curves"]["kappa"], best["curves"]["magnitude"], "k--", label=f"{best['source']} fc1")
    ax.axhline(0.1, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="kept fraction κ", ylabel="e_mag(κ)", title="Magnitude compressibility curves")
    ax.legend(fontsize=8)

    ax = axes[2]
    labels = [
        f"w{r['source'].split('w=')[1].split()[0]} {r['name']}" for r in mlps if r["source"].endswith("init")
    ]
    x = np.arange(len(labels))
    for k, state in enumerate(("init", "trained")):
        qs = [r["q"]["magnitude"]["eps_0.1"] for r in mlps if r["source"].endswith(state)]
        ax.bar(x + (k - 0.5) * 0.4, qs, width=0.4, label=state)
    ax.axhline(
        mlps[0]["gaussian_reference"]["magnitude"]["eps_0.1"], color="k", lw=1, ls="--", label="Gaussian"
    )
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="q_mag(ε = 0.1)", title="Digits MLPs 64→w→40→10: prunable fraction")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path_stem.with_suffix(".svg"), metadata={"Date": None})
    fig.savefig(path_stem.with_suffix(".png"), dpi=110, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Takes no options. Writes bench/results/heavy_tails.{md,json,svg,png}.",
    ).parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    synth = synthetic_rows()
    mlps = mlp_rows()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / "heavy_tails"
    table = markdown_table(synth + mlps, "python -m bench.heavy_tails")
    stem.with_suffix(".md").write_text(table, encoding="utf-8")
    slim = [{k: v for k, v in r.items() if k != "curves"} for r in synth + mlps]
    stem.with_suffix(".json").write_text(json.dumps(slim, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    plot(synth, mlps, stem)
    print(table)
    print(f"wrote {stem}.{{md,json,svg,png}} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
