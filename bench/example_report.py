"""The README's example report: a digits MLP compressed through the CLI, rendered and screenshotted.

    python -m bench.example_report          # writes docs/example/{model.pt,calibration.npz,...,report.png}

It trains a 64→128→64→10 MLP on sklearn's bundled digits for a few seconds, saves it as a PyTorch
state dict, then runs exactly what a user would: ``netshrink compress model.pt --calibration
calibration.npz --prune-keep 0.5 --granularity neuron --target-error 0.1 --compare-baselines``
and finally screenshots ``report.html`` in headless Chromium.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import digits_split, mlp, mlp_architecture, train
from netshrink.cli.main import main as netshrink

OUT = Path(__file__).resolve().parents[1] / "docs" / "example"


def build_inputs(out: Path) -> list[str]:
    torch.manual_seed(0)
    split = digits_split()
    model = mlp((64, 128, 64, 10))
    train(model, split.train_X, split.train_y, epochs=30)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "architecture.json").write_text(json.dumps(mlp_architecture(model, 64), indent=2))
    np.savez(out / "calibration.npz", inputs=split.cal_X, labels=split.cal_y)
    return [
        "compress",
        str(out / "model.pt"),
        "--architecture",
        str(out / "architecture.json"),
        "--calibration",
        str(out / "calibration.npz"),
        "--prune-keep",
        "0.5",
        "--granularity",
        "neuron",
        "--bits",
        "4",
        "--target-error",
        "0.1",
        "--compare-baselines",
        "--seed",
        "0",
        "--out",
        str(out / "compressed"),
    ]


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=(
            "Takes no options. Writes docs/example/ (model.pt, architecture.json, calibration.npz, "
            "compressed/, report.png; the screenshot needs chromium)."
        ),
    ).parse_args()
    torch.set_num_threads(1)
    argv = build_inputs(OUT)
    print("netshrink " + " ".join(argv))
    code = netshrink(argv)
    from netshrink.reporting.screenshot import screenshot_html

    screenshot_html(OUT / "compressed" / "report.html", OUT / "report.png")
    print(f"exit code {code}; screenshot at {OUT / 'report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
