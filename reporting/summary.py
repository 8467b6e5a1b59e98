"""The summary section of report.html: the verdict in one paragraph, four cards, then the detail.

Ref: docs/method.md §2 (what "error" means, which inputs), §3 (tiers, Markov caveat, loss bound),
§5 (bytes measured from the artifact, onnxruntime with and without graph optimizations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netshrink.reporting.fmt import (
    DASH,
    esc,
    get,
    human_bytes,
    is_num,
    kv_table,
    nbytes,
    num,
    pct,
    table,
    text,
    yes_no,
)

TIERS = ("E", "T", "P", "W")
TIER_MEANING = {
    "E": "exact in expectation, data-dependent (derived from P1 Lemma 17)",
    "T": "tight, weight-aggregated (derived)",
    "P": "paper bound, P1 Prop. 18–20",
    "W": "worst case, holds for every draw (derived)",
}


def _state(flag: Any) -> str:
    """The card's CSS state for a tri-state flag: good (True), warn (False), neutral (null)."""
    return "good" if flag is True else "warn" if flag is False else ""


def _card(title: str, value: str, detail: str, cls: str = "") -> str:
    return (
        f'<div class="card {cls}"><div class="card-title">{esc(title)}</div>'
        f'<div class="card-value">{value}</div><div class="card-detail">{detail}</div></div>'
    )


def _verdict(report: Mapping[str, Any]) -> str:
    s = report.get("summary") or {}
    ratio, tier = get(s, "bytes", "ratio"), get(s, "bound_holds", "tier") or "E"
    parts: list[str] = []
    if is_num(ratio):
        parts.append(
            f"The compressed model is <strong>{num(ratio, 3)}× smaller</strong> "
            f"({human_bytes(get(s, 'bytes', 'before', 'total'))} → "
            f"{human_bytes(get(s, 'bytes', 'after', 'total'))})."
        )
    rel = get(s, "error", "relative_l2")
    if is_num(rel):
        parts.append(
            f"On {_measured_on(s.get('evaluation') or {})}, its logits moved by "
            f"<strong>{pct(rel)}</strong> (relative L2)."
        )
        brel = get(s, "bounds", tier, "relative")
        if is_num(brel):
            parts.append(_bound_sentence(s, tier, brel))
    met = s.get("budget_met")
    if met is not None:
        parts.append(
            "The error budget was <strong>met</strong>."
            if met
            else "The error budget was <strong>not met</strong>."
        )
    agree = get(s, "classification", "top1_agreement")
    if is_num(agree):
        parts.append(f"The top-1 prediction is unchanged on {pct(agree)} of the samples.")
    if not parts:
        parts.append(
            "This is an <strong>analyze</strong> report: nothing was compressed, so there is no measured "
            "error, bound or budget. The model as uploaded has "
            f"{num(get(s, 'params', 'before'))} parameters in "
            f"{human_bytes(get(s, 'bytes', 'before', 'total'))}; the per-layer advice and the heavy-tail "
            "diagnostics below say how compressible it is."
        )
    return f'<p class="verdict">{" ".join(parts)}</p>'


def _measured_on(ev: Mapping[str, Any]) -> str:
    """Which samples produced the headline figures: the held-out split, named with its size."""
    n, fit, inputs = ev.get("samples_holdout"), ev.get("samples_fit"), text(ev.get("inputs"))
    if not n:
        return "the inputs"
    if ev.get("split") == "none":
        return (
            f"all {num(n)} {inputs} samples (no held-out split: the same ones were fitted, so the "
            "figures are optimistic; a split needs 50 samples and a holdout_fraction above 0)"
        )
    others = f"; {num(fit)} others were used for fitting" if fit else ""
    return f"the {num(n)} held-out {inputs} samples{others}"


