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

__all__ = ["PRELUDE", "SQUARE_LAYER", "peak_ratio"]

PRELUDE = """
def status(key):  # kB fields of /proc/self/status: VmRSS (now), VmHWM (peak since the reset)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
def reset_peak():  # VmHWM := VmRSS from here on; returns that RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
"""

# A script's set-up for one n×n dense layer (n = argv[1]) and 600 rows of inputs Z, Zd (the
# compensation memory tests): freed buffers go back to the OS, as in the CLI and the worker.
SQUARE_LAYER = """
import sys
from netshrink.compression.io.memory import release_large_buffers
release_large_buffers()  # freed buffers go back to the OS, as in the CLI and the worker
import numpy as np, torch
from netshrink.compression.graph.network import Layer
torch.set_num_threads(1)
n = int(sys.argv[1])
rng = np.random.default_rng(0)
W = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
layer = Layer("fc", 1, "dense", W, np.zeros(n, np.float32), "w", "b", structured=True)
Zd = torch.from_numpy(np.abs(rng.standard_normal((600, n))).astype(np.float32))  # (S, n_in)
Z = Zd + 0.01 * torch.from_numpy(rng.standard_normal((600, n)).astype(np.float32))
"""


def peak_ratio(script: str, *args: str, cwd: Path | None = None) -> float:
    """Run ``PRELUDE + script`` with ``args`` in a fresh interpreter; the float it prints."""
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *args], capture_output=True, text=True, check=True, cwd=cwd
    )
    return float(out.stdout.strip())
