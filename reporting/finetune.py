"""The ``finetune`` report's page: original, plain-fine-tuned and noise-fine-tuned models side by side.

Ref: [P3] Wan et al. 2024 (heavy-tailed noise makes hidden units prunable); docs/method.md §4. Three
charts in one row, each drawing the three models: accuracy against the neuron/channel prune
fraction (with the ≤ tolerance line), and the magnitude and node compressibility curves e(κ) of
the largest hidden layer. Tables give accuracy, the prunable fraction, α̂ and q(ε) per layer, the
per-epoch history and the σ sweep. Deterministic like ``html.render_html``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib import rc_context

from netshrink.reporting.charts import _RC, _figure, _short, _svg
from netshrink.reporting.fmt import esc, get, kv_table, nbytes, num, table, text

MODELS = (
    ("original", {"color": "#555555", "linestyle": ":", "marker": "o"}),
    ("plain", {"color": "#0072B2", "linestyle": "--", "marker": "s"}),
    ("noise", {"color": "#D55E00", "linestyle": "-", "marker": "^"}),
)


def _models(ft: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    arms = ft.get("arms") or {}
    return {
        "original": ft.get("original") or {},
        "plain": arms.get("plain") or {},
        "noise": arms.get("noise") or {},
    }


def _focus_layer(models: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The hidden layer with the most rows (the one P3's effect is largest on), by name."""
    layers = [ly for ly in models["original"].get("layers") or [] if ly.get("hidden")]
    if not layers:
        return None
    return str(
        max(layers, key=lambda ly: len(get(ly, "curves", "kappa") or []) and ly.get("name") or "")["name"]
    )


def finetune_chart(ft: Mapping[str, Any]) -> str | None:
    """Three panels: accuracy vs prune fraction; magnitude and node curves of the focus layer."""
    models = _models(ft)
    focus = _focus_layer(models)
    tol = ft.get("tolerance_points")
    with rc_context(_RC):
        fig = _figure(13.5, 3.8)
        ax_p, ax_m, ax_n = fig.subplots(1, 3)
        for name, style in MODELS:
            pr = models[name].get("prune") or {}
            xs, ys = pr.get("fractions") or [], pr.get("accuracy") or []
            if xs and len(xs) == len(ys):
                pf = pr.get("prunable_fraction")
                label = f"{name} (prunable {pf:.3f})" if isinstance(pf, (int, float)) else name
                ax_p.plot(xs, ys, markersize=3, linewidth=1.4, label=label, **style)
            layer = next((ly for ly in models[name].get("layers") or [] if ly.get("name") == focus), None)
            curves = (layer or {}).get("curves") or {}
            kappa = curves.get("kappa") or []
            for ax, key in ((ax_m, "magnitude"), (ax_n, "node")):
                if kappa and len(curves.get(key) or []) == len(kappa):
                    ax.plot(
                        kappa,
                        curves[key],
                        linewidth=1.5,
                        label=name,
                        color=style["color"],
                        linestyle=style["linestyle"],
                    )
        base = get(models["original"], "accuracy")
        if isinstance(base, (int, float)) and isinstance(tol, (int, float)):
            ax_p.axhline(base - tol, color="#999999", linewidth=0.8, linestyle="--")
        ax_p.set_xlabel("neuron/channel prune fraction (smallest norms first)")
        ax_p.set_ylabel("validation accuracy (%)")
        ax_p.set_title("accuracy after structured pruning")
        ax_p.legend(loc="lower left", fontsize=7, frameon=True, framealpha=0.9, edgecolor="none")
        for ax, key in ((ax_m, "magnitude"), (ax_n, "node")):
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(0.0, 1.02)
            ax.set_xlabel("kept fraction κ (largest first)")
            ax.set_ylabel("relative ℓ2 error e(κ)")
            ax.set_title(f"{_short(str(focus))}: {key} curve")
            ax.axhline(0.1, color="#999999", linewidth=0.8, linestyle="--")
            ax.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.9, edgecolor="none")
        return _svg(
            fig, "finetune", "Original, plain and noise fine-tuned models: prune curves and compressibility"
        )


def _summary_table(ft: Mapping[str, Any]) -> str:
    rows = []
    for name, m in _models(ft).items():
        pr = m.get("prune") or {}
        rows.append(
            [
                f"<strong>{esc(name)}</strong>",
                num(m.get("accuracy")),
                num(m.get("loss")),
                num(pr.get("prunable_fraction")),
            ]
        )
    tol = num(ft.get("tolerance_points"))
    return table(
        ["model", "validation accuracy (%)", "validation loss", f"prunable fraction (≤ {tol} pt drop)"],
        rows,
        caption="The three models on the same validation split",
    )