def _bound_sentence(s: Mapping[str, Any], tier: str, brel: float) -> str:
    """What the bound says about THIS draw: the (1−δ) statement B/δ, and where it sits against B."""
    bh = s.get("bound_holds") or {}
    delta, holds, ratio = bh.get("delta", s.get("delta")), bh.get("holds"), bh.get("measured_over_mean_bound")
    if tier == "W":  # a compensated file: tier W bounds every draw; tier E is the uncompensated twin's
        out = f"The theory (tier W) bounds <em>every draw</em> by <strong>{pct(brel)}</strong>"
        if is_num(ratio):
            out += f"; this draw's squared error is {num(ratio, 2)}× that bound"
        if s.get("compensated_layers"):
            out += (
                "; tier E does not apply to the compensated layers (the uncompensated draw's tier-E "
                "bound is in the report's summary.compensation)"
            )
        return out + "."
    out = f"The theory (tier {esc(tier)}) bounds the <em>mean over draws</em> by <strong>{pct(brel)}</strong>"
    if is_num(ratio):
        out += f"; this draw's squared error is {num(ratio, 2)}× that mean bound"
    if tier != "W" and is_num(delta) and holds is not None:
        conf = pct(1 - delta, 0)
        out += (
            f", and it is {'within' if holds else 'ABOVE'} the {conf}-probability bound B/δ "
            f"(a draw exceeds B/δ with probability at most {pct(delta, 0)})"
        )
    return out + "."


def _cards(s: Mapping[str, Any]) -> str:
    b = s.get("bytes") or {}
    tier = get(s, "bound_holds", "tier") or "E"
    ratio = b.get("ratio")
    cards = [
        _card(
            "Size",
            f"{num(ratio, 3)}×" if is_num(ratio) else human_bytes(get(b, "before", "total")),
            f"{human_bytes(get(b, 'before', 'total'))} → {human_bytes(get(b, 'after', 'total'))}",
        )
    ]
    rel, brel = get(s, "error", "relative_l2"), get(s, "bounds", tier, "relative")
    holds = get(s, "bound_holds", "holds")
    cards.append(
        _card(
            "Output error (relative L2)",
            pct(rel),
            f"bound, tier W: ≤ {pct(brel)} for every draw; this draw {yes_no(holds, 'within', 'above')}"
            if tier == "W"
            else f"bound, tier {esc(tier)}: ≤ {pct(brel)} in expectation; this draw "
            f"{yes_no(holds, 'within B/δ', 'above B/δ')}",
            _state(holds),
        )
    )
    met = s.get("budget_met")
    cards.append(
        _card(
            "Error budget",
            "met" if met is True else "not met" if met is False else "no target",
            "see the budget search below" if met is not None else "no target was set",
            _state(met),
        )
    )
    cls = s.get("classification") or {}
    cards.append(
        _card(
            "Top-1 agreement",
            pct(cls.get("top1_agreement")),
            f"accuracy {pct(cls.get('accuracy_before'))} → {pct(cls.get('accuracy_after'))}"
            if is_num(cls.get("accuracy_before"))
            else "accuracy: no labels given",
        )
    )
    return f'<div class="cards">{"".join(cards)}</div>'


def _bytes_table(s: Mapping[str, Any], *, after_column: bool = True) -> str:
    before, after = get(s, "bytes", "before") or {}, get(s, "bytes", "after") or {}
    dtypes = list(dict.fromkeys([*(before.get("by_dtype") or {}), *(after.get("by_dtype") or {})]))
    rows = [[esc(d), nbytes(get(before, "by_dtype", d)), nbytes(get(after, "by_dtype", d))] for d in dtypes]
    rows.append(["<strong>total (file)</strong>", nbytes(before.get("total")), nbytes(after.get("total"))])
    if not after_column:
        return table(["dtype", "bytes"], [r[:2] for r in rows], caption="Bytes by dtype, as uploaded")
    return table(
        ["dtype", "before", "after"], rows, caption="Bytes by dtype, measured from the artifact files"
    )


def _error_table(s: Mapping[str, Any]) -> str:
    e = s.get("error") or {}
    rows = [
        [
            "core (float64)",
            pct(e.get("relative_l2"), 2),
            num(e.get("mse")),
            pct(e.get("p95"), 2),
            pct(e.get("max"), 2),
        ]
    ]
    for key, label in (
        ("default", "onnxruntime, default optimizations (what users get)"),
        ("no_optimizations", "onnxruntime, ORT_DISABLE_ALL (comparable with the bound)"),
    ):
        o = get(e, "onnxruntime", key)
        if isinstance(o, Mapping):
            rows.append(
                [
                    esc(label),
                    pct(o.get("relative_l2"), 2),
                    num(o.get("mse")),
                    pct(o.get("p95"), 2),
                    pct(o.get("max"), 2),
                ]
            )
    pred = s.get("prediction") or {}
    if pred:
        rows.append(
            [
                text(pred.get("label") or "linearized prediction (not a bound)"),
                pct(pred.get("relative_l2"), 2),
                num(pred.get("mse")),
                DASH,
                DASH,
            ]
        )
    return table(
        ["measured on", "relative L2", "E‖Φ−Φ̂‖²", "p95 r(x)", "max r(x)"],
        rows,
        caption="Output error on the logits Φ (r(x) = ‖Φ(x)−Φ̂(x)‖ / √E‖Φ‖²)",
    )


