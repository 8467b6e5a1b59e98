"""One thread budget per process, for torch and for numpy's BLAS.

``torch.set_num_threads`` sizes torch's intra-op pool only; numpy's OpenBLAS keeps one thread per
core, so a worker told to use one thread per job (``NETSHRINK_TORCH_THREADS=1``) still ran numpy's
products (the refits' moments, the certificates' Lanczos steps) on every core, where idle BLAS
threads spin. On the 2-core machine, the digits MLP of ``python -m bench.search_cpu --models mlp``
(one torch thread; same ``model.onnx`` either way): a single compress 0.27 → 0.18 CPU s (median of
3) with ``OPENBLAS_NUM_THREADS=1``, the budget search 0.56 → 0.49 s, on a quiet machine (load 0.8);
with other work on the machine (load 2–2.4) the search took 1.08–1.30 CPU s uncapped against
0.30 s capped. threadpoolctl caps every BLAS library loaded in the process (numpy's OpenBLAS, MKL,
BLIS) to the same count.
"""

from __future__ import annotations


def limit_threads(n: int) -> None:
    """torch's intra-op threads and every loaded BLAS pool to ``n`` (for the rest of the process)."""
    import numpy  # noqa: F401  (loads numpy's BLAS, so that threadpoolctl finds and caps it)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")
