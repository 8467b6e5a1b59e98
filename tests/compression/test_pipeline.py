"""End-to-end oracles for ``compression.pipeline.compress`` (docs/method.md §7).

Every test compares against something computed independently: a Monte-Carlo mean over seeds, the
artifact run in onnxruntime, the original model's bytes, or the file sizes themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from netshrink.compression.api import ProgressEvent
from netshrink.compression.errors import CancelledError, InvalidSpecError
from netshrink.compression.evaluation.ort_eval import session
from netshrink.compression.graph.calibration import load_calibration
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import factories

Validate = Callable[[dict[str, Any]], None]


def run(net: Network, **spec: Any) -> Any:
    spec.setdefault("seed", 0)
    spec.setdefault("evaluation", {"samples": 200})
    return compress(net, CompressSpec.from_dict(spec))


@pytest.mark.parametrize(
    "spec",
    [
        {"quantize": {"bits": 4}},
        {"prune": {"keep": 0.7}},
        {"prune": {"keep": 0.7, "granularity": "neuron"}},
    ],
    ids=["quant4", "prune-weight", "prune-neuron"],
)
def test_mean_error_below_mean_bound_and_prediction_close(mlp_net: Network, spec: dict[str, Any]) -> None:
    """Mean error over 20 draws <= mean tier-E bound; the prediction is within 25% of the mean."""
    mse, bound, pred = [], [], []
    for seed in range(20):
        # §7: Monte-Carlo tests use R = 1; tier E and the prediction are about the uncompensated draw
        s = run(mlp_net, **spec, seed=seed, draws=1, compensate=False).report["summary"]
        mse.append(s["error"]["mse"])
        bound.append(s["bounds"]["E"]["value"])
        pred.append(s["prediction"]["mse"])
    assert np.mean(mse) <= np.mean(bound)
    assert np.mean(pred) == pytest.approx(np.mean(mse), rel=0.25)


def test_report_valid_and_onnxruntime_matches_core(mlp_net: Network, validate: Validate) -> None:
    res = run(mlp_net, prune={"keep": 0.5}, quantize={"bits": 4}, compare_baselines=True)
    validate(res.report)
    s = res.report["summary"]
    ort_exact = s["error"]["onnxruntime"]["no_optimizations"]["relative_l2"]
    assert ort_exact == pytest.approx(s["error"]["relative_l2"], rel=1e-4, abs=1e-6)
    assert s["error"]["onnxruntime"]["default"]["relative_l2"] == pytest.approx(ort_exact, rel=0.05)
    for b in res.report["baselines"]:
        assert b["bounds"]["W"]["holds"] is True  # tier W holds on every draw, baselines included
    assert {b["method"] for b in res.report["baselines"]} == {"magnitude+rtn", "obd+rtn"}
    names = {a["name"] for a in res.report["artifacts"]}
    assert names == {"model.onnx"}
    rep = res.report["reproducibility"]
    assert rep["seed"] == 0 and rep["versions"]["torch"].startswith("2.13.0")


@pytest.fixture
def validate(validate_report: Validate) -> Validate:
    return validate_report


def test_same_seed_same_bytes_other_seed_differs(mlp_net: Network) -> None:
    a = run(mlp_net, prune={"keep": 0.6}, quantize={"bits": 4}, seed=7).artifacts["model.onnx"]
    b = run(mlp_net, prune={"keep": 0.6}, quantize={"bits": 4}, seed=7).artifacts["model.onnx"]
    c = run(mlp_net, prune={"keep": 0.6}, quantize={"bits": 4}, seed=8).artifacts["model.onnx"]
    assert a == b
    assert a != c


def test_spec_that_compresses_nothing_is_a_drop_in(model_dir: Path, mlp_net: Network) -> None:
    original = (model_dir / "mlp.onnx").read_bytes()
    res = run(mlp_net)
    out = res.artifacts["model.onnx"]
    m0, m1 = onnx.load_from_string(original), onnx.load_from_string(out)
    assert [i.name for i in m1.graph.input] == [i.name for i in m0.graph.input]
    assert [o.name for o in m1.graph.output] == [o.name for o in m0.graph.output]
    batch = m1.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch dimension
    x = factories.random_inputs((16,), n=5)
    (y0,) = session(original).run(None, {m0.graph.input[0].name: x})
    (y1,) = session(out).run(None, {m1.graph.input[0].name: x})
    np.testing.assert_array_equal(y0, y1)
    assert res.report["summary"]["error"]["mse"] == 0.0


def test_neuron_pruning_shrinks_shapes_and_file(mlp_net: Network) -> None:
    res = run(mlp_net, prune={"keep": 0.5, "granularity": "neuron"})
    layers = res.report["layers"]
    assert layers[0]["shape_after"][0] < 64 and layers[1]["shape_after"][1] == layers[0]["shape_after"][0]
    assert layers[0]["shape_after"][1] == 16  # the input features are never deleted
    b = res.report["summary"]["bytes"]
    assert b["after"]["total"] < 0.8 * b["before"]["total"]


def test_int4_and_int8_storage_factor(model_dir: Path) -> None:
    """Weight bytes shrink ~8x at int4 and ~4x at int8 on a model big enough for overheads to vanish."""
    net = load_model(factories.write_bytes(factories.mlp_onnx((64, 256, 256, 10)), model_dir / "w.onnx"))
    for bits, lo, hi in ((4, 6.0, 8.5), (8, 3.4, 4.2)):
        s = run(net, quantize={"bits": bits}, evaluation={"samples": 64}).report["summary"]["bytes"]
        f32_before = s["before"]["by_dtype"]["float32"]
        ints = s["after"]["by_dtype"].get(f"int{bits}", 0)
        assert ints > 0
        assert lo <= s["before"]["total"] / s["after"]["total"] <= hi
        assert f32_before / (ints + s["after"]["by_dtype"].get("float32", 0)) > lo


def test_unstructured_pruning_above_break_even_saves_nothing(mlp_net: Network) -> None:
    res = run(mlp_net, prune={"keep": 0.6})
    s = res.report["summary"]
    assert s["bytes"]["after"]["total"] >= 0.95 * s["bytes"]["before"]["total"]
    assert any("saves no bytes" in n for n in s["storage_notes"])
    sparse = run(mlp_net, prune={"keep": 0.1, "fraction": 1.0}).report["summary"]
    assert sparse["bytes"]["after"]["total"] < 0.7 * sparse["bytes"]["before"]["total"]


def test_budget_search_meets_target_and_reports_trace(mlp_net: Network) -> None:
    rep = run(mlp_net, target={"metric": "relative_l2", "max": 0.2}).report
    b, s = rep["budget"], rep["summary"]
    assert b["met"] is True and s["budget_met"] is True and s["error"]["relative_l2"] <= 0.2
    # Per-layer table: one row per layer, and the artifact holds exactly the chosen widths.
    assert [row["name"] for row in b["layers"]] == [layer.name for layer in mlp_net.layers]
    by_name = {entry["name"]: entry for entry in rep["layers"]}
    for row in b["layers"]:
        got = by_name[row["name"]]["bits"]
        assert (got or {}).get("nominal") == row["bits"]
    for c in b["trace"]:  # every measured candidate is judged against the target on the fit split,
        if c["measured"] is not None:  # and a compensated one also on the held-back quarter
            held = c["measured_held_back"]
            assert c["meets"] == (c["measured"] <= 0.2 and (held is None or held <= 0.2))
    assert any(c["measured_held_back"] is not None for c in b["trace"])  # compensated by default
    assert 1 <= b["measured_candidates"] <= 16
    # The property, not the grid: the chosen setting was measured and meets the target on the fit
    # split, and no cheaper measured setting does.
    chosen = "; ".join(
        f"{n}: {b['chosen']['bits'].get(n, 'fp32')}{'b' if n in b['chosen']['bits'] else ''}"
        + (f" keep {b['chosen']['keep'][n]:g}" if n in b["chosen"]["keep"] else "")
        for n in [layer.name for layer in mlp_net.layers]
    )
    measured = [c for c in b["trace"] if c["measured"] is not None]
    pick = next(c for c in measured if c["setting"] == chosen)
    assert pick["meets"] is True and pick["measured"] <= 0.2
    assert not any(c["meets"] for c in measured if c["bytes"] < pick["bytes"]), chosen
    # Smaller than the uniform 8-bit file at this loose target.
    int8 = run(mlp_net, quantize={"bits": 8}).report["summary"]["bytes"]["after"]["total"]
    assert s["bytes"]["after"]["total"] < int8
    only_bits = run(mlp_net, quantize={"bits": 8}, target={"metric": "relative_l2", "max": 0.2}).report
    assert only_bits["budget"]["chosen"]["keep"] == {}  # --bits alone: the search only quantizes
    impossible = run(mlp_net, quantize={"bits": 8}, target={"metric": "relative_l2", "max": 1e-7}).report
    assert impossible["summary"]["budget_met"] is False and impossible["budget"]["met"] is False


def test_unstructured_budget_keeps_the_uniform_grid(mlp_net: Network) -> None:
    rep = run(mlp_net, prune={"keep": 0.5}, target={"metric": "relative_l2", "max": 0.5}).report
    assert all(isinstance(c["keep"], float) for c in rep["budget"]["trace"])


def test_cnn_channel_pruning_runs_in_onnxruntime(cnn_net: Network, validate: Validate) -> None:
    res = run(cnn_net, prune={"keep": 0.5, "granularity": "channel"}, quantize={"bits": 8})
    validate(res.report)
    s = res.report["summary"]
    convs = [entry for entry in res.report["layers"] if entry["kind"] == "conv"]
    assert convs[0]["shape_after"][0] < convs[0]["shape_before"][0]
    assert s["error"]["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(
        s["error"]["relative_l2"], rel=1e-3, abs=1e-6
    )


def test_sklearn_classifier_keeps_label_tail(model_dir: Path, validate: Validate) -> None:
    path = factories.write_bytes(factories.sklearn_mlp_classifier_onnx(), model_dir / "skl.onnx")
    net = load_model(path)
    X, y = factories.digits_inputs(200)
    cal = load_calibration(factories.write_calibration(model_dir / "cal.npz", X, y), net)
    res = compress(net, CompressSpec.from_dict({"quantize": {"bits": 8}, "seed": 0}), calibration=cal)
    validate(res.report)
    s = res.report["summary"]
    assert s["evaluation"] == {
        "inputs": "calibration",
        "split": "holdout",
        "samples_fit": 160,
        "samples_holdout": 40,
        "scale": None,
    }
    assert s["classification"]["top1_agreement"] >= 0.95
    assert s["classification"]["accuracy_before"] is not None
    sess = session(res.artifacts["model.onnx"])
    labels, _probs = sess.run(None, {sess.get_inputs()[0].name: X[:10]})
    assert labels.shape == (10,)


def test_state_dict_in_state_dict_out(tmp_path: Path, validate: Validate) -> None:
    from netshrink.compression.export.export_torch import load_compressed_state_dict

    module = factories.tiny_mlp((8, 32, 16, 4))
    net = load_model(factories.write_pt(module, tmp_path / "m.pt"))
    res = run(net, prune={"keep": 0.5, "granularity": "neuron"}, quantize={"bits": 4})
    validate(res.report)
    assert {"model.onnx", "model.pt", "architecture.json"} <= set(res.artifacts)
    arch = json.loads(res.artifacts["architecture.json"])
    weights = load_compressed_state_dict(res.artifacts["model.pt"], arch)
    shapes = {entry["name"]: entry["shape_after"] for entry in res.report["layers"]}
    for name, shape in shapes.items():
        assert list(weights[f"{name}.weight"].shape) == shape


def test_progress_and_cancellation(mlp_net: Network) -> None:
    events: list[ProgressEvent] = []
    run_spec = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0})
    compress(mlp_net, run_spec, on_progress=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e.stage == "compressing" and e.layers_total == 3 for e in events)
    calls = iter(range(100))
    with pytest.raises(CancelledError):
        compress(mlp_net, run_spec, should_cancel=lambda: next(calls) >= 2)


def test_unknown_exclude_is_a_spec_error(mlp_net: Network) -> None:
    with pytest.raises(InvalidSpecError) as e:
        run(mlp_net, quantize={"bits": 4}, exclude=["nope"])
    assert e.value.field == "exclude"


def test_exclude_keeps_layer_dense(mlp_net: Network) -> None:
    last = mlp_net.layers[-1].name
    rep = run(mlp_net, quantize={"bits": 4}, exclude=[last]).report
    entry = next(e for e in rep["layers"] if e["name"] == last)
    assert entry["compressed"] is False and entry["bits"] is None


def test_generic_graph_reports_bounds_not_covered(model_dir: Path, validate: Validate) -> None:
    net = load_model(factories.write_bytes(factories.gated_onnx(), model_dir / "gated.onnx"))
    assert net.support == "generic"
    res = run(net, quantize={"bits": 8})
    validate(res.report)
    assert res.report["summary"]["bounds"]["E"]["value"] is None
    assert res.report["not_covered"]
    s = res.report["summary"]["error"]
    assert s["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(s["relative_l2"], rel=1e-3)


@pytest.mark.gpu
def test_cuda_matches_cpu_statistics(mlp_net: Network) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = run(mlp_net, quantize={"bits": 4}, device="cpu").report["summary"]
    gpu = run(mlp_net, quantize={"bits": 4}, device="cuda").report["summary"]
    # Same CPU-drawn randomness: the draws agree; float kernels differ only in rounding.
    assert gpu["error"]["relative_l2"] == pytest.approx(cpu["error"]["relative_l2"], rel=1e-3)
    again = run(mlp_net, quantize={"bits": 4}, device="cuda")
    assert (
        again.artifacts["model.onnx"]
        == run(mlp_net, quantize={"bits": 4}, device="cuda").artifacts["model.onnx"]
    )


def test_deterministic_method_has_no_prediction_and_says_why(mlp_net: Network, validate: Validate) -> None:
    rep = run(mlp_net, prune={"keep": 0.5, "method": "magnitude"}).report
    validate(rep)
    assert rep["summary"]["prediction"] is None
    assert rep["summary"]["error"]["mse"] > 0
    reasons = [n for n in rep["not_covered"] if n["tier"] == "prediction"]
    assert reasons and "deterministic" in reasons[0]["reason"]
    assert rep["summary"]["bounds"]["W"]["holds"] is True and rep["summary"]["bounds"]["E"]["value"] is None


def test_grouped_conv_is_quantized_with_bounds_and_its_scale_bytes_said(model_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1, groups=2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 3),
    ).eval()
    net = load_model(factories.write_bytes(factories.export_onnx(module, (4, 6, 6)), model_dir / "grp.onnx"))
    assert [layer.kind for layer in net.layers] == ["conv", "dense"] and net.support == "full"
    rep = run(net, quantize={"bits": 4}, compensate=False).report  # tier E: the uncompensated draw
    grouped = next(e for e in rep["layers"] if e["kind"] == "conv")
    assert grouped["compressed"] and grouped["bits"]["nominal"] == 4
    notes = rep["summary"]["storage_notes"]
    assert any("grouped conv (2 groups, 18 weights per channel) stored with" in n for n in notes)
    assert rep["summary"]["bounds"]["E"]["value"] is not None
    s = rep["summary"]["error"]
    assert s["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(s["relative_l2"], rel=1e-3)


def test_adaptive_avgpool_export_gets_full_support(model_dir: Path, validate: Validate) -> None:
    """torch writes AdaptiveAvgPool2d(1) as a spatial ReduceMean: read as GlobalAveragePool."""
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()
    data = factories.export_onnx(module, (1, 10, 10))
    assert "ReduceMean" in {n.op_type for n in onnx.load_from_string(data).graph.node}
    net = load_model(factories.write_bytes(data, model_dir / "gap.onnx"))
    assert net.support == "full" and net.layers[2].structured
    res = run(net, prune={"keep": 0.5, "granularity": "channel"}, quantize={"bits": 8}, compensate=False)
    validate(res.report)
    convs = [e for e in res.report["layers"] if e["kind"] == "conv"]
    assert convs[1]["shape_after"][0] < 8  # channels feeding the pool + classifier are removed
    s = res.report["summary"]
    assert s["bounds"]["E"]["value"] is not None
    assert s["error"]["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(
        s["error"]["relative_l2"], rel=1e-3, abs=1e-6
    )


def test_held_out_sensitivities_only_when_the_draw_has_a_prediction(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compensated draw has no prediction: its held-out sensitivities are not computed (time,
    issue 10); a randomized draw still gets them, and its prediction."""
    import netshrink.compression.pipeline as pipeline

    calls: list[int] = []
    real = pipeline.sensitivities

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "sensitivities", counted)
    rep = run(mlp_net, quantize={"bits": 4}, compensate=True).report
    assert rep["summary"]["compensated_layers"] and rep["summary"]["prediction"] is None
    assert calls == []
    rep = run(mlp_net, quantize={"bits": 4}, compensate=False).report
    assert rep["summary"]["prediction"] is not None and calls == [1]


