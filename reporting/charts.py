"""The report's charts: matplotlib (Agg canvas, no pyplot state), each rendered to an inline ``<svg>`` string.

Every chart is deterministic: ``svg.hashsalt`` is fixed per chart (which also keeps the element ids of
different charts on one page distinct) and the SVG carries no date. Text stays text
(``svg.fonttype = none``) and mathtext is off, so a layer name such as ``$x$`` or ``<script>`` is drawn
literally; matplotlib's SVG writer XML-escapes it.

Colours follow the Okabe–Ito colour-blind-safe palette, and every series also differs by marker or
line style, so nothing depends on colour alone.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib import rc_context, rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.markers import TICKLEFT, TICKRIGHT
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

from netshrink.reporting.gaussian import gaussian_magnitude_curve

# Okabe & Ito (2008), "Color Universal Design".
TIER_STYLE: dict[str, dict[str, Any]] = {
    "E": {"color": "#0072B2", "marker": "s", "label": "bound, tier E (exact, data-dependent)"},
    "T": {"color": "#009E73", "marker": "^", "label": "bound, tier T (weight-aggregated)"},
    "P": {"color": "#CC79A7", "marker": "D", "label": "bound, tier P (P1's paper constant)"},
    "W": {"color": "#D55E00", "marker": "v", "label": "bound, tier W (worst case, every draw)"},
}
CURVE_STYLE: dict[str, dict[str, Any]] = {
    "magnitude": {"color": "#0072B2", "linestyle": "-", "label": "magnitude (entries)"},
    "node": {"color": "#E69F00", "linestyle": "--", "label": "node (row norms)"},
    "spectral": {"color": "#009E73", "linestyle": "-.", "label": "spectral (singular values)"},
}
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    # a fixed title height: matplotlib otherwise measures the top ticks on each draw to place it
    # (no top ticks or spine here, so the title sits where it would anyway)
    "axes.titley": 1.0,
}


def _svg(fig: Figure, salt: str, label: str) -> str:
    """Serialize ``fig`` to an SVG element without the XML prolog, deterministically."""
    buf = io.StringIO()
    with rc_context({**_RC, "svg.hashsalt": f"netshrink-{salt}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg") :], count=1, flags=re.DOTALL)
    # matplotlib numbers its element ids per figure (axes_1, line2d_1, ...): prefix every id and every
    # internal reference so that several charts inline in one page never share an id.
    svg = re.sub(r'(\bid="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{salt}-{m.group(2)}", svg)
    aria = html.escape(label, quote=True)
    return svg.replace("<svg", f'<svg role="img" aria-label="{aria}" class="chart" id="chart-{salt}"', 1)


def _figure(width_in: float, height_in: float, margins: Mapping[str, float] | None = None) -> Figure:
    """A figure on its own Agg canvas. ``margins`` (``subplots_adjust`` fractions) fix the layout;
    without them matplotlib's constrained layout places the axes (adaptive, but it measures every
    text box on each draw: half a chart's rendering time, so the report's charts pass fixed margins).
    """
    with rc_context(_RC):
        fig = Figure(figsize=(width_in, height_in), dpi=72, layout=None if margins else "constrained")
        if margins:
            fig.subplots_adjust(**margins)
    FigureCanvasAgg(fig)  # the Agg canvas, attached explicitly: no pyplot, no global backend switch
    return fig


# Fixed margins (figure fractions) of the report's charts, measured from matplotlib's constrained
# layout on the sample and the 17M-MLP reports and widened for longer tick labels: room for the y
# label and tick labels on the left, and for the legend outside the axes on the right.
_BOUNDS_MARGINS = {"left": 0.085, "right": 0.68, "bottom": 0.12, "top": 0.92}
_DIAG_MARGINS = {"left": 0.065, "right": 0.99, "bottom": 0.14, "top": 0.88, "wspace": 0.25}
_SWEEP_MARGINS = {"left": 0.085, "right": 0.81, "bottom": 0.13, "top": 0.92}


def _plain_log_ticks(ax: Axes) -> None:
    """Log-axis tick labels as plain numbers (0.01, 1, 100): mathtext is off, so no ``10^{k}`` markup."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _minor_log_marks(ax: Axes) -> None:
    """The y axis's unlabelled minor ticks (2·10ᵏ … 9·10ᵏ on a log axis) as ONE line of tick markers.

    matplotlib makes a ``Tick`` (three lines and two texts, its properties deep-copied) for each
    minor tick: on the report's log axes, two thirds of all its ticks and half of report.html's
    rendering time. The marks are the same (the axis's own minor locations within the view, the
    ``ytick.minor`` size, width and colour, outward on the left spine); the y limits are frozen first,
    so the marks cannot move them. Call once the chart's data and limits are final.
    """
    ax.set_ylim(ax.get_ylim())  # autoscaled now, fixed from here on
    to_axis = ax.yaxis.get_transform()  # data -> the scale's space (log10 here)
    lo, hi = sorted(float(v) for v in to_axis.transform(ax.get_ylim()))
    tol = 1e-10 * (hi - lo)  # matplotlib's own test for a tick inside the view
    minor = ax.yaxis.get_minorticklocs()  # (n,) without those on a major tick
    locs = [
        float(v) for v, t in zip(minor, to_axis.transform(minor), strict=True) if lo - tol <= t <= hi + tol
    ]
    ax.yaxis.set_minor_locator(NullLocator())
    color = rcParams["ytick.color"]
    marker: Any = {"out": TICKLEFT, "in": TICKRIGHT, "inout": "_"}[rcParams["ytick.direction"]]
    marks = Line2D(
        [0.0] * len(locs),
        locs,
        transform=ax.get_yaxis_transform("tick1"),
        linestyle="none",
        marker=marker,
        markersize=rcParams["ytick.minor.size"],
        markeredgewidth=rcParams["ytick.minor.width"],
        color=color,
        markeredgecolor=color,
        zorder=Line2D.zorder,
        clip_on=False,
    )
    ax.add_artist(marks)


