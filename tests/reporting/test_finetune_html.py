"""report.html for finetune reports: the three models side by side, deterministic, escaped."""

from __future__ import annotations

from typing import Any

from netshrink.reporting import render_html


def _model(acc: float, pf: float, name: str = "fc<1>") -> dict[str, Any]:
    kappa = [i / 10 for i in range(11)]
    curve = [round(1 - k, 3) for k in kappa]
    return {
        "accuracy": acc,
        "loss": 0.1,
        "history": [{"epoch": 1, "loss": 0.2, "accuracy": acc}],
        "layers": [
            {
                "name": name,
                "hidden": True,
                "rows": 64,
                "alpha": {"multivariate": 1.9, "univariate": 1.8},
                "q": {"magnitude": {"eps_0.1": 0.3}, "node": {"eps_0.1": 0.1}},
                "curves": {"kappa": kappa, "magnitude": curve, "node": curve},
            }
        ],
        "prune": {
            "fractions": [0.0, 0.5],
            "accuracy": [acc, acc - 5],
            "prunable_fraction": pf,
            "tolerance_points": 1.0,
        },
    }


def report() -> dict[str, Any]:
    return {
        "schema": "netshrink.finetune-report/1",
        "kind": "finetune",
        "model": {"format": "onnx", "n_params": 100},
        "data": {"train_samples": 10, "validation_samples": 5, "validation_source": "carved"},
        "finetune": {
            "hidden_layers": ["fc<1>"],
            "noise": {"alpha": 1.75, "sigma": 0.003, "eta": 0.01, "scale": 2e-4, "type": "per unit"},
            "original": _model(97.0, 0.1),
            "arms": {"plain": _model(98.0, 0.2), "noise": _model(97.5, 0.4)},
            "sweep": [{"sigma": 0.003, "diverged": False, "accuracy": 97.5, "prunable_fraction": 0.4}],
            "selection": {"sigma": 0.003, "rule": "largest within tolerance"},
            "tolerance_points": 1.0,
        },
        "compress": None,
        "reproducibility": {"seed": 0, "device": "cpu", "spec": {"sigma": 0.003}},
    }


def test_three_models_side_by_side_and_deterministic() -> None:
    html = render_html(report())
    assert html == render_html(report())
    assert html.count('id="chart-finetune"') == 1 and "side by side" in html
    for name in ("original", "plain", "noise"):
        assert f"<strong>{name}</strong>" in html
    assert "prunable fraction 0.4" in html and "σ sweep" in html
    assert "fc<1>" not in html and "fc&lt;1&gt;" in html
