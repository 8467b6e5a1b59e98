"""The short summary table printed after a compress/submit run (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def summary_table(report: dict[str, Any]) -> Table:
    """Bytes, ratio, measured error vs bound, prediction, agreement and budget, from a report dict."""
    s = report.get("summary") or {}
    t = Table(title=f"netshrink {report.get('kind', 'compress')} summary", show_header=True)
    t.add_column("measure")
    t.add_column("value", justify="right")
    b = s.get("bytes") or {}
    before, after = (b.get("before") or {}).get("total"), (b.get("after") or {}).get("total")
    if report.get("kind") == "analyze":
        t.add_row("bytes (nothing compressed)", _fmt(before))
        t.add_row("layers analyzed", str(len(report.get("layers") or [])))
    else:
        t.add_row("bytes before → after", f"{_fmt(before)} → {_fmt(after)}")
    if b.get("ratio") is not None:
        t.add_row("compression ratio", f"{b['ratio']:.2f}×")
    err = s.get("error") or {}
    if err:
        split = (s.get("evaluation") or {}).get("split")
        where = "fitted samples: no held-out split" if split == "none" else "held-out"
        t.add_row(f"relative output error ({where})", _fmt(err.get("relative_l2")))
        t.add_row("p95 / max per-sample error", f"{_fmt(err.get('p95'))} / {_fmt(err.get('max'))}")
        ort = (err.get("onnxruntime") or {}).get("default") or {}
        if ort:
            t.add_row("relative error in onnxruntime", _fmt(ort.get("relative_l2")))
    bounds = s.get("bounds") or {}
    e = bounds.get("E") or {}
    if e:
        delta = s.get("delta")
        t.add_row("bound, tier E, on the mean over draws (relative)", _fmt(e.get("relative")))
        if e.get("measured_over_bound") is not None:
            t.add_row("this draw / mean bound (squared error)", f"{e['measured_over_bound']:.2f}×")
        if delta is not None and e.get("holds") is not None:
            label = f"within the {1 - delta:.0%}-probability bound B/δ"
            t.add_row(label, _fmt(e.get("holds")))
    w = bounds.get("W") or {}
    if e.get("value") is None and w.get("value") is not None:  # compensated: only tier W bounds the file
        t.add_row("bound, tier W, every draw (relative)", _fmt(w.get("relative")))
        t.add_row("within the tier-W bound", _fmt(w.get("holds")))
    if s.get("compensated_layers"):
        t.add_row("compensated layers (tier W only)", str(len(s["compensated_layers"])))
    pred = s.get("prediction") or {}
    if pred:
        t.add_row("prediction (not a bound)", _fmt(pred.get("relative_l2")))
    cls = s.get("classification") or {}
    if cls.get("top1_agreement") is not None:
        t.add_row("top-1 agreement", _fmt(cls["top1_agreement"], ".3f"))
    if cls.get("accuracy_after") is not None:
        t.add_row("accuracy before → after", f"{cls['accuracy_before']:.3f} → {cls['accuracy_after']:.3f}")
    if s.get("budget_met") is not None:
        t.add_row("error budget met", _fmt(s["budget_met"]))
    return t


def analyze_table(report: dict[str, Any]) -> Table:
    """Per layer: shape, tail index α̂, prunable fraction q(ε = 0.1) against the Gaussian reference,
    and the advice (smallest safe bits / keep fraction), from an analyze (or compress) report."""
    diags = {d.get("name"): d for d in report.get("diagnostics") or []}
    t = Table(title="per layer: what analyze found", show_header=True)
    for col in ("layer", "shape", "α̂ (rows / entries)", "q_mag(ε=0.1) vs Gaussian", "min bits", "min keep"):
        t.add_column(col, justify="left" if col in ("layer", "shape") else "right")
    for layer in report.get("layers") or []:
        d = diags.get(layer.get("name")) or {}
        alpha = d.get("alpha") or {}
        q = ((d.get("q") or {}).get("magnitude") or {}).get("eps_0.1")
        ref = ((d.get("gaussian_reference") or {}).get("magnitude") or {}).get("eps_0.1")
        adv = layer.get("advice") or {}
        low = " (low confidence)" if d.get("low_confidence") else ""
        t.add_row(
            str(layer.get("name")),
            "×".join(str(n) for n in layer.get("shape_before") or []),
            f"{_fmt(alpha.get('multivariate'), '.2f')} / {_fmt(alpha.get('univariate'), '.2f')}{low}",
            f"{_fmt(q, '.3f')} vs {_fmt(ref, '.3f')}",
            _fmt(adv.get("min_bits")),
            _fmt(adv.get("min_keep"), ".3f"),
        )
    return t


def print_summary(report: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        console = Console(width=max(console.width, 110))  # a pipe defaults to 80 columns: no wrapping
    console.print(summary_table(report))
    if report.get("kind") == "analyze":
        console.print(analyze_table(report))
        console.print(
            "α̂ ≈ 2 is Gaussian-like, lower means heavier tails (more compressible); q(ε) is the fraction "
            "of entries that can go at 10 % relative weight error; min bits / keep: P1's width advice "
            "at ε = 0.1 (docs/method.md §3-§4)."
        )
