"""report.html: produced, self-contained, every section, escaped, graceful on partial input, deterministic."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from netshrink.reporting import SECTION_IDS, render_html

EVIL = "<script>alert(1)</script>"
ROOT = Path(__file__).resolve().parents[2]


class _Collector(HTMLParser):
    """Collects ids and external references, and checks that non-void tags are balanced."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "source", "col", "wbr", "area", "base"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.refs: list[str] = []
        self.stack: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.append(value)
            if (
                name in {"src", "href", "xlink:href", "action", "srcset", "poster", "data"}
                and value is not None
            ):
                self.refs.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.append(value)
            if name in {"src", "href", "xlink:href"} and value is not None:
                self.refs.append(value)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()


def _parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    c.close()
    assert c.stack == [], f"unclosed tags: {c.stack}"
    return c


def _assert_self_contained(page: str) -> None:
    c = _parse(page)
    assert "script" not in c.tags and "link" not in c.tags and "iframe" not in c.tags
    assert all(ref.startswith("#") for ref in c.refs), [r for r in c.refs if not r.startswith("#")]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "url(http" not in page and "<script" not in page.lower()


def test_full_report_has_every_section(sample_html: str) -> None:
    assert sample_html.startswith("<!DOCTYPE html>")
    c = _parse(sample_html)
    for section in SECTION_IDS:
        assert section in c.ids, section
    assert len(c.ids) == len(set(c.ids)), "duplicate ids (inline SVGs must not share ids)"
    assert sample_html.count("<svg") == 5  # bounds, 3 tensors (curves + histogram), sweep


def test_full_report_is_self_contained(sample_html: str) -> None:
    _assert_self_contained(sample_html)


def test_summary_card_carries_the_headline_numbers(sample_html: str) -> None:
    summary = sample_html.split('id="summary"', 1)[1].split('id="layers"', 1)[0]
    for needle in (
        "12.7× smaller",  # bytes ratio
        "204,110 B",  # bytes before, exact
        "8,845 B",  # int4 bytes after
        "3.1 %",  # measured relative L2
        "18.2 %",  # tier E relative bound
        "budget was <strong>met</strong>",
        "98.3 %",  # top-1 agreement
        "97.2 % → 96.7 %",  # accuracy before → after
        "Markov",
        "δ = 0.1",
        "ORT_DISABLE_ALL",
        "holdout",
        "1,437 / 360",  # samples fit / held out
        "linearized prediction (not a bound)",
    ):
        assert needle in summary, needle


def test_layers_diagnostics_and_reproducibility_content(sample_html: str) -> None:
    for needle in (
        "fc2 can keep 40% of its columns and go to 3 bits",  # advice
        "fc3 can&#x27;t",  # advice, escaped apostrophe
        "34.5×",  # B_E / e_l on the last layer
        "low confidence",  # fc3 has < 64 rows
        "q(ε = 0.1)",
        "Gaussian ref.",
        "undefined at f = 1",  # not covered
        "rgpq-1",
        "2.13.0+cpu",
        "magnitude+rtn",  # baselines side by side
        "relative_l2 ≤ 0.05",  # budget target
    ):
        assert needle in sample_html, needle


def test_every_report_string_is_escaped(report: dict[str, Any]) -> None:
    report["layers"][0]["name"] = EVIL
    report["layers"][0]["advice"]["text"] = EVIL
    report["diagnostics"][0]["name"] = EVIL
    report["model"]["input"]["name"] = EVIL
    report["model"]["logits"] = '"><img src=x onerror=alert(1)>'
    report["baselines"][0]["method"] = EVIL
    report["not_covered"][0]["reason"] = EVIL
    report["reproducibility"]["spec"]["note"] = EVIL
    report["summary"]["bytes"]["before"]["by_dtype"][EVIL] = 1
    page = render_html(report)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    _assert_self_contained(page)


def test_analyze_report_renders(analyze_report: dict[str, Any]) -> None:
    page = render_html(analyze_report)
    c = _parse(page)
    for section in SECTION_IDS:
        assert section in c.ids, section
    assert "netshrink analyze report" in page and "nothing was compressed" in page
    assert 'id="chart-bounds"' not in page and 'id="chart-sweep"' not in page
    assert page.count("<svg") == 3  # the diagnostics still have their charts
    assert "fc2 can keep 40% of its columns" in page
    _assert_self_contained(page)


@pytest.mark.parametrize(
    "minimal",
    [
        {},
        {"schema": "netshrink.report/1", "kind": "compress"},
        {"kind": "analyze", "layers": [], "summary": None},
    ],
)
def test_minimal_reports_render(minimal: dict[str, Any]) -> None:
    page = render_html(minimal)
    c = _parse(page)
    for section in SECTION_IDS:
        assert section in c.ids, section
    assert "None" not in re.sub(r"<[^>]+>", "", page)  # nulls render as a dash, never as "None"
    _assert_self_contained(page)


