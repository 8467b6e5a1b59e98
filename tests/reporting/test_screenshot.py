"""The rendered page in a real headless Chromium: a full-size, non-blank PNG whose charts drew.

Needs Debian's ``chromium`` (``.ci/run`` installs it); without it the test fails, it does not skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from netshrink.reporting import screenshot

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)  # (H, W, 3)


def _near(px: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels lie within ``tol`` (per channel) of ``rgb``."""
    return int(np.all(np.abs(px - np.array(rgb, dtype=np.int16)) <= tol, axis=-1).sum())


def test_chromium_is_installed() -> None:
    assert screenshot.find_browser() is not None, "install Debian's chromium (apt-get install -y chromium)"


def test_screenshot_of_the_sample_report(tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    html = tmp_path / "report.html"
    out = screenshot.screenshot_report(screenshot.sample_report(), png, html_path=html)
    assert out == png.resolve() and html.is_file()
    assert png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as im:
        assert im.size == screenshot.WINDOW  # (1280, 2400)
    px = _pixels(png)
    assert float(px.std()) > 20.0, "blank page"
    dark = int((px.max(axis=-1) < 90).sum())  # text
    assert dark > 20_000, f"too little text rendered ({dark} dark pixels)"
    # the inline SVG charts painted: the page's accent blue and the tier-T green of the bounds chart
    assert _near(px, (0x00, 0x72, 0xB2)) > 2_000
    assert _near(px, (0x00, 0x9E, 0x73), tol=30) > 200
    # the header is at the top, not an error page: the first 120 rows hold dark text on white
    assert (px[:120].max(axis=-1) < 90).sum() > 1_000


def test_cli_renders_a_report_json(tmp_path: Path, analyze_report: dict[str, Any]) -> None:
    src = tmp_path / "report.json"
    src.write_text(json.dumps(analyze_report), encoding="utf-8")
    png = tmp_path / "shots" / "analyze.png"
    assert screenshot.main([str(src), "--out", str(png)]) == 0
    px = _pixels(png)
    assert px.shape == (screenshot.WINDOW[1], screenshot.WINDOW[0], 3)
    assert float(px.std()) > 20.0


def test_missing_browser_is_a_clear_error(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><p>x</p>", encoding="utf-8")
    with pytest.raises(screenshot.ScreenshotError, match="not found|could not be started|exited"):
        screenshot.screenshot_html(page, tmp_path / "p.png", browser=str(tmp_path / "no-such-chromium"))
