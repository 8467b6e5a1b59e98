"""The diagnostics' SVD-free half on a worker thread, while the compress stage and the measurement run
(issue 10, time).

On a 2-core machine the compress stage's rounding and refit loops run torch on one thread
(algorithm/one_thread.py), and the measurement (measure_and_bounds, compensation_section) is mostly one
thread too, so one core waits. The diagnostics read the dense weights as uploaded and write nothing
the pipeline reads; their SVD-free half (``network_tails``: the sorted energies behind the magnitude
and node curves, both α̂, the histogram) is numpy sorts, sums, medians and seeded row samples only:
no BLAS or LAPACK call and no torch op, so no thread count and no shared random generator enters its
numbers (α̂ draws from its own ``np.random.default_rng(seed)``). On a worker thread it gives the same
bytes; numpy releases the GIL in those loops. The spectra and the Gaussian reference (LAPACK, torch's
seeded sketch) stay on the calling thread, in the diagnostics stage.

The pipeline starts the worker after the budget search (the search's own peak memory is the job's
highest; the worker's sorted squares, a float32 copy of the largest layer, are not added to it) and
waits for it before the export, i.e. before onnxruntime times anything; the wait counts in the
``diagnostics`` stage, and the report's timings give the worker's own wall seconds and the stages run
meanwhile (``overlapped``). ``--full-diagnostics`` (α̂ on all rows: float64 copies of whole layers)
does not overlap, and neither does a small model (``OVERLAP_MIN_ENTRIES``): there the tails take
milliseconds, and a worker thread only adds hand-offs of the GIL to the pipeline's many small Python
steps (the BN-folded digits CNN's single compress, 2026-12-04 05:52 UTC, medians of 7: 0.153 s wall
serial, 0.176 s with the worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from netshrink.compression.diagnostics.diagnostics import TensorTails, network_tails
from netshrink.compression.graph.network import Network

__all__ = ["OVERLAP_MAX_ENTRIES", "OVERLAP_MIN_ENTRIES", "BackgroundTails", "start_tails"]

OVERLAP_MIN_ENTRIES = 1 << 20  # the largest weight tensor's entries from which the worker pays
# ... and up to which its memory does: the worker's sorted squares (a float32 copy of the largest
# layer) and α̂'s samples are held next to the compress stage's peak. The 64→8192→8192→10 MLP (2^26
# entries) peaked at 1.77–1.93 GiB with the worker (five runs) and 1.66 GiB serial against its 1.76 GiB
# limit (bench.scale --point 8192:1437 and the same CLI job under /usr/bin/time, 2026-12-04
# 10:35–10:45 UTC; 35–38 s vs 42–47 s wall);
# the 17M MLP's 4096×4096 layer (2^24) keeps the overlap.
OVERLAP_MAX_ENTRIES = 1 << 25


def start_tails(net: Network, *, seed: int, full: bool, stages: Iterable[str] = ()) -> BackgroundTails | None:
    """The worker for ``net``'s tails, or None where the diagnostics stay serial: ``full`` (whole-layer
    float64 copies) or a model whose largest weight has under ``OVERLAP_MIN_ENTRIES`` or over
    ``OVERLAP_MAX_ENTRIES`` entries. ``stages``: the stages already timed, which ``during`` leaves out."""
    largest = max((w.size for w in net.raw_weights.values()), default=0)
    if full or not OVERLAP_MIN_ENTRIES <= largest <= OVERLAP_MAX_ENTRIES:
        return None
    return BackgroundTails(net, seed=seed, after=stages)


class BackgroundTails:
    """``network_tails(net, seed=seed)`` computed on a daemon thread; ``wait()`` returns it (or raises
    what it raised, e.g. ``InvalidWeightsError`` for NaN weights)."""

    def __init__(self, net: Network, *, seed: int, after: Iterable[str] = ()) -> None:
        self.seconds = 0.0  # the worker's wall time, set when it ends
        self._before = frozenset(after)  # stages timed before the worker started
        self._result: dict[str, TensorTails] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(net, seed), name="netshrink-diagnostics", daemon=True
        )
        self._thread.start()

    def _run(self, net: Network, seed: int) -> None:
        t0 = time.perf_counter()
        try:
            self._result = network_tails(net, seed=seed, full=False)
        except BaseException as exc:  # handed to the waiting thread
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - t0

    def during(self, stages: Iterable[str]) -> list[str]:
        """The stages of ``stages`` (in order) that were not timed before the worker started."""
        return [k for k in stages if k not in self._before]

    def wait(self) -> dict[str, TensorTails]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
