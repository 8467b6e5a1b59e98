"""Charts: inline SVG, deterministic, log axes without mathtext, nulls as gaps, names drawn literally."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netshrink.reporting import charts
from netshrink.reporting.gaussian import gaussian_magnitude_curve
from netshrink.reporting.sample_diagnostics import tail_energy_curve

EVIL = "<script>alert(1)</script>"


def _ids(svg: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', svg))


def test_bounds_chart_is_inline_svg_with_every_tier(report: dict[str, Any]) -> None:
    svg = charts.bounds_chart(report["layers"])
    assert svg is not None and svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<metadata>" not in svg
    assert 'role="img"' in svg and 'aria-label="' in svg and 'id="chart-bounds"' in svg
    for label in (
        "tier E",
        "tier T",
        "tier P",
        "tier W",
        "measured eₗ",
    ):
        assert label in svg, label
    # The per-layer prediction is a share of the OUTPUT error, not eₗ: it must not share this axis.
    assert "prediction" not in svg
    # plain log-axis tick labels (mathtext is off, so matplotlib's default 10^{k} markup would leak)
    assert "mathdefault" not in svg and "$" not in svg
    assert re.search(r">0\.01</text>", svg) and re.search(r">1</text>", svg)
    assert "log scale" in svg


_CHARTS_CODE = (
    "import hashlib, sys\n"
    "from netshrink.reporting import charts\n"
    "from netshrink.reporting.sample import sample_report\n"
    "r = sample_report()\n"
    "svg = charts.bounds_chart(r['layers']) or ''\n"
    "svg += charts.diagnostics_chart(r['diagnostics'][0], 0) or ''\n"
    "sys.stdout.write(hashlib.sha256(svg.encode()).hexdigest())\n"
)


def test_charts_are_deterministic_across_processes(tmp_path: Path) -> None:
    """Two fresh interpreters with different hash seeds (and matplotlib caches) draw the same bytes."""
    digests = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "MPLCONFIGDIR": str(tmp_path / f"mpl{seed}")}
        out = subprocess.run(
            [sys.executable, "-c", _CHARTS_CODE], capture_output=True, text=True, env=env, check=True
        )
        digests.append(out.stdout)
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_charts_on_one_page_have_distinct_element_ids(report: dict[str, Any]) -> None:
    a = charts.bounds_chart(report["layers"])
    b = charts.sweep_chart(report["budget"])
    assert a is not None and b is not None
    assert _ids(a) and _ids(b) and not (_ids(a) & _ids(b))


def test_null_tier_is_a_gap_and_labelled_na(report: dict[str, Any]) -> None:
    for layer in report["layers"]:
        layer["bounds"]["P"] = {"A": None, "step": None, "cumulative": None}
    layers = report["layers"]
    layers[0]["measured_error"] = 0.0  # nothing compressed there: no point on a log axis, no crash
    svg = charts.bounds_chart(layers)
    assert svg is not None and "tier P (P1's paper constant): n/a" in svg


def test_no_measured_error_means_no_bounds_chart(analyze_report: dict[str, Any]) -> None:
    assert charts.bounds_chart(analyze_report["layers"]) is None
    assert charts.bounds_chart([]) is None


def test_names_are_drawn_literally_and_escaped(report: dict[str, Any]) -> None:
    report["layers"][1]["name"] = "$x$"  # mathtext would eat the dollars
    report["diagnostics"][0]["name"] = EVIL
    svg = charts.bounds_chart(report["layers"])
    assert svg is not None and ">$x$</text>" in svg
    diag = charts.diagnostics_chart(report["diagnostics"][0], 0)
    assert diag is not None and "<script" not in diag.lower() and "&lt;script&gt;" in diag


def test_diagnostics_chart_parts(report: dict[str, Any]) -> None:
    d = report["diagnostics"][0]
    full = charts.diagnostics_chart(d, 0)
    assert (
        full is not None
        and "α̂ = 1.78" in full
        and "Gaussian reference" in full
        and "count (log scale)" in full
    )
    d_no_hist = {k: v for k, v in d.items() if k != "histogram"}
    curves_only = charts.diagnostics_chart(d_no_hist, 1)
    assert curves_only is not None and "count (log scale)" not in curves_only
    assert charts.diagnostics_chart({"name": "empty"}, 2) is None


def test_gaussian_reference_reproduces_algorithm_md_values() -> None:
    """docs/method.md §4: q_mag ≈ 0.265 at ε = 0.1 and ≈ 0.555 at ε² = 0.1 for i.i.d. Gaussian weights."""
    e = gaussian_magnitude_curve([1 - 0.265, 1 - 0.555])
    assert e[0] == pytest.approx(0.1, abs=0.003)
    assert e[1] == pytest.approx(math.sqrt(0.1), abs=0.003)


def test_gaussian_reference_matches_monte_carlo() -> None:
    """The closed form against the empirical curve of 200k Gaussian entries (oracle)."""
    kappa = np.linspace(0.0, 1.0, 21)
    empirical = tail_energy_curve(np.random.default_rng(1).standard_normal(200_000), kappa)
    closed = np.array(gaussian_magnitude_curve(list(kappa)))
    assert np.max(np.abs(closed - empirical)) < 0.005


def test_sweep_chart(report: dict[str, Any]) -> None:
    svg = charts.sweep_chart(report["budget"])
    assert svg is not None
    for label in (
        "4 bits: measured",
        "4 bits: predicted",
        "3 bits: measured",
        "target (relative_l2)",
        "chosen",
    ):
        assert label in svg, label
    assert charts.sweep_chart({"trace": []}) is None
    assert charts.sweep_chart({}) is None


def _rasters(monkeypatch: pytest.MonkeyPatch, report: dict[str, Any], own_minor_ticks: bool) -> list[Any]:
    """Each log-axis chart of ``report`` as RGBA pixels (Agg, 100 dpi), plus its figure."""
    import io

    import matplotlib.image
    from matplotlib import rc_context

    drawn: list[Any] = []

    def raster(fig: Any, salt: str, label: str) -> str:
        buf = io.BytesIO()
        with rc_context(charts._RC):
            fig.savefig(buf, format="png", dpi=100)
        buf.seek(0)
        drawn.append((matplotlib.image.imread(buf), fig))
        return "<svg></svg>"

    monkeypatch.setattr(charts, "_svg", raster)
    if own_minor_ticks:  # matplotlib's minor Tick objects, as before the marks
        monkeypatch.setattr(charts, "_minor_log_marks", lambda ax: None)
    charts.bounds_chart(report["layers"])
    charts.diagnostics_chart(report["diagnostics"][0], 0)
    monkeypatch.undo()
    return drawn


def test_log_axis_minor_marks_draw_exactly_matplotlibs_minor_ticks(
    report: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The minor ticks of the log axes are one line of markers instead of a ``Tick`` artist each
    (half of report.html's rendering time): the same pixels, and no minor ``Tick`` left to make."""
    before = _rasters(monkeypatch, report, own_minor_ticks=True)
    after = _rasters(monkeypatch, report, own_minor_ticks=False)
    assert len(before) == len(after) == 2
    for (old, old_fig), (new, new_fig) in zip(before, after, strict=True):
        assert old.shape == new.shape and np.array_equal(old, new)
        log_axes = [ax for ax in new_fig.axes if ax.get_yscale() == "log"]
        assert log_axes and all(ax.yaxis.get_minorticklocs().size == 0 for ax in log_axes)
        assert all(len(ax.yaxis.minorTicks) <= 1 for ax in log_axes)  # matplotlib keeps one prototype
        assert sum(len(ax.get_yaxis().get_minorticklocs()) for ax in old_fig.axes) > 10  # there were many
