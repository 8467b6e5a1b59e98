"""Shared fixtures for the report.html tests: the sample reports, rendered once per session."""

from __future__ import annotations

from typing import Any

import pytest

from netshrink.reporting import render_html
from netshrink.reporting.sample import sample_analyze_report, sample_report

EVIL = "<script>alert(1)</script>"


@pytest.fixture()
def report() -> dict[str, Any]:
    """A fresh full ``compress`` sample report (tests may mutate it)."""
    return sample_report()


@pytest.fixture()
def analyze_report() -> dict[str, Any]:
    return sample_analyze_report()


@pytest.fixture(scope="session")
def sample_html() -> str:
    """The full sample report rendered once (rendering draws five matplotlib charts)."""
    return render_html(sample_report())
