"""``CompressionReport``: data only (schema ``netshrink.report/1``, docs/report-format.md).

The JSON Schema is ``compression/report/schemas/report.schema.json``; the tests validate every report
they produce against it. Nothing here computes a bound or an error: it only lays results out.
"""

from __future__ import annotations

import math
from typing import Any

from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.bounds.advice import advise
from netshrink.compression.bounds.bounds import TIERS, TierBounds
from netshrink.compression.graph.network import Network
from netshrink.compression.search.measure import Measurement

SCHEMA = "netshrink.report/1"
PREDICTION_LABEL = "linearized prediction (not a bound)"
MARKOV_CAVEAT = (
    "Tiers E, T and P bound the EXPECTED squared output error over the compression randomness; "
    "a single draw can exceed them. By Markov's inequality the error exceeds B/delta with probability "
    "at most delta. Tier E uses the realized upstream activations, so it is a one-draw estimate of a "
    "bound on an expectation. Tier W holds for every draw, baselines included. So a single draw is "
    "judged by B/delta ('holds'); the raw comparison with B is reported as 'below_mean_bound'."
)


def _f(x: float | None) -> float | None:
    """JSON-safe float: NaN/inf become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def model_section(net: Network, sha256: str) -> dict[str, Any]:
    return {
        "format": net.source_format,
        "support": net.support,
        "input": {"name": net.input_name, "shape": [None, *net.input_shape], "dtype": str(net.input_dtype)},
        "logits": net.logits,
        "tail": list(net.tail),
        "is_classifier": net.is_classifier,
        "n_layers": len(net.layers),
        "sha256": sha256,
    }


def tier_block(tb: TierBounds) -> dict[str, Any]:
    return {
        t: {"A": _f(tb.tiers[t].A), "step": _f(tb.tiers[t].step), "cumulative": _f(tb.tiers[t].cumulative)}
        for t in TIERS
    }


def end_to_end_bounds(
    b: dict[str, float | None], mse: float, energy: float, delta: float
) -> dict[str, dict[str, Any]]:
    """Per tier: B, its relative form, B/δ, and what this one draw can be judged by (docs/method.md §3).

    ``holds``: the draw's E_x‖Φ−Φ̂‖² ≤ B/δ for the expectation tiers E, T, P (Markov: a draw exceeds
    B/δ with probability ≤ δ), ≤ B for tier W (which holds on every draw). ``below_mean_bound`` is the
    raw comparison measured ≤ B, and ``measured_over_bound`` = measured / B says where the draw sits.
    """
    out: dict[str, dict[str, Any]] = {}
    for t in TIERS:
        v = _f(b.get(t))
        prob = None if v is None or t == "W" else v / delta
        judged_by = v if t == "W" else prob
        out[t] = {
            "value": v,
            "relative": None if v is None or energy <= 0 else math.sqrt(v / energy),
            "probability_bound": prob,
            "holds": None if judged_by is None else _leq(mse, judged_by),
            "below_mean_bound": None if v is None or t == "W" else _leq(mse, v),
            "measured_over_bound": None if v is None or v <= 0 else _f(mse / v),
        }
    return out


def _leq(measured: float, bound: float) -> bool:
    """measured ≤ bound up to float rounding of the bound's own computation."""
    return bool(measured <= bound * (1 + 1e-9) + 1e-30)


def bound_verdict(bounds: dict[str, dict[str, Any]], delta: float, tier: str | None = None) -> dict[str, Any]:
    """``summary.bound_holds``: the (1−δ) statement for one draw, and the raw comparison, worded.

    Tier E by default; tier W when E does not apply to the draw (a compensated draw keeps only tier
    W, docs/compensation.md): W bounds every draw, so ``holds`` is the plain comparison, no δ.
    """
    tier = tier or ("E" if bounds["E"]["value"] is not None or bounds["W"]["value"] is None else "W")
    b = bounds[tier]
    if tier == "W":
        return {
            "tier": "W",
            "holds": b["holds"],
            "delta": delta,
            "judged_against": "value",
            "below_mean_bound": None,
            "measured_over_mean_bound": b["measured_over_bound"],
            "meaning": (
                "holds: this draw's squared output error is at most B_W, a bound for every draw on "
                "any inputs (no probability). Tier E does not apply to this draw (compensated layers: "
                "summary.compensation keeps the uncompensated draw's tier-E bound)."
            ),
        }
    return {
        "tier": tier,
        "holds": b["holds"],
        "delta": delta,
        "judged_against": "probability_bound" if tier != "W" else "value",
        "below_mean_bound": b["below_mean_bound"],
        "measured_over_mean_bound": b["measured_over_bound"],
        "meaning": (
            f"holds: this draw's squared output error is at most B/delta, the bound that a draw "
            f"stays under with probability at least 1 - delta = {1 - delta:g} (Markov). "
            f"below_mean_bound: the raw comparison with B, a bound on the MEAN over draws, "
            f"which a single draw may exceed."
        ),
    }


