"""The diagnostics' SVD-free half on a worker thread (compression/diagnostics/background.py) and its use
in the pipeline's compress stage (issue 10, time): same entries, computed off the calling thread, done
before onnxruntime times the artifact."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest

from netshrink.compression.bounds.stable import sample_sas
from netshrink.compression.diagnostics import background
from netshrink.compression.diagnostics.background import OVERLAP_MIN_ENTRIES, BackgroundTails, start_tails
from netshrink.compression.diagnostics.diagnostics import diagnose_network
from netshrink.compression.errors import InvalidWeightsError
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests.network_stubs import weights_only_network


def _record_threads(monkeypatch: pytest.MonkeyPatch, *, overlap_small: bool = True) -> list[str]:
    """Records the thread that computes the tails; ``overlap_small``: the worker also for these small
    test models (``OVERLAP_MIN_ENTRIES`` lowered to 0)."""
    if overlap_small:
        monkeypatch.setattr(background, "OVERLAP_MIN_ENTRIES", 0)
    names: list[str] = []
    real = background.network_tails

    def recorded(*args: Any, **kwargs: Any) -> Any:
        names.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(background, "network_tails", recorded)
    return names


def test_worker_thread_gives_the_same_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampled α̂ (above 2^18 entries and 2^22 / cols rows), exact curves, a conv and a small layer: the
    entries built from the worker's tails are the serial ones, byte for byte."""
    rng = np.random.default_rng(7)
    net = weights_only_network(
        {
            "big": sample_sas(1.7, (640, 512), rng=rng).astype(np.float32),  # (out, in): 327,680 entries
            "conv": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),  # (out, in, kh, kw)
            "small": rng.standard_normal((10, 40)).astype(np.float32),
            "bias": rng.standard_normal(10).astype(np.float32),
        }
    )
    names = _record_threads(monkeypatch)
    bg = BackgroundTails(net, seed=3)
    tails = bg.wait()
    assert names == ["netshrink-diagnostics"] and names[0] != threading.current_thread().name
    assert set(tails) == {"big", "conv", "small"} and bg.seconds > 0
    assert tails["big"].tails.uni.sampled  # the sampled path ran on the worker
    serial = diagnose_network(net, seed=3)
    assert json.dumps(diagnose_network(net, seed=3, tails=tails)) == json.dumps(serial)


def test_worker_error_is_raised_by_wait() -> None:
    W = np.ones((8, 8), dtype=np.float32)
    W[2, 3] = np.nan
    bg = BackgroundTails(weights_only_network({"fc": W}), seed=0)
    with pytest.raises(InvalidWeightsError, match="NaN"):
        bg.wait()


def test_compress_overlaps_the_tails_with_the_compress_stage(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-draw compress computes the SVD-free half on the worker, waits for it before the
    artifact's onnxruntime sessions (no latency is timed next to it), reports it as overlapped, and its
    diagnostics equal the serial ones."""
    from netshrink.compression.export import artifacts

    names = _record_threads(monkeypatch)
    alive_at_sessions: list[bool] = []
    real_session = artifacts.session

    def session(*args: Any, **kwargs: Any) -> Any:
        alive_at_sessions.append(any(t.name == "netshrink-diagnostics" for t in threading.enumerate()))
        return real_session(*args, **kwargs)

    monkeypatch.setattr(artifacts, "session", session)
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "evaluation": {"samples": 200}})
    rep = compress(mlp_net, spec).report
    assert names == ["netshrink-diagnostics"]
    assert alive_at_sessions and not any(alive_at_sessions)
    overlapped = rep["timings"]["overlapped"]["diagnostics"]
    assert overlapped["during"][:2] == ["compress", "measure_and_bounds"] and overlapped["seconds"] > 0
    assert json.dumps(rep["diagnostics"]) == json.dumps(diagnose_network(mlp_net, seed=0))


def test_a_budget_search_starts_the_worker_after_the_search(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search's peak memory gets nothing added: the worker starts once the search has chosen."""
    names = _record_threads(monkeypatch)
    spec = CompressSpec.from_dict(
        {"target": {"metric": "relative_l2", "max": 0.2}, "seed": 0, "evaluation": {"samples": 200}}
    )
    rep = compress(mlp_net, spec).report
    assert names == ["netshrink-diagnostics"]
    overlapped = rep["timings"]["overlapped"]["diagnostics"]
    assert "search" not in overlapped["during"] and "measure_and_bounds" in overlapped["during"]
    assert json.dumps(rep["diagnostics"]) == json.dumps(diagnose_network(mlp_net, seed=0))


def test_full_diagnostics_stay_serial(mlp_net: Network, monkeypatch: pytest.MonkeyPatch) -> None:
    """--full-diagnostics (float64 copies of whole layers) adds no memory to the compress stage."""
    names = _record_threads(monkeypatch)
    spec = CompressSpec.from_dict(
        {"quantize": {"bits": 4}, "seed": 0, "evaluation": {"samples": 200}, "full_diagnostics": True}
    )
    rep = compress(mlp_net, spec).report
    assert names == [] and "overlapped" not in rep["timings"]
    assert rep["diagnostics"] == diagnose_network(mlp_net, seed=0, full=True)


def test_start_tails_overlaps_only_large_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker from the largest weight's ``OVERLAP_MIN_ENTRIES`` entries on, up to
    ``OVERLAP_MAX_ENTRIES`` (memory), never with ``full``; ``during`` leaves out the stages timed
    before it started."""
    rng = np.random.default_rng(0)
    n = int(np.sqrt(OVERLAP_MIN_ENTRIES))
    small = weights_only_network({"fc": rng.standard_normal((n, n - 1)).astype(np.float32)})  # 2^20 - n
    large = weights_only_network({"fc": rng.standard_normal((n, n)).astype(np.float32)})  # (out, in): 2^20
    assert start_tails(small, seed=0, full=False) is None
    assert start_tails(large, seed=0, full=True) is None
    bg = start_tails(large, seed=0, full=False, stages=["prepare", "search"])
    assert isinstance(bg, BackgroundTails) and set(bg.wait()) == {"fc"}
    assert bg.during(["prepare", "search", "compress", "measure_and_bounds"]) == [
        "compress",
        "measure_and_bounds",
    ]
    monkeypatch.setattr(background, "OVERLAP_MAX_ENTRIES", n * n - 1)  # the large one is now too large
    assert start_tails(large, seed=0, full=False) is None
    monkeypatch.setattr(background, "OVERLAP_MAX_ENTRIES", n * n)  # the bound itself still overlaps
    bg = start_tails(large, seed=0, full=False)
    assert isinstance(bg, BackgroundTails) and set(bg.wait()) == {"fc"}


def test_a_small_model_keeps_its_diagnostics_serial(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the default threshold the test MLP (largest weight far under 2^20 entries) starts no worker:
    no thread, no overlapped timing, the same diagnostics."""
    names = _record_threads(monkeypatch, overlap_small=False)
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "evaluation": {"samples": 200}})
    rep = compress(mlp_net, spec).report
    assert names == [] and "overlapped" not in rep["timings"]
    assert json.dumps(rep["diagnostics"]) == json.dumps(diagnose_network(mlp_net, seed=0))
