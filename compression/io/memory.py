"""Process memory: glibc's ``mallopt`` thresholds, set once by the CLI and the worker.

glibc serves an allocation from ``mmap`` only above its mmap threshold, and after the first large
free it raises that threshold dynamically up to 32 MiB (glibc manual, "Memory Allocation Tunables",
``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``). With that default, the float64 temporaries of one
layer's draw (8–134 MiB on a 4096×4096 layer) stay in the heap after they are freed and the heap
fragments: the peak RSS of ``netshrink compress --bits 4`` on the 17M-parameter MLP of
``bench/scale.py`` was 1.36 GiB with the default against 1.10 GiB with a fixed threshold (one run each).

A fixed threshold that is too low costs time instead: every freed buffer above it goes back to the OS
and the next one is faulted in again, zeroed page by page. At 1 MiB the ``--target-top1 0.99`` job on
that MLP took 3.1–3.4 M minor page faults, 7–8 s of system time out of ~40 CPU s. The mmap threshold
is therefore **8 MiB** (buffers up to it, such as the sensitivities' per-chunk activations, are reused
inside the heap; larger ones still go back at once), and the heap's free top is trimmed above **1 MiB**
(a 32 MiB trim saved more time but raised the export's peak, tests/compression/export/test_placeholders.py,
from 1.3x to 1.55x the weight). Measured with ``/usr/bin/time``, the same ``model.onnx`` bytes
(2026-12-04 10:40–10:55 UTC): ``--target-top1 0.99``, three alternating pairs against 1 MiB: wall
27.41/28.22/28.28 → 25.17/25.84/24.74 s, system time (median) 8.3 → 5.8 s, faults 3.12 M → 1.99 M,
peak RSS 1.043 → 1.116 GiB (limit 1.19); the 64→8192→8192→10 MLP (``--bits 4 --no-html``) 1.661 →
1.666–1.680 GiB (limit 1.757) at the same 42–44 s. The CLI and the worker call
``release_large_buffers`` once, before loading a model.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "release_large_buffers"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 8 << 20
TRIM_THRESHOLD_BYTES = 1 << 20


def release_large_buffers() -> bool:
    """Serve every allocation of ≥ 8 MiB by ``mmap``, so that freeing it returns it at once; reuse
    smaller freed buffers inside the heap, and trim its free top above 1 MiB.

    Fixing the thresholds also turns off glibc's dynamic rise. Returns False (and changes nothing)
    where the C library has no ``mallopt`` (not glibc).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        )
    except (OSError, AttributeError):
        return False