def layer_entry(
    net: Network,
    name: str,
    draw: LayerDraw | None,
    m: Measurement,
    shape_after: list[int],
    *,
    methods: dict[str, str | None],
    keep_target: float | None,
    prediction: float | None,
    epsilon: float,
) -> dict[str, Any]:
    layer = net.layer(name)
    tb = m.bounds.get(name)
    sigma = m.sigmas.get(name)
    notes = list(layer.notes)
    if tb is not None:
        notes += [f"{t}: {tb.tiers[t].reason}" for t in TIERS if tb.tiers[t].reason]
        notes += tb.notes
    adv = None
    if sigma is not None and sigma > 0:
        adv = advise(layer, sigma, epsilon=epsilon, f_prune=1.0, f_quant=1.0).to_dict()
    bits = None
    if draw is not None and draw.compressed.bits is not None:
        bits = {"nominal": draw.compressed.bits, "container": draw.compressed.container_bits}
    return {
        "name": name,
        "kind": layer.kind,
        "shape_before": list(layer.weight.shape),
        "shape_after": shape_after,
        "compressed": draw is not None,
        "compensated": draw is not None and draw.compensated,
        # compensate: null's rule (algorithm/layer_held_back.py): refit kept?, both held-back objectives
        "refit_check": None if draw is None else draw.refit_check,
        "method": methods if draw is not None else None,
        "keep": None
        if draw is None
        else {"target": keep_target, "expected": _f(draw.expected_keep), "realized": _f(draw.realized_keep)},
        "f": None if draw is None else _f(draw.f),
        "p": None if draw is None else _f(draw.p),
        "bits": bits,
        "measured_error": _f(m.layer_errors.get(name)),
        "inputs": None
        if tb is None
        else {
            "sigma": _f(tb.sigma),
            "nu": _f(tb.nu),
            "Z2": _f(tb.Z2),
            "n_in": tb.n_in,
            "n_out": tb.n_out,
            "tau2": _f(tb.tau2),
            "k": tb.k,
            "L": _f(tb.L),
            "sigma_bound": None if tb.sigma_bound is None else tb.sigma_bound.to_dict(),
            "delta_sigma_bound": None if tb.delta_bound is None else tb.delta_bound.to_dict(),
        },
        "bounds": None if tb is None else tier_block(tb),
        "prediction": _f(prediction),
        "advice": adv,
        "not_covered": notes,
    }


SIGMA_STATEMENT = (
    "Every sigma in the bounds is a certified upper bound on the operator norm: an exact SVD for small "
    "matrices, a deterministic norm (Frobenius, sqrt(||W||_1 ||W||_inf), or a conv's per-frequency "
    "bound), or a Lanczos certificate from a seeded random start (Kuczynski-Wozniakowski 1992) that "
    "fails for a set of start vectors of measure at most its failure_probability. Every bound of this "
    "report then holds except with probability failure_probability (a union bound over the "
    "certificates); the (1-delta)-probability bounds hold with probability at least "
    "1 - delta - failure_probability."
)


def sigma_summary(m: Measurement) -> dict[str, Any]:
    """How the σ of the bounds were certified: counts by method, the union failure probability, the
    largest gap between a certificate and its Ritz estimate."""
    certs = [*m.sigma_bounds.values()]
    certs += [tb.delta_bound for tb in m.bounds.values() if tb.delta_bound is not None]
    methods: dict[str, int] = {}
    for c in certs:
        methods[c.method] = methods.get(c.method, 0) + 1
    gaps = [c.gap for c in certs if math.isfinite(c.gap)]
    return {
        "methods": methods,
        "failure_probability": m.sigma_failure_probability(),
        "max_gap": max(gaps) if gaps else None,
        "statement": SIGMA_STATEMENT,
    }


def _classify(note: str, layer: str | None) -> dict[str, Any]:
    """``"P: undefined at f = 1"`` -> tier P; a note without a tier prefix concerns every tier."""
    tier, _, reason = note.partition(": ")
    if tier in TIERS or tier == "prediction":
        return {"tier": tier, "layer": layer, "reason": reason}
    return {"tier": "all", "layer": layer, "reason": note}


def not_covered(net: Network, layers: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    out = [_classify(r, None) for r in (*net.not_covered, *notes)]
    for entry in layers:
        out += [_classify(note, entry["name"]) for note in entry["not_covered"]]
    return out
