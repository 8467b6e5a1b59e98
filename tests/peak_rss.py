"""Peak RSS of one call, measured by the kernel in a fresh process (the memory tests of issue 10).

A test's script calls ``before = reset_peak()`` right before the call it measures and prints
``(status("VmHWM") - before) / <bytes>``; ``peak_ratio`` runs it with ``PRELUDE`` in front and returns
that ratio. Not a timing: VmHWM is the kernel's peak resident set, reset through
``/proc/self/clear_refs`` (Linux >= 4.0).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["PRELUDE", "peak_ratio"]

PRELUDE = """
def status(key):  # kB fields of /proc/self/status: VmRSS (now), VmHWM (peak since the reset)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
def reset_peak():  # VmHWM := VmRSS from here on; returns that RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
"""


def peak_ratio(script: str, *args: str, cwd: Path | None = None) -> float:
    """Run ``PRELUDE + script`` with ``args`` in a fresh interpreter; the float it prints."""
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *args], capture_output=True, text=True, check=True, cwd=cwd
    )
    return float(out.stdout.strip())