def _layer_table(ft: Mapping[str, Any]) -> str:
    rows = []
    models = _models(ft)
    for i, ly in enumerate(models["original"].get("layers") or []):
        cells = [text(ly.get("name")) + (" (hidden)" if ly.get("hidden") else " (classifier)")]
        for name in ("original", "plain", "noise"):
            other = (models[name].get("layers") or [{}] * (i + 1))[i]
            cells.append(
                f"α̂ {num(get(other, 'alpha', 'multivariate'))}"
                f" · q_mag {num(get(other, 'q', 'magnitude', 'eps_0.1'))}"
                f" · q_node {num(get(other, 'q', 'node', 'eps_0.1'))}"
            )
        rows.append(cells)
    return table(
        ["layer", "original", "plain", "noise"],
        rows,
        caption="Tail index α̂ (multivariate) and prunable fraction q at ε = 0.1, per layer, before and after",
    )


def _history_table(ft: Mapping[str, Any]) -> str:
    arms = ft.get("arms") or {}
    plain, noise = get(arms, "plain", "history") or [], get(arms, "noise", "history") or []
    rows = [
        [
            num(p.get("epoch")),
            num(p.get("loss")),
            num(p.get("accuracy")),
            num(n.get("loss")),
            num(n.get("accuracy")),
        ]
        for p, n in zip(plain, noise, strict=False)
    ]
    return table(
        ["epoch", "plain: train loss", "plain: val. accuracy", "noise: train loss", "noise: val. accuracy"],
        rows,
        caption="Per epoch, same seed and batch order in both arms",
    )


def _sweep_table(ft: Mapping[str, Any]) -> str:
    sweep: Sequence[Mapping[str, Any]] = ft.get("sweep") or []
    if not sweep:
        return ""
    rows = [
        [
            num(r.get("sigma")),
            "diverged" if r.get("diverged") else num(r.get("accuracy")),
            num(r.get("prunable_fraction")),
        ]
        for r in sweep
    ]
    rule = text(get(ft, "selection", "rule"))
    return "<h3>σ sweep</h3>" + table(
        ["σ", "accuracy (%)", "prunable fraction"], rows, caption=f"Kept: {rule}"
    )


def finetune_page(report: Mapping[str, Any], css: str, footer: str) -> str:
    """The whole page for a ``finetune`` report."""
    ft = report.get("finetune") or {}
    noise = ft.get("noise") or {}
    models = _models(ft)
    pf = {k: get(m, "prune", "prunable_fraction") for k, m in models.items()}
    verdict = (
        f"Noise arm: prunable fraction {num(pf['noise'])} against {num(pf['plain'])} for plain fine-tuning "
        f"and {num(pf['original'])} for the original, at ≤ {num(ft.get('tolerance_points'))} accuracy points."
    )
    chart = finetune_chart(ft) or ""
    data = report.get("data") or {}
    setup = kv_table(
        [
            (
                "noise",
                f"α = {num(noise.get('alpha'))}, σ = {num(noise.get('sigma'))}, η = {num(noise.get('eta'))} "
                f"(σ·η^(1/α) = {num(noise.get('scale'))}); {text(noise.get('type'))}",
            ),
            ("hidden layers (noisy)", text(", ".join(ft.get("hidden_layers") or []))),
            (
                "training / validation samples",
                f"{num(data.get('train_samples'))} / {num(data.get('validation_samples'))} "
                f"({text(data.get('validation_source'))})",
            ),
        ],
        caption="Setup",
    )
    follow = report.get("compress")
    follow_html = ""
    if isinstance(follow, Mapping):
        after = get(follow, "summary", "bytes", "after", "total")
        follow_html = (
            "<h2>Follow-up compression of the noise model</h2>"
            f"<p>relative output error {num(get(follow, 'summary', 'error', 'relative_l2'))}, "
            f"bytes after {nbytes(after)} (see the compressed_* artifacts).</p>"
        )
    repro = report.get("reproducibility") or {}
    spec = json.dumps(repro.get("spec"), indent=2, sort_keys=True, ensure_ascii=False, default=str)
    body = (
        "<header><h1>netshrink finetune report</h1>"
        f'<p class="sub">{text(get(report, "model", "format"))} model · '
        f"{num(get(report, 'model', 'n_params'))} parameters · seed {num(repro.get('seed'))} · "
        f"device {text(repro.get('device'))}</p></header>"
        f'<section id="summary"><p class="verdict">{verdict}</p>{_summary_table(ft)}{setup}</section>'
        f'<section id="curves"><h2>Original, plain and noise, side by side</h2>'
        f'<figure class="chart-box">{chart}</figure></section>'
        f'<section id="layers"><h2>Heavy tails per layer</h2>{_layer_table(ft)}</section>'
        f'<section id="training"><h2>Training</h2>{_history_table(ft)}{_sweep_table(ft)}</section>'
        f"{follow_html}"
        f'<section id="reproducibility"><h2>Reproducibility</h2><pre>{esc(spec)}</pre></section>'
    )
    title = f"netshrink finetune report — {get(report, 'model', 'format') or 'model'}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{css}</style></head>"
        f"<body><main>{body}{footer}</main></body></html>\n"
    )