def _positive(values: Sequence[Any]) -> list[float]:
    """Values for a log axis: null or non-positive entries become NaN (a gap, never a fake zero)."""
    return [
        float(v) if isinstance(v, (int, float)) and v > 0 and math.isfinite(v) else math.nan for v in values
    ]


def bounds_chart(layers: Sequence[Mapping[str, Any]]) -> str | None:
    """Measured eₗ and the cumulative bounds Bₗ per tier, log scale.

    The per-layer prediction is a share of the *output* error E‖Φ−Φ̂‖², a different quantity from eₗ,
    so it is tabled, not drawn on this axis.

    Ref: docs/method.md §2 (eₗ = Eₓ‖zₗ − ẑₗ‖²), §3 (tiers E/T/P/W, cumulative Bₗ, prediction).
    Returns None when no layer carries a measured error (analyze reports).
    """
    measured = _positive([ly.get("measured_error") for ly in layers])
    if all(math.isnan(v) for v in measured):
        return None
    with rc_context(_RC):
        fig = _figure(10.0, 4.0, _BOUNDS_MARGINS)
        ax = fig.add_subplot()
        x = list(range(len(layers)))
        for tier, style in TIER_STYLE.items():
            cum = _positive([((ly.get("bounds") or {}).get(tier) or {}).get("cumulative") for ly in layers])
            if all(math.isnan(v) for v in cum):
                ax.plot([], [], color=style["color"], marker=style["marker"], label=style["label"] + ": n/a")
                continue
            ax.plot(
                x,
                cum,
                color=style["color"],
                marker=style["marker"],
                markersize=6,
                linewidth=1.4,
                label=style["label"],
            )
        ax.plot(
            x,
            measured,
            color="black",
            marker="o",
            markersize=7,
            linewidth=2.2,
            label="measured eₗ (held-out)",
        )
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        _minor_log_marks(ax)
        ax.set_xticks(x, [_short(str(ly.get("name", f"#{i}"))) for i, ly in enumerate(layers)])
        ax.set_xlabel("layer (input → output)")
        ax.set_ylabel("E‖zₗ − ẑₗ‖²  (squared error, log scale)")
        ax.set_title("Measured error vs. cumulative bound Bₗ, per layer")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8)
        return _svg(
            fig, "bounds", "Measured per-layer error against the cumulative bounds of tiers E, T, P, W"
        )


def diagnostics_chart(diag: Mapping[str, Any], index: int) -> str | None:
    """Compressibility curves e(κ) with the Gaussian reference, and the weight histogram (log y) with α̂.

    Ref: docs/method.md §4; [P2] Barsbey et al. 2021 (ℓ2-compressibility), MMO 2015 tail index.
    """
    curves = diag.get("curves") or {}
    kappa = curves.get("kappa") or []
    hist = diag.get("histogram") or {}
    has_curves = bool(kappa) and any(curves.get(k) for k in CURVE_STYLE)
    has_hist = bool(hist.get("edges")) and bool(hist.get("counts"))
    if not has_curves and not has_hist:
        return None
    name = _short(str(diag.get("name", f"tensor {index}")))
    with rc_context(_RC):
        fig = _figure(10.0, 3.4, _DIAG_MARGINS)
        axes = fig.subplots(1, int(has_curves) + int(has_hist), squeeze=False)[0]
        if has_curves:
            _draw_curves(axes[0], curves, kappa, name)
        if has_hist:
            _draw_histogram(axes[-1], hist, diag.get("alpha") or {}, name)
        return _svg(fig, f"diag-{index}", f"Compressibility curves and weight histogram of {name}")


