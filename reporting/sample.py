"""A realistic sample report (schema ``netshrink.report/1``) for tests and ``make screenshot``.

It is mostly data (one full report literal), not logic; the diagnostics section is computed in
``reporting.sample_diagnostics``.

The numbers describe a 64→256→128→10 digits-style MLP compressed with neuron pruning (keep 0.5) and
4-bit randomized greedy quantization, with the budget search and the baselines switched on. The
per-layer measurements and bounds are illustrative values with the ratios docs/method.md §3 reports
(cumulative tier E ≈ 35× the measured squared error, T ≥ E, P ≈ 50–100× E, W loosest). The heavy-tail
diagnostics (curves, q(ε), histograms) are computed exactly from seeded synthetic weight matrices.

Ref: docs/report-format.md. The lead replaces the data with a real measured report later.

``diagnostics[i].histogram = {"edges": [...], "counts": [...]}`` is an addition to the format (the
report carries no raw weights, so the histogram travels in the report).
"""

from __future__ import annotations

import copy
from typing import Any

from netshrink.reporting.sample_diagnostics import diagnostics

_LAYERS: list[dict[str, Any]] = [
    {
        "name": "fc1",
        "kind": "dense",
        "shape_before": [256, 64],
        "shape_after": [131, 64],
        "compressed": True,
        "method": {"prune": None, "quantize": "randomized_greedy", "score": "layer"},
        "keep": None,
        "f": 0.95,
        "p": None,
        "bits": {"nominal": 4, "container": 4},
        "measured_error": 0.0021,
        "inputs": {
            "sigma": 3.42,
            "nu": 0.61,
            "Z2": 21.3,
            "n_in": 64,
            "n_out": 256,
            "tau2": 0.0204,
            "k": 7,
            "L": 1.0,
        },
        "bounds": {
            "E": {"A": 0.0024, "step": 0.0024, "cumulative": 0.0024},
            "T": {"A": 0.0061, "step": 0.0061, "cumulative": 0.0061},
            "P": {"A": 0.21, "step": 0.21, "cumulative": 0.21},
            "W": {"A": 0.034, "step": 0.034, "cumulative": 0.034},
        },
        "prediction": 0.0031,
        "advice": {
            "epsilon": 0.05,
            "min_keep": None,
            "min_bits": 3,
            "text": "fc1 can go to 3 bits; its columns are the model's input features and are never pruned",
        },
        "not_covered": [],
    },
    {
        "name": "fc2",
        "kind": "dense",
        "shape_before": [128, 256],
        "shape_after": [66, 131],
        "compressed": True,
        "method": {"prune": "randomized_greedy", "quantize": "randomized_greedy", "score": "layer"},
        "keep": {"target": 0.5, "expected": 0.5, "realized": 0.512},
        "f": 0.7,
        "p": 0.286,
        "bits": {"nominal": 4, "container": 4},
        "measured_error": 0.0058,
        "inputs": {
            "sigma": 2.91,
            "nu": 0.44,
            "Z2": 35.8,
            "n_in": 256,
            "n_out": 128,
            "tau2": 2.5,
            "k": 7,
            "L": 1.0,
        },
        "bounds": {
            "E": {"A": 0.0112, "step": 0.0290, "cumulative": 0.0315},
            "T": {"A": 0.0405, "step": 0.0583, "cumulative": 0.0921},
            "P": {"A": 2.82, "step": 2.84, "cumulative": 4.60},
            "W": {"A": 0.52, "step": 0.81, "cumulative": 1.02},
        },
        "prediction": 0.0048,
        "advice": {
            "epsilon": 0.05,
            "min_keep": 0.4,
            "min_bits": 3,
            "text": "fc2 can keep 40% of its columns and go to 3 bits",
        },
        "not_covered": [],
    },
    {
        "name": "fc3",
        "kind": "dense",
        "shape_before": [10, 128],
        "shape_after": [10, 66],
        "compressed": True,
        "method": {"prune": "randomized_greedy", "quantize": "randomized_greedy", "score": "layer"},
        "keep": {"target": 0.5, "expected": 0.5, "realized": 0.516},
        "f": 1.0,
        "p": 0.5,
        "bits": {"nominal": 4, "container": 4},
        "measured_error": 0.0142,
        "inputs": {
            "sigma": 2.36,
            "nu": 0.39,
            "Z2": 28.4,
            "n_in": 128,
            "n_out": 10,
            "tau2": 1.0,
            "k": 7,
            "L": 1.0,
        },
        "bounds": {
            "E": {"A": 0.315, "step": 0.347, "cumulative": 0.490},
            "T": {"A": 0.797, "step": 0.829, "cumulative": 1.31},
            "P": {"A": None, "step": None, "cumulative": None},
            "W": {"A": 2.98, "step": 5.1, "cumulative": 8.7},
        },
        "prediction": 0.0047,
        "advice": {
            "epsilon": 0.05,
            "min_keep": 0.75,
            "min_bits": 6,
            "text": "fc3 can't: it needs at least 6 bits and 75% of its columns at ε = 0.05",
        },
        "not_covered": ["P: undefined at f = 1"],
    },
]

