"""Process memory: freed large buffers go back to the operating system (glibc ``mallopt``).

glibc serves an allocation from ``mmap`` only above its mmap threshold, and after the first large
free it raises that threshold dynamically up to 32 MiB (glibc manual, "Memory Allocation Tunables",
``M_MMAP_THRESHOLD``). The float64 temporaries of one layer's draw (8–134 MiB on a 4096×4096 layer)
then stay in the heap after they are freed, and the heap fragments: on the 17M-parameter MLP of
``bench/scale.py`` the peak RSS of ``netshrink compress --bits 4`` was 1.36 GiB with the default and
1.10 GiB with a fixed 1 MiB threshold, at the same wall time within the noise (one run each, loaded
2-core machine). The CLI and the worker call ``release_large_buffers`` once before loading a model.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD_BYTES", "release_large_buffers"]

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 1 << 20


def release_large_buffers() -> bool:
    """Serve every allocation of ≥ 1 MiB by ``mmap``, so that freeing it returns it at once.

    Fixing the threshold also turns off glibc's dynamic rise. Returns False (and changes nothing)
    where the C library has no ``mallopt`` (not glibc).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