def _draw_curves(ax: Axes, curves: Mapping[str, Any], kappa: Sequence[float], name: str) -> None:
    for key, style in CURVE_STYLE.items():
        ys = curves.get(key)
        if ys and len(ys) == len(kappa):
            ax.plot(kappa, ys, linewidth=1.6, **style)
    ax.plot(
        kappa,
        gaussian_magnitude_curve(kappa),
        color="#888888",
        linestyle=(0, (1, 1)),
        linewidth=1.4,
        label="Gaussian reference (magnitude)",
    )
    for eps, txt in ((0.1, "ε = 0.1"), (math.sqrt(0.1), "ε² = 0.1")):
        ax.axhline(eps, color="#999999", linewidth=0.8, linestyle="--")
        ax.text(
            0.99,
            eps,
            txt,
            ha="right",
            va="bottom",
            fontsize=7,
            color="#555555",
            transform=ax.get_yaxis_transform(),
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("kept fraction κ (largest first)")
    ax.set_ylabel("relative ℓ2 error e(κ)")
    ax.set_title(f"{name}: compressibility curves")
    ax.legend(loc="lower left", frameon=True, framealpha=0.9, edgecolor="none", fontsize=7)


def _draw_histogram(ax: Axes, hist: Mapping[str, Any], alpha: Mapping[str, Any], name: str) -> None:
    edges = [float(e) for e in hist["edges"]]
    counts = [float(c) for c in hist["counts"]]
    ax.stairs(counts, edges, fill=True, color="#56B4E9", alpha=0.85, baseline=0.5)
    ax.stairs(counts, edges, color="#0072B2", linewidth=0.8, baseline=0.5)
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_ylim(bottom=0.5)
    _minor_log_marks(ax)
    ax.set_xlabel("weight value")
    ax.set_ylabel("count (log scale)")
    parts = [
        f"{label} α̂ = {alpha[k]:.2f}"
        for k, label in (("multivariate", "multiv."), ("univariate", "univ."))
        if isinstance(alpha.get(k), (int, float))
    ]
    alphas = f"({', '.join(parts)})" if parts else ""
    # fixed margins do not shrink the axes for a long title: a long one breaks before the α̂ part
    sep = " " if len(name) + len(alphas) <= 46 else "\n"
    ax.set_title(f"{name}: weights" + (sep + alphas if alphas else ""))


def sweep_chart(budget: Mapping[str, Any]) -> str | None:
    """The budget search's trace: predicted and measured error per (keep, bits), target and choice.

    Ref: docs/method.md §3 ("the right tool for the budget search"), docs/report-format.md ``budget.trace``.
    """
    trace = [t for t in budget.get("trace") or [] if isinstance(t.get("keep"), (int, float))]
    if not trace:
        return None
    target = budget.get("target") or {}
    metric = str(target.get("metric") or "relative_l2")
    palette = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9"]
    markers = ["o", "s", "^", "D", "v", "P"]
    bit_values = sorted({t.get("bits") for t in trace}, key=lambda b: (b is None, b or 0))
    with rc_context(_RC):
        fig = _figure(9.0, 3.6, _SWEEP_MARGINS)
        ax = fig.add_subplot()
        for i, bits in enumerate(bit_values):
            pts = sorted((t for t in trace if t.get("bits") == bits), key=lambda t: t["keep"])
            color, marker = palette[i % len(palette)], markers[i % len(markers)]
            label = "float" if bits is None else f"{bits} bits"
            keeps = [t["keep"] for t in pts]
            ax.plot(
                keeps,
                [_num(t.get("measured")) for t in pts],
                color=color,
                marker=marker,
                linewidth=1.6,
                label=f"{label}: measured",
            )
            ax.plot(
                keeps,
                [_num(t.get("predicted")) for t in pts],
                color=color,
                marker=marker,
                linewidth=1.0,
                linestyle="--",
                markerfacecolor="white",
                label=f"{label}: predicted",
            )
        limit = target.get("max") if metric == "relative_l2" else target.get("min")
        if isinstance(limit, (int, float)):
            ax.axhline(limit, color="black", linewidth=1.0, linestyle=":", label=f"target ({metric})")
        chosen = budget.get("chosen") or {}
        hit = [
            t for t in trace if t.get("keep") == chosen.get("keep") and t.get("bits") == chosen.get("bits")
        ]
        if hit:
            ax.plot(
                [hit[0]["keep"]],
                [_num(hit[0].get("measured"))],
                linestyle="none",
                marker="o",
                markersize=15,
                markerfacecolor="none",
                markeredgecolor="black",
                markeredgewidth=1.5,
                label="chosen",
            )
        ax.set_xlabel("keep fraction κ")
        ax.set_ylabel("top-1 agreement" if metric == "top1_agreement" else "relative L2 error of the logits")
        ax.set_title("Budget search: error per keep fraction and bit width")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8)
        return _svg(fig, "sweep", "Budget search: measured and predicted error per keep fraction and bits")


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
