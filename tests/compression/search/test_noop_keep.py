"""A neuron/channel keep that rounds to keeping every unit (found by probing, 2026-12-05).

On a DenseNet-style concat CNN, keep 0.9 of a 4-channel space keeps ⌊0.9·4 + ½⌋ = 4 channels: nothing
is dropped. Such a layer was reported ``compressed: true`` (keep target 0.9, realized 1.0), no warning
was given, the file grew (the working graph, its mean -> GlobalAveragePool + Flatten rewrite included,
was written instead of the upload), and the budget search credited the keep with bytes it never
saved and shipped it as "budget met". The same holds on a chain for magnitude/OBD, which keep
round(κG) units. ``search/units.py`` has the counts.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.export.export_onnx import export_onnx_detailed
from netshrink.compression.graph.calibration import Calibration
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.mixed import _nbytes
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D
from tests import factories

D2, TRANS, FC = "/d2/d2.0/Conv", "/trans/trans.0/Conv", "/fc/Gemm"


def _cbr(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DenseNet(nn.Module):
    """The probe's model: stem (8 ch) -> two dense layers (growth 4) concatenated onto it -> a 1×1
    transition (16 -> 8 ch) -> ``x.mean((2, 3))`` -> Linear. Spaces: stem's 8 channels (decided by d1),
    d1's 4 (by d2), d2's 4 (by trans), trans's 8 (by fc)."""

    def __init__(self, w: int = 8, growth: int = 4) -> None:
        super().__init__()
        self.stem, self.d1, self.d2 = _cbr(3, w), _cbr(w, growth), _cbr(w + growth, growth)
        self.trans = nn.Sequential(
            nn.Conv2d(w + 2 * growth, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.AvgPool2d(2)
        )
        self.fc = nn.Linear(w, D.N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.cat([h, self.d1(h)], 1)
        h = torch.cat([h, self.d2(h)], 1)
        return self.fc(self.trans(h).mean((2, 3)))


@functools.lru_cache(maxsize=1)
def _dense_onnx() -> bytes:
    """DenseNet trained 25 full-batch Adam steps on ``dag_models.task_data`` (seeded), exported by the
    TorchScript exporter (``dag_models._export``: BN nodes kept, the loader folds them)."""
    torch.manual_seed(0)
    model = DenseNet()
    X, y = (torch.from_numpy(a) for a in D.task_data(96, seed=1))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(25):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        D._export(model.eval(), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def dense(model_dir: Path) -> Network:
    return load_model(factories.write_bytes(_dense_onnx(), model_dir / "densenet.onnx"))


def _calibration() -> Calibration:
    X, y = D.task_data(160, seed=5)
    return Calibration(X, y, sha256="test")


def _fp32(net: Network) -> dict[str, int | None]:
    return {layer.name: None for layer in net.layers}


def _keeps(net: Network, keep: dict[str, float]) -> dict[str, float]:
    return {layer.name: keep.get(layer.name, 1.0) for layer in net.layers}


def _compress(net: Network, spec: dict[str, Any]) -> dict[str, Any]:
    return compress(net, CompressSpec.from_dict({"seed": 0, **spec}), calibration=_calibration()).report


def test_a_keep_that_keeps_every_channel_is_no_compression_and_is_warned(dense: Network) -> None:
    """(1) ``compressed: false`` and a warning naming the layer, the keep and the units; (2) the file
    is the upload, byte for byte (it grew by the working graph's Flatten before)."""
    spec = CompressSpec.from_dict(
        {"prune": {"keep": {D2: 0.9, TRANS: 0.9}, "granularity": "channel"}, "seed": 0}
    )
    result = compress(dense, spec, calibration=_calibration())
    layers = {la["name"]: la for la in result.report["layers"]}
    assert not any(la["compressed"] for la in layers.values()), {n: la["keep"] for n, la in layers.items()}
    assert layers[D2]["keep"] is None and layers[D2]["shape_after"] == [4, 12, 3, 3]
    notes = [w for w in result.report["summary"]["warnings"] if "drops no unit" in w]
    assert len(notes) == 1
    assert f"{D2} keep 0.9 of the 4-channel space it decides keeps all 4" in notes[0]
    assert f"{TRANS} keep 0.9 of the 4-channel space it decides keeps all 4" in notes[0]
    assert result.artifacts["model.onnx"] == dense.upload_bytes()
    s = result.report["summary"]
    assert s["bytes"]["ratio"] == 1.0 and s["error"]["relative_l2"] == 0.0


def test_an_unchanged_weight_is_not_written_by_the_export(dense: Network) -> None:
    """(2) at the exporter: a CompressedWeight equal to the layer's weight, unquantized, nothing
    dropped, leaves the upload as it is; next to a real change, its tensor is the working graph's."""
    d2 = dense.layer(D2)
    same = CompressedWeight(layer=D2, weight=d2.weight.copy(), dropped_inputs=np.zeros(0, np.int64))
    out = export_onnx_detailed(dense, {D2: same})
    assert out.data == dense.upload_bytes() and out.layers == ()
    fc = dense.layer(FC)
    halved = CompressedWeight(layer=FC, weight=fc.weight * np.float32(0.5))
    mixed = onnx.load_from_string(export_onnx_detailed(dense, {D2: same, FC: halved}).data)
    shipped = {t.name: t.SerializeToString() for t in mixed.graph.initializer}
    working = {t.name: t.SerializeToString() for t in dense.model.graph.initializer}
    assert shipped[d2.weight_key] == working[d2.weight_key]
    assert shipped[fc.weight_key] != working[fc.weight_key]


def test_the_byte_model_counts_only_the_channels_a_keep_drops(dense: Network) -> None:
    """(3) the budget search's modelled bytes: keep 0.9 of a 4-channel space saves nothing, and for
    real keeps the model is the exported file's weight bytes exactly (float32, structured only)."""
    fp32 = _fp32(dense)
    start = _nbytes(dense, _keeps(dense, {}), fp32)
    assert _nbytes(dense, _keeps(dense, {D2: 0.9, TRANS: 0.9}), fp32) == start
    for keep in ({D2: 0.8}, {TRANS: 0.6, "/d1/d1.0/Conv": 0.9}, {FC: 0.8, D2: 0.9}):
        report = _compress(dense, {"prune": {"keep": keep, "granularity": "channel"}, "draws": 1})
        weights = report["summary"]["bytes"]["after"]["weights"]
        assert _nbytes(dense, _keeps(dense, keep), fp32) == weights < start, keep


def test_a_concat_reader_applies_a_channel_another_reader_drops(dense: Network) -> None:
    """d2's keep draws d1's channels, which trans reads too; trans's own space kept whole (keep 1)
    used to leave trans undrawn: the export refused the model ("channel group ... is dropped by some
    readers but not by '/trans/trans.0/Conv'", exit 2) and the search measured a network it could
    not ship (found with the tests above, 2026-12-05)."""
    report = _compress(dense, {"prune": {"keep": {D2: 0.8}, "granularity": "channel"}, "draws": 1})
    shapes = {la["name"]: (la["shape_before"], la["shape_after"]) for la in report["layers"]}
    assert shapes["/d1/d1.0/Conv"] == ([4, 8, 3, 3], [3, 8, 3, 3])  # one of d1's channels ...
    assert shapes[D2] == ([4, 12, 3, 3], [4, 11, 3, 3])  # ... deleted in both its readers
    assert shapes[TRANS] == ([8, 16, 1, 1], [8, 15, 1, 1])


def test_the_budget_search_never_ships_a_keep_that_drops_nothing(dense: Network) -> None:
    """(3) end to end: the probe's search (pruning only) ships no layer as compressed that it left as
    it is, and the bytes it modelled for its pick are the file's."""
    target = {"metric": "top1_agreement", "min": 0.9}
    report = _compress(dense, {"target": target, "prune": {"keep": 0.5, "granularity": "channel"}})
    for la in report["layers"]:
        assert not la["compressed"] or la["shape_after"] != la["shape_before"], la["name"]
    keep = report["budget"]["chosen"]["keep"]
    weights = report["summary"]["bytes"]["after"]["weights"]
    assert _nbytes(dense, _keeps(dense, keep), _fp32(dense)) == weights
    moves = [t for t in report["budget"]["trace"] if ": keep -> " in str(t["move"])]
    assert moves and all(f"{D2}: keep -> 0.9" != t["move"] for t in moves)


# ---- a chain MLP: magnitude/OBD keep round(κG) of a layer's G input units ---------------------------
@pytest.fixture(scope="module")
def narrow_mlp(model_dir: Path) -> Network:
    """8 -> 4 -> 4 -> 3: keep 0.9 of 4 neurons rounds to 4."""
    return load_model(factories.write_bytes(factories.mlp_onnx((8, 4, 4, 3)), model_dir / "narrow.onnx"))


def test_a_chain_keep_that_rounds_to_every_neuron_is_no_compression(narrow_mlp: Network) -> None:
    spec = {"prune": {"keep": 0.9, "granularity": "neuron", "method": "magnitude"}, "seed": 0}
    result = compress(narrow_mlp, CompressSpec.from_dict(spec))
    assert not any(la["compressed"] for la in result.report["layers"])
    notes = [w for w in result.report["summary"]["warnings"] if "drops no unit" in w]
    second = narrow_mlp.layers[1].name
    assert len(notes) == 1 and f"{second} keep 0.9 of the 4 neurons it reads keeps all 4" in notes[0]
    assert "magnitude keeps max(1, round(κG))" in notes[0]
    assert result.artifacts["model.onnx"] == narrow_mlp.upload_bytes()


def test_p1s_rule_on_a_chain_is_not_a_no_op_and_is_not_warned(narrow_mlp: Network) -> None:
    """P1's randomized rule draws every unit (Bernoulli(p), survivors scaled by 1/p): keep 0.9 of 4
    neurons changes the weights even when no neuron is dropped, so the layer is compressed."""
    spec = {"prune": {"keep": 0.9, "granularity": "neuron"}, "compensate": False, "seed": 0, "draws": 1}
    result = compress(narrow_mlp, CompressSpec.from_dict(spec))
    assert [la["compressed"] for la in result.report["layers"]] == [False, True, True]
    assert not [w for w in result.report["summary"]["warnings"] if "drops no unit" in w]


def test_a_chain_budget_search_offers_no_keep_that_drops_nothing(narrow_mlp: Network) -> None:
    """Magnitude keeps round(κG): on 4 neurons 0.9 keeps 4 (as 1.0 does) and 0.7 keeps 3 (as 0.8
    does); the search's keep moves on these layers are to 0.8, 0.6 and 0.3 only, and the bytes it
    modelled for its pick are the file's."""
    spec = {
        "target": {"metric": "top1_agreement", "min": 0.99},
        "prune": {"keep": 0.5, "granularity": "neuron", "method": "magnitude"},
        "seed": 0,
    }
    report = compress(narrow_mlp, CompressSpec.from_dict(spec)).report
    trace = report["budget"]["trace"]
    moves = [str(t["move"]).split(" -> ") for t in trace if ": keep -> " in str(t["move"])]
    assert moves and {float(k) for _, k in moves} <= {0.8, 0.6, 0.3}, moves
    keep = report["budget"]["chosen"]["keep"]
    weights = report["summary"]["bytes"]["after"]["weights"]
    from netshrink.compression.search.units import unit_model  # new (a module import fails on old code)

    units = unit_model(narrow_mlp, CompressSpec.from_dict(spec))
    assert _nbytes(narrow_mlp, _keeps(narrow_mlp, keep), _fp32(narrow_mlp), units) == weights
