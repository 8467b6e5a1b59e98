"""Escaping and number formatting for report.html.

Every string that comes from a report goes through :func:`esc` (the report carries user-controlled
names). A value that is null or missing renders as an em dash, never as ``None`` or ``0``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

DASH = '<span class="na" title="not available">—</span>'


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``, quotes included (safe in text and in attribute values)."""
    return html.escape(str(value), quote=True)


def get(obj: Any, *path: str | int) -> Any:
    """``obj[p0][p1]…`` that returns None when any step is missing, null or of the wrong type."""
    for key in path:
        if isinstance(obj, Mapping) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, Sequence) and not isinstance(obj, str) and isinstance(key, int):
            obj = obj[key] if -len(obj) <= key < len(obj) else None
        else:
            return None
    return obj


def is_num(value: Any) -> TypeGuard[int | float]:
    """A finite int or float (bool excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (scientific for tiny or huge values)."""
    if not is_num(value):
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.{digits - 1}e}"
    return f"{value:,.{digits}g}"


def pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage: 0.031 → ``3.1 %``."""
    return f"{100.0 * value:.{digits}f} %" if is_num(value) else DASH


def nbytes(value: Any) -> str:
    """Exact bytes with a human-readable size: ``204,110 B (204.1 kB)``."""
    if not is_num(value):
        return DASH
    return f"{int(value):,} B ({human_bytes(value)})"


def human_bytes(value: Any) -> str:
    if not is_num(value):
        return DASH
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000.0 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000.0
    raise AssertionError("unreachable")


def yes_no(value: Any, yes: str = "yes", no: str = "no") -> str:
    """A coloured badge for a boolean; a dash for null (not applicable)."""
    if value is True:
        return f'<span class="badge ok">{esc(yes)}</span>'
    if value is False:
        return f'<span class="badge bad">{esc(no)}</span>'
    return DASH


def text(value: Any) -> str:
    """An escaped string, or a dash for null/missing."""
    return DASH if value is None or value == "" else esc(value)


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, caption: str = "", cls: str = "") -> str:
    """A table whose cells are already-escaped HTML; ``head`` and ``caption`` are escaped here."""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    ths = "".join(f'<th scope="col">{esc(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{esc(cls)}"' if cls else ""
    inner = f"{cap}<thead><tr>{ths}</tr></thead><tbody>{body}</tbody>"
    return f'<div class="scroll"><table{klass}>{inner}</table></div>'


def kv_table(rows: Iterable[tuple[str, str]], *, caption: str = "") -> str:
    """A two-column key/value table; keys are escaped here, values are already HTML."""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="kv">{cap}<tbody>{body}</tbody></table>'