def test_the_draws_arrays_are_let_go_before_the_onnxruntime_sessions(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 (memory): once the artifact is written, no per-entry array of the chosen draw (Ŵ, the
    codes, Var(t)) is alive while the onnxruntime check builds its sessions: on the 64→8192→8192→10
    MLP of bench/scale.py they are 0.56 GiB, next to the 4-bit artifact's default session (0.53 GiB).
    Before, the pipeline held the draw until the report."""
    import gc
    import weakref

    from netshrink.compression import pipeline
    from netshrink.compression.export import artifacts

    refs: list[weakref.ref[np.ndarray]] = []
    real_best_of, real_session = pipeline.best_of, artifacts.session

    def best_of(*args: Any, **kwargs: Any) -> Any:
        nd = real_best_of(*args, **kwargs)
        for d in nd.layers.values():
            refs.extend(
                weakref.ref(a) for a in (d.compressed.weight, d.compressed.codes, d.var) if a is not None
            )
        return nd

    alive: list[int] = []

    def session(*args: Any, **kwargs: Any) -> Any:
        gc.collect()
        alive.append(sum(r() is not None for r in refs))
        return real_session(*args, **kwargs)

    monkeypatch.setattr(pipeline, "best_of", best_of)
    monkeypatch.setattr(artifacts, "session", session)
    res = run(mlp_net, quantize={"bits": 4})
    assert res.report["summary"]["error"]["onnxruntime"]["default"]["relative_l2"] is not None
    assert len(refs) == 3 * len(mlp_net.layers) and len(alive) == 2  # default and no_optimizations
    assert alive == [0, 0], f"{alive} arrays of the chosen draw alive when the sessions were built"
