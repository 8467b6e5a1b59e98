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
does not overlap.
"""

from __future__ import annotations

import threading
import time

from netshrink.compression.diagnostics.diagnostics import TensorTails, network_tails
from netshrink.compression.graph.network import Network

__all__ = ["BackgroundTails"]


class BackgroundTails:
    """``network_tails(net, seed=seed)`` computed on a daemon thread; ``wait()`` returns it (or raises
    what it raised, e.g. ``InvalidWeightsError`` for NaN weights)."""

    def __init__(self, net: Network, *, seed: int) -> None:
        self.seconds = 0.0  # the worker's wall time, set when it ends
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

    def wait(self) -> dict[str, TensorTails]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
