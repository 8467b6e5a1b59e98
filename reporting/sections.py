"""The per-layer, diagnostics and budget sections of report.html (charts from ``reporting.charts``).

Ref: docs/method.md §1 (keep fraction, f, p, bits), §3 (per-layer bounds, prediction, advice),
§4 (heavy-tail diagnostics). Every section id is stable: tests and readers link to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netshrink.reporting import charts
from netshrink.reporting.fmt import DASH, esc, get, is_num, kv_table, nbytes, num, pct, table, text, yes_no
from netshrink.reporting.summary import TIERS


def _shape(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "×".join("?" if d is None else esc(d) for d in value)
    return DASH


def _layers_of(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [ly for ly in report.get("layers") or [] if isinstance(ly, Mapping)]


def _advice(layers: Sequence[Mapping[str, Any]]) -> str:
    items = []
    for ly in layers:
        a = ly.get("advice") or {}
        if not a:
            continue
        extra = [
            f"ε = {esc(a['epsilon'])}" if is_num(a.get("epsilon")) else "",
            f"min keep {pct(a['min_keep'], 0)}" if is_num(a.get("min_keep")) else "",
            f"min bits {esc(a['min_bits'])}" if is_num(a.get("min_bits")) else "",
        ]
        detail = ", ".join(x for x in extra if x)
        items.append(
            f"<li><strong>{text(ly.get('name'))}</strong>: {text(a.get('text'))}"
            + (f' <span class="muted">({detail})</span>' if detail else "")
            + "</li>"
        )
    if not items:
        return '<p class="note">No per-layer advice in this report.</p>'
    return (
        '<h3>Advice</h3><p class="muted">From tier T\'s relative term and the tolerance ε '
        "(docs/method.md §3, "
        "P1 Thm 2, 3, 6): the smallest keep probability and bit width each layer tolerates.</p>"
        f'<ul class="advice">{"".join(items)}</ul>'
    )


def _error_table(layers: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for ly in layers:
        e, bE = ly.get("measured_error"), get(ly, "bounds", "E", "cumulative")
        ratio = f"{num(bE / e, 3)}×" if is_num(e) and is_num(bE) and e > 0 else DASH
        rows.append(
            [
                f"<strong>{text(ly.get('name'))}</strong>",
                num(e),
                num(ly.get("prediction")),
                num(get(ly, "bounds", "E", "step")),
                *(num(get(ly, "bounds", t, "cumulative")) for t in TIERS),
                ratio,
            ]
        )
    return table(
        [
            "layer",
            "measured eₗ",
            "share of predicted E‖Φ−Φ̂‖² (not a bound)",
            "step bound, E",
            *(f"Bₗ, tier {t}" for t in TIERS),
            "Bₗ(E) / eₗ",
        ],
        rows,
        caption="Per-layer squared error E‖zₗ−ẑₗ‖² and bounds (null = not covered, see below)",
    )


def _method(ly: Mapping[str, Any]) -> str:
    if ly.get("compressed") is False:
        return "not compressed"
    m = ly.get("method") or {}
    parts = [f"{k}: {esc(v)}" for k, v in m.items() if v is not None]
    return "<br>".join(parts) if parts else DASH


def _settings_table(layers: Sequence[Mapping[str, Any]], analyze: bool) -> str:
    rows = []
    for ly in layers:
        inp, keep, bits = ly.get("inputs") or {}, ly.get("keep") or {}, ly.get("bits") or {}
        row = [
            f"<strong>{text(ly.get('name'))}</strong>",
            text(ly.get("kind")),
            _shape(ly.get("shape_before")),
        ]
        if not analyze:
            bit_txt = (
                f"{esc(bits['nominal'])} (container {esc(bits.get('container'))})"
                if is_num(bits.get("nominal"))
                else DASH
            )
            keep_txt = (
                " / ".join(pct(keep.get(k)) for k in ("target", "expected", "realized")) if keep else DASH
            )
            row += [
                _shape(ly.get("shape_after")),
                _method(ly),
                keep_txt,
                num(ly.get("f")),
                num(ly.get("p")),
                bit_txt,
            ]
        row += [num(inp.get("sigma")), num(inp.get("nu"))]
        if not analyze:
            row += [
                num(inp.get("Z2")),
                num(inp.get("L")),
                "<br>".join(esc(x) for x in ly.get("not_covered") or []) or DASH,
            ]
        rows.append(row)
    head = ["layer", "kind", "shape (out×in)"]
    if not analyze:
        head += [
            "shape after",
            "method",
            "keep: target / expected / realized",
            "f (randomized)",
            "p (keep prob.)",
            "bits",
        ]
    head += ["σ = ‖W‖ₒₚ", "ν = max|W|"]
    if not analyze:
        head += ["Z² = E‖ẑₗ₋₁‖²", "L (Lipschitz)", "not covered"]
    return table(head, rows, caption="Per-layer settings and bound inputs")


def layers_section(report: Mapping[str, Any]) -> str:
    """``<section id="layers">``: measured-vs-bound chart (log scale), advice, per-layer tables."""
    layers = _layers_of(report)
    analyze = report.get("kind") == "analyze"
    body = ["<h2>Per layer: advice</h2>" if analyze else "<h2>Per layer: measured error vs. bound</h2>"]
    if not layers:
        body.append('<p class="note">This report lists no layers.</p>')
        return '<section id="layers">' + "".join(body) + "</section>"
    if not analyze:
        body.append(
            '<p class="muted">eₗ = Eₓ‖zₗ − ẑₗ‖² is measured after the activation on the held-out '
            "split. The cumulative bound Bₗ = Lₗ²(σₗ² Bₗ₋₁ + Aₗ) bounds its expectation over the "
            "compression randomness (P1 Lemma 17, Prop. 20; docs/method.md §3); the step bound uses the "
            "measured upstream error and checks the layer alone. The per-layer prediction is this layer's "
            "share of the linearized prediction of the <em>output</em> error E‖Φ−Φ̂‖² (not of eₗ), and "
            "is not a bound.</p>"
        )
        chart = charts.bounds_chart(layers)
        body.append(
            f'<figure class="chart-box">{chart}</figure>'
            if chart
            else '<p class="note">No measured per-layer errors to plot.</p>'
        )
    body.append(_advice(layers))
    if not analyze:
        body.append(_error_table(layers))
    body.append(_settings_table(layers, analyze))
    return '<section id="layers">' + "".join(body) + "</section>"


def _q_table(d: Mapping[str, Any]) -> str:
    q, ref = d.get("q") or {}, d.get("gaussian_reference") or {}
    rows = [
        [
            esc(k),
            pct(get(q, k, "eps_0.1")),
            pct(get(q, k, "sq_eps_0.1")),
            pct(get(ref, k, "eps_0.1")),
            pct(get(ref, k, "sq_eps_0.1")),
        ]
        for k in ("magnitude", "node", "spectral")
    ]
    return table(
        ["curve", "q(ε = 0.1)", "q(ε² = 0.1)", "Gaussian ref. q(0.1)", "Gaussian ref. q(ε² = 0.1)"],
        rows,
        caption="Prunable fraction q(ε) = max{1 − κ : e(κ) ≤ ε}",
    )


def _alpha(d: Mapping[str, Any]) -> str:
    a = d.get("alpha") or {}
    spread = a.get("spread")
    spread_txt = (
        f"{num(spread[0])} – {num(spread[1])}" if isinstance(spread, Sequence) and len(spread) == 2 else DASH
    )
    return kv_table(
        [
            ("α̂ multivariate (MMO)", num(a.get("multivariate"))),
            ("α̂ univariate", num(a.get("univariate"))),
            ("spread over block sizes", spread_txt),
            ("rows × cols", f"{num(d.get('rows'))} × {num(d.get('cols'))}"),
        ]
    )


def diagnostics_section(report: Mapping[str, Any]) -> str:
    """``<section id="diagnostics">``: per weight tensor, curves + Gaussian reference, histogram with α̂."""
    diags = [d for d in report.get("diagnostics") or [] if isinstance(d, Mapping)]
    body = [
        "<h2>Heavy-tail diagnostics: how compressible are the weights?</h2>",
        '<p class="muted">Computed from the weights as uploaded '
        "(docs/method.md §4; Barsbey et al. 2021 [P2], "
        "Wan et al. 2024 [P3]). e(κ) is the relative ℓ2 error of keeping only the largest κ fraction of the "
        "entries (magnitude), rows (node) or singular values (spectral); the dotted grey curve is i.i.d. "
        "Gaussian weights. A curve below the reference, and a larger q(ε), mean more compressible. "
        "α̂ ≈ 2 is Gaussian-like; a lower α̂ means heavier tails. It is a diagnostic, not a pass/fail test."
        "</p>",
    ]
    if not diags:
        body.append('<p class="note">No diagnostics in this report.</p>')
    for i, d in enumerate(diags):
        low = (
            ' <span class="badge warn">low confidence: fewer than 64 rows</span>'
            if d.get("low_confidence")
            else ""
        )
        chart = charts.diagnostics_chart(d, i)
        body.append(
            f'<article class="diag" id="diag-{i}"><h3>{text(d.get("name"))}{low}</h3>'
            + (f'<figure class="chart-box">{chart}</figure>' if chart else "")
            + f'<div class="two">{_q_table(d)}{_alpha(d)}</div></article>'
        )
    return '<section id="diagnostics">' + "".join(body) + "</section>"


def _chosen(chosen: Mapping[str, Any]) -> str:
    if not chosen:
        return DASH
    keep, bits = chosen.get("keep"), chosen.get("bits")
    if isinstance(keep, Mapping) or isinstance(bits, Mapping):  # per-layer search
        parts = [f"{text(n)}: {num(b)} bits" for n, b in (bits or {}).items()]
        parts += [f"{text(n)}: keep {num(k)}" for n, k in (keep or {}).items()]
        return "; ".join(parts) or "nothing compressed"
    return f"keep {num(keep)}, {num(bits)} bits"


def sweep_section(report: Mapping[str, Any]) -> str:
    """``<section id="sweep">``: the budget search's keep-fraction/bits sweep, when it ran."""
    budget = report.get("budget")
    body = ["<h2>Budget search</h2>"]
    if not isinstance(budget, Mapping):
        body.append('<p class="note">No budget search ran (no error target was set).</p>')
        return '<section id="sweep">' + "".join(body) + "</section>"
    target, chosen = budget.get("target") or {}, budget.get("chosen") or {}
    limit = (
        f"≤ {num(target['max'])}"
        if is_num(target.get("max"))
        else f"≥ {num(target['min'])}"
        if is_num(target.get("min"))
        else ""
    )
    body.append(
        kv_table(
            [
                ("target", f"{text(target.get('metric'))} {limit}"),
                ("met", yes_no(budget.get("met"))),
                ("chosen", _chosen(chosen)),
            ]
        )
    )
    per_layer = [r for r in budget.get("layers") or [] if isinstance(r, Mapping)]
    if per_layer:
        rows_l = [
            [
                text(r.get("name")),
                num(r.get("bits")) if r.get("bits") else "float32",
                num(r.get("keep")),
                text(r.get("granularity")),
                num(r.get("predicted_mse")),
            ]
            for r in per_layer
        ]
        body.append(
            table(
                ["layer", "bits", "keep", "granularity", "predicted E‖ΔΦ‖²"],
                rows_l,
                caption="The chosen setting per layer",
            )
        )
    chart = charts.sweep_chart(budget)
    if chart:
        body.append(f'<figure class="chart-box">{chart}</figure>')
    trace = [t for t in budget.get("trace") or [] if isinstance(t, Mapping)]
    if trace:
        mixed = any("setting" in t for t in trace)
        rows = [
            [
                *([text(t.get("setting"))] if mixed else [num(t.get("keep")), num(t.get("bits"))]),
                num(t.get("predicted")),
                num(t.get("measured")),
                nbytes(t.get("bytes")),
                yes_no(t.get("meets")),
            ]
            for t in trace
        ]
        body.append(
            table(
                [
                    *(["setting"] if mixed else ["keep", "bits"]),
                    "predicted",
                    "measured",
                    "bytes",
                    "meets target",
                ],
                rows,
                caption="Every setting the search tried (predicted = linearized prediction)",
            )
        )
    return '<section id="sweep">' + "".join(body) + "</section>"
