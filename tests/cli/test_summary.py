"""``cli/summary``: the printed table names the samples its error was measured on."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from netshrink.cli.summary import print_summary


@pytest.mark.parametrize(
    ("split", "label"), [("holdout", "(held-out)"), ("none", "(fitted samples: no held-out split)")]
)
def test_the_error_row_names_its_samples(split: str, label: str) -> None:
    """2026-12-05, found by probing: with no held-out split the error was printed as "held-out"."""
    report: dict[str, Any] = {
        "kind": "compress",
        "summary": {
            "bytes": {"before": {"total": 100}, "after": {"total": 50}, "ratio": 2.0},
            "error": {"relative_l2": 0.03, "p95": 0.05, "max": 0.08},
            "evaluation": {"split": split, "samples_fit": 160, "samples_holdout": 40},
        },
    }
    console = Console(record=True, width=200)
    print_summary(report, console)
    assert f"relative output error {label}" in console.export_text()
