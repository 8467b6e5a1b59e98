"""report.html: one self-contained page (inline CSS and SVG, no script, no external resource).

Ref: issue 5 ("report.html"), docs/report-format.md. The page reads top-down from the verdict a
manager needs to the numbers a reviewer of P1–P3 checks: summary → per-layer bounds and advice →
heavy-tail diagnostics → budget search → baselines → what is not covered → how to reproduce it.
Same report in, same bytes out: nothing here depends on time, locale or dict hashing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from netshrink.reporting.fmt import DASH, esc, get, kv_table, nbytes, num, pct, table, text
from netshrink.reporting.sections import diagnostics_section, layers_section, sweep_section
from netshrink.reporting.summary import summary_section

SECTION_IDS = ("summary", "layers", "diagnostics", "sweep", "baselines", "not-covered", "reproducibility")

_CSS = """
:root{--fg:#1d232a;--muted:#5b6570;--line:#d8dde3;--bg:#fff;--soft:#f4f6f8;--ok:#0a7a4f;--bad:#b3261e;
--warn:#8a5a00;--accent:#0072B2}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 "DejaVu Sans",system-ui,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
header{border-bottom:3px solid var(--accent);padding-bottom:10px;margin-bottom:8px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 10px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:16px;margin:18px 0 8px}
nav{font-size:13px;margin:8px 0 0;color:var(--muted)}nav a{color:var(--accent);margin-right:14px}
.muted,.sub{color:var(--muted)}.sub{font-size:14px;margin:0}
.verdict{font-size:17px;background:var(--soft);border-left:5px solid var(--accent);padding:12px 16px;
margin:14px 0}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:14px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px;border-top:5px solid var(--line)}
.card.good{border-top-color:var(--ok)}.card.warn{border-top-color:var(--bad)}
.card-title{font-size:13px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card-value{font-size:30px;font-weight:bold;margin:2px 0}.card-detail{font-size:13px;color:var(--muted)}
.two{display:grid;grid-template-columns:1fr 1fr;gap:18px;align-items:start}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:10px 0;font-size:13px;width:100%}
caption{text-align:left;font-weight:bold;padding:4px 0;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600}
table.kv th{width:45%;font-weight:normal;color:var(--muted)}
td{font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:bold;color:#fff}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}
.na{color:var(--muted)}
.caveat{border:1px solid #e0c27a;background:#fff8e6;border-radius:6px;padding:10px 14px;margin:12px 0}
.note{background:var(--soft);padding:8px 12px;border-radius:6px}
.advice li{margin:3px 0}
figure.chart-box{margin:10px 0;text-align:center}
svg.chart{max-width:100%;height:auto}
.diag{border-top:1px dashed var(--line);margin-top:14px}
pre{background:var(--soft);padding:10px;border-radius:6px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
footer{margin-top:36px;font-size:12px;color:var(--muted);border-top:1px solid var(--line);padding-top:8px}
@media print{main{max-width:none}.cards{grid-template-columns:repeat(2,1fr)}}
""".strip()


def _header(report: Mapping[str, Any]) -> str:
    m = report.get("model") or {}
    inp = m.get("input") or {}
    kind = report.get("kind") or "compress"
    sha = str(m.get("sha256") or "")
    shape = inp.get("shape")
    shape_txt = "×".join("batch" if d is None else esc(d) for d in shape) if isinstance(shape, list) else "?"
    support = (
        " · <strong>generic support</strong> (structure-specific features off)"
        if m.get("support") == "generic"
        else ""
    )
    nav = "".join(f'<a href="#{i}">{i.replace("-", " ")}</a>' for i in SECTION_IDS)
    return (
        f"<header><h1>netshrink {esc(kind)} report</h1>"
        f'<p class="sub">{text(m.get("format"))} model · {num(m.get("n_layers"))} layers · input '
        f"{text(inp.get('name'))} ({shape_txt}, {text(inp.get('dtype'))}) · logits Φ = "
        f"{text(m.get('logits'))} · sha256 {esc(sha[:12]) if sha else DASH}{support}</p>"
        f"<nav>{nav}</nav></header>"
    )


def _baselines_section(report: Mapping[str, Any]) -> str:
    body = ["<h2>Baselines, side by side</h2>"]
    baselines = [b for b in report.get("baselines") or [] if isinstance(b, Mapping)]
    if not baselines:
        body.append('<p class="note">No baselines were run (<code>compare_baselines</code> was off).</p>')
        return '<section id="baselines">' + "".join(body) + "</section>"
    s = report.get("summary") or {}
    rows = [
        [
            "<strong>this run (randomized greedy)</strong>",
            DASH,
            DASH,
            pct(get(s, "error", "relative_l2"), 2),
            num(get(s, "error", "mse")),
            pct(get(s, "error", "p95"), 2),
            pct(get(s, "error", "max"), 2),
            pct(get(s, "bounds", "W", "relative")),
            nbytes(get(s, "bytes", "after", "total")),
        ]
    ]
    for b in baselines:
        e = b.get("error") or {}
        rows.append(
            [
                text(b.get("method")),
                num(b.get("keep")),
                num(b.get("bits")),
                pct(e.get("relative_l2"), 2),
                num(e.get("mse")),
                pct(e.get("p95"), 2),
                pct(e.get("max"), 2),
                pct(get(b, "bounds", "W", "relative")),
                nbytes(b.get("bytes_after")),
            ]
        )
    body.append(
        table(
            [
                "method",
                "keep",
                "bits",
                "relative L2",
                "E‖Φ−Φ̂‖²",
                "p95",
                "max",
                "worst-case bound W (relative)",
                "bytes after",
            ],
            rows,
            caption="Same density, same held-out inputs",
        )
    )
    body.append(
        '<p class="muted">Baselines (magnitude, OBD, round-to-nearest) carry only the worst-case tier W '
        "(their error is not zero-mean). A single random draw can have a higher error than a baseline; "
        "the randomized method's advantage is the bound, not every draw (docs/method.md §1).</p>"
    )
    return '<section id="baselines">' + "".join(body) + "</section>"


def _not_covered_section(report: Mapping[str, Any]) -> str:
    items, seen = [], set()
    for nc in report.get("not_covered") or []:
        if isinstance(nc, Mapping):
            tier, layer = nc.get("tier"), nc.get("layer")
            seen.add((str(tier), str(layer)))
            who = "all tiers" if tier in (None, "all") else f"tier {esc(tier)}"
            where = f" · layer {esc(layer)}" if layer is not None else ""
            items.append(f"<li><strong>{who}</strong>{where}: {text(nc.get('reason'))}</li>")
        else:
            items.append(f"<li>{esc(nc)}</li>")
    for ly in report.get("layers") or []:
        for reason in (ly.get("not_covered") or []) if isinstance(ly, Mapping) else []:
            tier = str(reason).split(":", 1)[0].strip()  # per-layer entries read "P: undefined at f = 1"
            if (tier, str(ly.get("name"))) not in seen:
                items.append(f"<li><strong>layer {text(ly.get('name'))}</strong>: {esc(reason)}</li>")
    items = list(dict.fromkeys(items))
    body = (
        f"<ul>{''.join(items)}</ul>"
        if items
        else '<p class="note">Every tier applies to every layer of this model.</p>'
    )
    return '<section id="not-covered"><h2>Not covered, and why</h2>' + body + "</section>"


def _reproducibility_section(report: Mapping[str, Any]) -> str:
    r = report.get("reproducibility") or {}
    d = (report.get("summary") or {}).get("draws") or {}
    spread = d.get("fit_relative_l2") or {}
    made = f"{num(d.get('R'))} made" if d else ""
    if d.get("R", 0) > 1:
        made += f", fit error {num(spread.get('min'))}–{num(spread.get('max'))}"
    asked = text(r["draws"]) if isinstance(r.get("draws"), str) else num(r.get("draws"))
    rows = [
        ("seed", num(r.get("seed"))),
        (
            "draws (best of R) / chosen draw",
            f"{asked}{f' ({made})' if made else ''} / {num(r.get('chosen_draw'))}",
        ),
        ("algorithm version", text(r.get("algorithm_version"))),
        ("device", text(r.get("device"))),
        ("input sha256", f"<code>{text(r.get('input_sha256'))}</code>"),
        ("calibration sha256", f"<code>{text(r.get('calibration_sha256'))}</code>"),
    ]
    versions = r.get("versions") or {}
    rows += [(f"version: {k}", text(v)) for k, v in versions.items()]
    body = [kv_table(rows, caption="Same seed, inputs, device type and versions → same bytes")]
    arts = [a for a in report.get("artifacts") or [] if isinstance(a, Mapping)]
    if arts:
        body.append(
            table(
                ["artifact", "size", "sha256"],
                [
                    [
                        text(a.get("name")),
                        nbytes(a.get("size_bytes")),
                        f"<code>{text(a.get('sha256'))}</code>",
                    ]
                    for a in arts
                ],
            )
        )
    if r.get("spec") is not None:
        spec = json.dumps(r["spec"], indent=2, sort_keys=True, ensure_ascii=False, default=str)
        body.append(f"<h3>Spec actually used</h3><pre>{esc(spec)}</pre>")
    return '<section id="reproducibility"><h2>Reproducibility</h2>' + "".join(body) + "</section>"


_FOOTER = (
    "<footer>[P1] El Cheairi, Gamarnik, Mazumder, <em>Theoretical Compression Bounds for Wide Multilayer "
    "Perceptrons</em>, COLT 2026 (arXiv 2512.06288). [P2] Barsbey, Sefidgaran, Erdogdu, Richard, Şimşekli, "
    "<em>Heavy Tails in SGD and Compressibility of Overparametrized Neural Networks</em>, NeurIPS 2021 "
    "(arXiv 2106.03795). [P3] Wan, Barsbey, Zaidi, Şimşekli, <em>Implicit Compressibility of "
    "Overparametrized Neural Networks Trained with Heavy-Tailed SGD</em>, ICML 2024 (arXiv 2306.08125). "
    "Derivations beyond the papers are marked “derived” in netshrink's docs/method.md.</footer>"
)


def render_html(report: Mapping[str, Any]) -> str:
    """Render a ``netshrink.report/1`` dict as one self-contained HTML page (deterministic)."""
    kind = report.get("kind") or "compress"
    if kind == "finetune":
        from netshrink.reporting.finetune import finetune_page

        return finetune_page(report, _CSS, _FOOTER)
    sections = [summary_section(report), layers_section(report), diagnostics_section(report)]
    if kind == "analyze":
        skipped = "This is an analyze report: nothing was compressed."
        sections += [
            f'<section id="{i}"><h2>{t}</h2><p class="note">{skipped}</p></section>'
            for i, t in (("sweep", "Budget search"), ("baselines", "Baselines, side by side"))
        ]
    else:
        sections += [sweep_section(report), _baselines_section(report)]
    sections += [_not_covered_section(report), _reproducibility_section(report)]
    title = f"netshrink {kind} report — {get(report, 'model', 'format') or 'model'}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="netshrink reporting ({esc(report.get("schema") or "?")})">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{_header(report)}{''.join(sections)}{_FOOTER}</main></body></html>\n"
    )