def test_optional_sections_absent(report: dict[str, Any]) -> None:
    """No budget, no baselines, no labels, P tier null, generic support: all said in words."""
    report["budget"] = None
    report["summary"]["budget_met"] = None
    report["baselines"] = []
    report["summary"]["classification"] = None
    report["summary"]["loss_bound"] = None
    report["summary"]["bounds"]["P"] = {
        "value": None,
        "relative": None,
        "probability_bound": None,
        "holds": None,
    }
    report["model"]["support"] = "generic"
    report["diagnostics"] = []
    report["not_covered"] = []
    for layer in report["layers"]:
        layer["not_covered"] = []
    page = render_html(report)
    for needle in (
        "No budget search ran",
        "no target was set",
        "No baselines were run",
        "needs labels",
        "accuracy: no labels given",
        "generic support",
        "Every tier applies",
        "No diagnostics in this report",
    ):
        assert needle in page, needle
    assert 'id="chart-sweep"' not in page
    assert "None" not in re.sub(r"<[^>]+>", "", page)
    _assert_self_contained(page)


def test_uncompressed_layer_is_labelled(report: dict[str, Any]) -> None:
    report["layers"][0]["compressed"] = False
    report["diagnostics"] = []
    assert "not compressed" in render_html(report)


def test_bound_exceeded_is_shown(report: dict[str, Any]) -> None:
    report["summary"]["bound_holds"] = {
        "tier": "E",
        "holds": False,
        "delta": 0.1,
        "measured_over_mean_bound": 12.5,
    }
    report["diagnostics"] = []  # no charts needed here: keeps the test fast
    page = render_html(report)
    assert "ABOVE the 90 %-probability bound B/δ" in page and "above B/δ" in page
    assert "12× that mean bound" in page or "12.5× that mean bound" in page


def test_a_draw_above_the_mean_bound_is_not_called_a_failure(report: dict[str, Any]) -> None:
    """Tier E bounds the mean over draws: a draw at 1.2× B but below B/δ is 'within B/δ', not a failure."""
    report["summary"]["bound_holds"] = {
        "tier": "E",
        "holds": True,
        "delta": 0.1,
        "measured_over_mean_bound": 1.2,
    }
    report["diagnostics"] = []
    page = render_html(report)
    assert "mean over draws" in page and "1.2× that mean bound" in page
    assert "within the 90 %-probability bound B/δ" in page and "EXCEEDS" not in page


def test_same_report_same_bytes_across_processes(sample_html: str, tmp_path: Path) -> None:
    """Deterministic output, also under another hash seed (no set/dict-hash ordering leaks in)."""
    out = tmp_path / "report.html"
    code = (
        "import sys; from pathlib import Path; from netshrink.reporting import render_html; "
        "from netshrink.reporting.sample import sample_report; "
        "Path(sys.argv[1]).write_text(render_html(sample_report()), encoding='utf-8')"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=ROOT, env=env, timeout=120)
    assert out.read_text(encoding="utf-8") == sample_html


def test_sample_report_is_json_and_follows_the_format(report: dict[str, Any]) -> None:
    """The sample round-trips through JSON and carries every top-level key of docs/report-format.md."""
    assert json.loads(json.dumps(report)) == report
    keys = {
        "schema",
        "kind",
        "model",
        "summary",
        "layers",
        "diagnostics",
        "baselines",
        "budget",
        "not_covered",
    }
    assert keys | {"reproducibility", "artifacts"} <= set(report)
    for d in report["diagnostics"]:
        hist = d["histogram"]
        assert len(hist["edges"]) == len(hist["counts"]) + 1
        assert sum(hist["counts"]) == d["rows"] * d["cols"]
        assert all(a <= b for a, b in zip(hist["edges"], hist["edges"][1:], strict=False))


def test_sample_reports_validate_against_the_core_schema(
    report: dict[str, Any], analyze_report: dict[str, Any]
) -> None:
    schema_path = ROOT / "compression" / "report" / "schemas" / "report.schema.json"
    import jsonschema

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.validate(report, schema)
    jsonschema.validate(analyze_report, schema)


def test_the_verdict_names_the_split_behind_the_headline(report: dict[str, Any]) -> None:
    """Synthetic inputs: 256 drawn, the figure comes from the 51 held out; say 51, not 256."""
    report["summary"]["evaluation"] = {
        "inputs": "gaussian",
        "split": "synthetic",
        "samples_fit": 256,
        "samples_holdout": 51,
        "scale": 1.0,
    }
    report["diagnostics"] = []
    page = render_html(report)
    assert "On the 51 held-out gaussian samples; 256 others were used for fitting" in page
    report["summary"]["evaluation"] = {
        "inputs": "calibration",
        "split": "none",
        "samples_fit": 20,
        "samples_holdout": 20,
        "scale": None,
    }
    assert "all 20 calibration samples (no held-out split: the same ones were fitted" in render_html(report)


def test_a_compensated_report_says_tier_w_bounds_every_draw(report: dict[str, Any]) -> None:
    """Compensated layers keep tier W only: the page must not call it a bound on the mean over draws."""
    report["summary"]["bound_holds"] = {
        "tier": "W",
        "holds": True,
        "delta": 0.1,
        "measured_over_mean_bound": 0.001,
    }
    report["summary"]["compensated_layers"] = [report["layers"][0]["name"]]
    report["diagnostics"] = []
    page = render_html(report)
    assert "bounds <em>every draw</em>" in page and "tier E does not apply to the compensated layers" in page
    assert "bound, tier W: ≤" in page and 'for every draw; this draw <span class="badge ok">within' in page
    verdict_and_cards = page.split('id="summary"', 1)[1].split("<table", 1)[0]
    assert "B/δ" not in verdict_and_cards  # the tier table below still lists every tier's B/δ
