"""report.html for netshrink reports: matplotlib charts as inline SVG, no web framework, no queue.

``render_html(report)`` turns a ``netshrink.report/1`` dict (docs/report-format.md) into one
self-contained HTML page. ``python -m reporting.screenshot`` renders it in headless Chromium.
"""

from netshrink.reporting.html import SECTION_IDS, render_html

__all__ = ["SECTION_IDS", "render_html"]