_VERSIONS = {
    "netshrink": "0.1.0",
    "torch": "2.13.0+cpu",
    "onnx": "1.23.2",
    "onnxruntime": "1.32.0",
    "numpy": "2.4.6",
    "python": "3.11.7",
}
_SHA_MODEL = "3f5a9c0e8b7d41e2a6c4f0b1d2e3a4b5c6d7e8f90123456789abcdef01234567"
_SHA_CALIB = "a1b2c3d4e5f60718293a4b5c6d7e8f9001122334455667788990aabbccddeeff"


def _trace() -> list[dict[str, Any]]:
    rows = [  # (keep, bits, predicted, measured, bytes)
        (0.7, 4, 0.019, 0.022, 21500),
        (0.5, 4, 0.027, 0.031, 16100),
        (0.35, 4, 0.044, 0.061, 12400),
        (0.7, 3, 0.036, 0.041, 19300),
        (0.5, 3, 0.046, 0.057, 14700),
        (0.35, 3, 0.063, 0.079, 11300),
    ]
    return [
        {"keep": k, "bits": b, "predicted": p, "measured": m, "bytes": n, "meets": m <= 0.05}
        for k, b, p, m, n in rows
    ]


def sample_report() -> dict[str, Any]:
    """A full ``compress`` report: every section present, P tier null on the last layer."""
    return {
        "schema": "netshrink.report/1",
        "kind": "compress",
        "model": {
            "format": "onnx",
            "support": "full",
            "input": {"name": "x", "shape": [None, 64], "dtype": "float32"},
            "logits": "add_result2",
            "tail": ["Softmax", "ArgMax", "ZipMap"],
            "is_classifier": True,
            "n_layers": 3,
            "sha256": _SHA_MODEL,
        },
        "summary": {
            "params": {"before": 50826, "after": 17897},
            "bytes": {
                "before": {"total": 204110, "by_dtype": {"float32": 203304}},
                "after": {"total": 16100, "by_dtype": {"int4": 8845, "float32": 3332, "int64": 3352}},
                "ratio": 12.68,
            },
            "error": {
                "relative_l2": 0.031,
                "mse": 0.0142,
                "p95": 0.052,
                "max": 0.094,
                "onnxruntime": {
                    "default": {"relative_l2": 0.0322, "p95": 0.054, "max": 0.097},
                    "no_optimizations": {"relative_l2": 0.031, "p95": 0.052, "max": 0.094},
                },
            },
            "bounds": {
                "E": {
                    "value": 0.490,
                    "relative": 0.182,
                    "probability_bound": 4.90,
                    "holds": True,
                    "below_mean_bound": True,
                    "measured_over_bound": 0.029,
                },
                "T": {
                    "value": 1.31,
                    "relative": 0.298,
                    "probability_bound": 13.1,
                    "holds": True,
                    "below_mean_bound": True,
                    "measured_over_bound": 0.0108,
                },
                "P": {"value": None, "relative": None, "probability_bound": None, "holds": None},
                "W": {
                    "value": 8.7,
                    "relative": 0.767,
                    "probability_bound": None,
                    "holds": True,
                    "below_mean_bound": None,
                    "measured_over_bound": 0.00163,
                },
            },
            "bound_holds": {
                "tier": "E",
                "holds": True,
                "delta": 0.1,
                "judged_against": "probability_bound",
                "below_mean_bound": True,
                "measured_over_mean_bound": 0.029,
                "meaning": (
                    "holds: measured <= B/delta (Markov, probability >= 0.9); "
                    "below_mean_bound: measured <= B."
                ),
            },
            "delta": 0.1,
            "markov_caveat": (
                "Tiers E, T and P bound the expectation over the compression randomness; a single draw can "
                "exceed them. By Markov's inequality P(error > B/δ) ≤ δ. Tier W holds for every draw."
            ),
            "prediction": {
                "mse": 0.0126,
                "relative_l2": 0.0292,
                "label": "linearized prediction (not a bound)",
            },
            "classification": {"top1_agreement": 0.983, "accuracy_before": 0.972, "accuracy_after": 0.967},
            "loss_bound": {"loss_before": 0.094, "loss_after": 0.108, "bound": 0.98},
            "latency_ms": {"before": 0.82, "after": 0.61, "device": "cpu", "batch": 256},
            "evaluation": {
                "inputs": "calibration",
                "samples_fit": 1437,
                "samples_holdout": 360,
                "split": "holdout",
                "scale": None,
            },
            "budget_met": True,
        },
        "layers": copy.deepcopy(_LAYERS),
        "diagnostics": diagnostics(),
        "baselines": [
            {
                "method": "magnitude+rtn",
                "keep": 0.5,
                "bits": 4,
                "error": {"relative_l2": 0.027, "mse": 0.0108, "p95": 0.047, "max": 0.088},
                "bounds": {"W": {"value": 9.4, "relative": 0.797}},
                "bytes_after": 16100,
            },
            {
                "method": "obd+rtn",
                "keep": 0.5,
                "bits": 4,
                "error": {"relative_l2": 0.024, "mse": 0.0085, "p95": 0.041, "max": 0.081},
                "bounds": {"W": {"value": 9.1, "relative": 0.784}},
                "bytes_after": 16100,
            },
        ],
        "budget": {
            "target": {"metric": "relative_l2", "max": 0.05, "min": None},
            "met": True,
            "chosen": {"keep": 0.5, "bits": 4},
            "trace": _trace(),
        },
        "not_covered": [
            {"tier": "P", "layer": "fc3", "reason": "undefined at f = 1 (every weight randomized)"},
            {
                "tier": "all",
                "layer": None,
                "reason": "P1's two-layer row-pruning block needs a smooth "
                "activation (|φ''| ≤ 1); not part of v1",
            },
        ],
        "reproducibility": {
            "seed": 0,
            "draws": 1,
            "chosen_draw": 0,
            "algorithm_version": "rgpq-1",
            "device": "cpu",
            "versions": dict(_VERSIONS),
            "input_sha256": _SHA_MODEL,
            "calibration_sha256": _SHA_CALIB,
            "spec": {
                "kind": "compress",
                "prune": {"method": "randomized_greedy", "structure": "neuron", "keep": 0.5},
                "quantize": {"method": "randomized_greedy", "bits": 4},
                "target": {"metric": "relative_l2", "max": 0.05},
                "compare_baselines": True,
                "evaluation": {"inputs": "calibration", "holdout_fraction": 0.2, "delta": 0.1},
                "draws": 1,
                "seed": 0,
            },
        },
        "artifacts": [
            {
                "name": "model.onnx",
                "size_bytes": 16100,
                "sha256": "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d",
            }
        ],
    }


def sample_analyze_report() -> dict[str, Any]:
    """An ``analyze`` report: model, layers (σ, ν, advice), diagnostics, not_covered, reproducibility."""
    full = sample_report()
    layers = [
        {
            "name": ly["name"],
            "kind": ly["kind"],
            "shape_before": ly["shape_before"],
            "inputs": {"sigma": ly["inputs"]["sigma"], "nu": ly["inputs"]["nu"]},
            "advice": ly["advice"],
        }
        for ly in full["layers"]
    ]
    repro = full["reproducibility"]
    repro.update(calibration_sha256=None, spec={"kind": "analyze", "seed": 0})
    return {
        "schema": full["schema"],
        "kind": "analyze",
        "model": full["model"],
        "summary": {"params": {"before": 50826}, "bytes": {"before": full["summary"]["bytes"]["before"]}},
        "layers": layers,
        "diagnostics": full["diagnostics"],
        "not_covered": [],
        "reproducibility": repro,
        "artifacts": [],
    }
