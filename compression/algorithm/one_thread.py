"""A context in which torch runs its ops on one thread (the elementwise loops of the refit and of the
rounding, issue 10).

On the shared 2-core machine a parallel region per op waits for both threads: the refit's per-column
ops are a few thousand entries each (torch.round of 4,096 floats: 7.8 µs on one thread, 6.9 ms on two
at load average 10), and the rounding loop's passes over 256K-entry sub-blocks took a median 3.7 s
per 4096×4096 matrix on two threads against 0.83 s on one at load average 5 (0.40 CPU s; 00:45 UTC,
2026-12-04). The thread count changes no number inside: the ops run under it are elementwise or
rank-1 updates, without reductions (a caller keeps its reductions outside).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside, the caller's thread count restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