def _bounds_table(s: Mapping[str, Any]) -> str:
    bounds = s.get("bounds") or {}
    rows = []
    for tier in TIERS:
        b = bounds.get(tier) or {}
        rows.append(
            [
                f"<strong>{tier}</strong>",
                esc(TIER_MEANING[tier]),
                num(b.get("value")),
                pct(b.get("relative")),
                num(b.get("probability_bound")),
                yes_no(b.get("holds"), "holds", "fails"),
                num(b.get("measured_over_bound"), 2),
            ]
        )
    delta = s.get("delta")
    prob = f"(1−δ)-probability bound B/δ, δ = {delta}" if is_num(delta) else "(1−δ)-probability bound B/δ"
    return table(
        [
            "tier",
            "what it is",
            "Bₘ = bound on E‖Φ−Φ̂‖² (mean over draws)",
            "relative √(Bₘ/E‖Φ‖²)",
            prob,
            "this draw: measured ≤ B/δ (W: ≤ Bₘ)",
            "measured / Bₘ",
        ],
        rows,
        caption="End-to-end bounds (a null tier is listed under “not covered”)",
    )


def _caveat(s: Mapping[str, Any]) -> str:
    caveat = s.get("markov_caveat")
    delta = s.get("delta")
    if not caveat and not is_num(delta):
        return ""
    d = (
        f" Here δ = {esc(delta)}: with probability at least {pct(1 - delta, 0)} a single draw stays "
        "below B/δ."
        if is_num(delta)
        else ""
    )
    return f'<aside class="caveat"><strong>Read the bounds with care.</strong> {text(caveat)}{d}</aside>'


def _context(s: Mapping[str, Any]) -> str:
    ev, lb, lat = s.get("evaluation") or {}, s.get("loss_bound") or {}, s.get("latency_ms") or {}
    rows = [
        ("inputs", text(ev.get("inputs"))),
        ("split", text(ev.get("split"))),
        ("samples (fit / held out)", f"{num(ev.get('samples_fit'))} / {num(ev.get('samples_holdout'))}"),
        ("synthetic input scale", num(ev.get("scale"))),
        ("params before → after", f"{num(get(s, 'params', 'before'))} → {num(get(s, 'params', 'after'))}"),
    ]
    if lb:
        rows.append(
            (
                "loss bound (P1): L(Φ̂) ≤ L(Φ) + 2√(L(Φ)·B) + B",
                f"L(Φ) = {num(lb.get('loss_before'))}, L(Φ̂) = {num(lb.get('loss_after'))}, "
                f"bound = {num(lb.get('bound'))}",
            )
        )
    else:
        rows.append(("loss bound (P1)", "not computed (needs labels)"))
    if lat:
        rows.append(
            (
                "latency per batch",
                f"{num(lat.get('before'))} ms → {num(lat.get('after'))} ms "
                f"({text(lat.get('device'))}, batch {num(lat.get('batch'))})",
            )
        )
    return kv_table(rows, caption="How it was measured")


def summary_section(report: Mapping[str, Any]) -> str:
    """``<section id="summary">``: verdict, cards, bytes, error, bounds, Markov caveat, inputs."""
    s = report.get("summary") or {}
    body = [
        f'<aside class="caveat"><strong>Warning.</strong> {text(w)}</aside>' for w in s.get("warnings") or []
    ]
    body.append(_verdict(report))
    if report.get("kind") == "analyze":
        body.append(_bytes_table(s, after_column=False))
    else:
        body += [
            _cards(s),
            '<div class="two">',
            _bytes_table(s),
            _context(s),
            "</div>",
            _error_table(s),
            _bounds_table(s),
            _caveat(s),
        ]
    return '<section id="summary"><h2>Summary</h2>' + "".join(body) + "</section>"
