"""Render report.html in Debian's headless Chromium and save a PNG screenshot.

    python -m reporting.screenshot [report.json] [--out report.png] [--html report.html]

Without a report, the sample report (``reporting.sample``) is used (``make screenshot``). The
browser runs with a throw-away profile, no network features and ``--no-sandbox`` (CI runs as root).
Ref: issue 5 ("check the rendering in a real headless browser").
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from netshrink.reporting.html import render_html
from netshrink.reporting.sample import sample_report

WINDOW = (1280, 2400)  # width, height in CSS pixels (device scale factor 1)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class ScreenshotError(RuntimeError):
    """Chromium is missing, failed, or wrote no screenshot."""


def find_browser() -> str | None:
    """The first Chromium-family executable on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot_html(
    html_path: Path,
    png_path: Path,
    *,
    window: tuple[int, int] = WINDOW,
    browser: str | None = None,
    timeout_s: float = 90.0,
) -> Path:
    """Load ``html_path`` (a local file) in headless Chromium and write a ``window``-sized PNG."""
    exe = browser or find_browser()
    if exe is None:
        raise ScreenshotError("chromium not found on PATH (Debian: apt-get install -y chromium)")
    png_path = png_path.resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="netshrink-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size={window[0]},{window[1]}",
            html_path.resolve().as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(f"chromium did not finish within {timeout_s:.0f} s") from exc
        except OSError as exc:  # not executable, vanished between which() and run(), ...
            raise ScreenshotError(f"chromium could not be started: {exc}") from exc
    if proc.returncode != 0 or not png_path.is_file():
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise ScreenshotError(f"chromium exited with {proc.returncode} and no screenshot:\n{tail}")
    return png_path


def screenshot_report(
    report: dict[str, Any], png_path: Path, *, html_path: Path | None = None, window: tuple[int, int] = WINDOW
) -> Path:
    """Render ``report`` to HTML (kept at ``html_path`` when given) and screenshot it to ``png_path``."""
    page = render_html(report)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(page, encoding="utf-8")
        return screenshot_html(html_path, png_path, window=window)
    with tempfile.TemporaryDirectory(prefix="netshrink-report-") as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(page, encoding="utf-8")
        return screenshot_html(path, png_path, window=window)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reporting.screenshot", description=__doc__.splitlines()[0]
    )
    parser.add_argument("report", nargs="?", type=Path, help="report.json (default: the built-in sample)")
    parser.add_argument(
        "--out", type=Path, default=Path("report.png"), help="PNG to write (default report.png)"
    )
    parser.add_argument("--html", type=Path, default=None, help="also keep the rendered HTML here")
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8")) if args.report else sample_report()
    try:
        out = screenshot_report(report, args.out, html_path=args.html)
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
