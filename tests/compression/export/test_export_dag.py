"""Channel pruning of residual, depthwise and concat CNNs: one draw per dependency group, physical
deletion from every member, the artifact runs in onnxruntime and agrees with the core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from netshrink.compression.graph.calibration import load_calibration
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.search.group_draw import space_keeps
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D


@pytest.mark.slow
@pytest.mark.parametrize("arch", tuple(D.BUILDERS))
def test_channel_pruning_deletes_groups_and_runs_in_onnxruntime(tmp_path: Path, arch: str) -> None:
    (tmp_path / "m.onnx").write_bytes(D.onnx_bytes(arch))
    net = load_model(tmp_path / "m.onnx")
    X, y = D.task_data(160, seed=5)
    np.savez(tmp_path / "cal.npz", inputs=X, labels=y)
    spec = CompressSpec.from_dict(
        {"prune": {"keep": 0.75, "granularity": "channel"}, "quantize": {"bits": 8}, "seed": 0}
    )
    res = compress(net, spec, calibration=load_calibration(tmp_path / "cal.npz", net))
    rep = res.report
    out = onnx.load_from_string(res.artifacts["model.onnx"])
    shapes = {e["name"]: e["shape_after"] for e in rep["layers"]}
    before = sum(int(np.prod(e["shape_before"])) for e in rep["layers"])
    assert sum(int(np.prod(v)) for v in shapes.values()) < before  # weights physically removed
    assert shapes[net.layers[0].name][1] == 3 and shapes[net.layers[-1].name][0] == D.N_CLASSES
    s = rep["summary"]["error"]
    assert s["onnxruntime"]["no_optimizations"]["relative_l2"] == pytest.approx(s["relative_l2"], rel=1e-3)
    sess = ort.InferenceSession(res.artifacts["model.onnx"])
    assert sess.run(None, {"input": X[:5]})[0].shape == (5, D.N_CLASSES)
    assert rep["summary"]["bounds"]["W"]["value"] is not None
    e = rep["summary"]["bounds"]["E"]["value"]
    reasons = [n["reason"] for n in rep["not_covered"]]
    # every tier but P is covered: a residual stream's draw shared by a block and the next takes the
    # coupled rule (docs/bounds-dag.md); P is not a bound for channel-group draws and says so
    assert e is not None and rep["summary"]["bounds"]["T"]["value"] is not None
    assert s["mse"] <= rep["summary"]["bounds"]["W"]["value"]
    assert {n["tier"] for n in rep["not_covered"]} <= {"P"}, reasons
    kept = {e["keep"]["realized"] for e in rep["layers"] if e["keep"] is not None and e["f"] is not None}
    # exactly ⌊0.75·G + ½⌋ channels kept per space (fixed-count draws): 0.75 of 4, 8, 16; 5 of 6
    assert all(abs(k - 0.75) <= 1 / 12 + 1e-9 for k in kept)
    if arch == "resnet":  # issue 9's target: ≤ 0.6× the params (0.573: keep² inside, keep at the ends)
        assert kept == {0.75}
        after = sum(int(np.prod(v)) for v in shapes.values())
        assert after / before <= 0.6
    if arch == "mobilenet":
        dw = [la for la in net.layers if la.conv is not None and la.conv.group > 1]
        assert all(shapes[la.name][1] == 1 for la in dw)
        groups = [
            a.i for n in out.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"
        ]
        assert sorted(g for g in groups if g > 1) == sorted(shapes[la.name][0] for la in dw)


@pytest.mark.parametrize("arch", ["mobilenet", "concat"])
def test_a_per_layer_keep_prunes_a_channel_space_alike_in_every_reader(tmp_path: Path, arch: str) -> None:
    """A per-layer keep (the budget search's allocations, or a user's) named one reader of a channel
    space and not the others: the space was drawn with its first reader's keep, another reader kept
    the channels, and the export refused the model as unsupported ('channel group 5 is dropped by some
    readers but not by ...': `--target-top1 0.6` on the MobileNet). Every reader of a space now takes
    the keep the space is drawn with (``space_keeps``), and the artifact runs."""
    (tmp_path / "m.onnx").write_bytes(D.onnx_bytes(arch))
    net = load_model(tmp_path / "m.onnx")
    cg = net.channel_groups
    first_readers = {cg.consumers[int(idx[0])][0] for idx in cg.space_groups() if idx.size}
    spec = CompressSpec.from_dict(
        {"prune": {"keep": {n: 0.5 for n in sorted(first_readers)}, "granularity": "channel"}, "seed": 0}
    )
    shaped = space_keeps(net, spec)
    readers = {r for g, rs in cg.consumers.items() for r in rs}
    assert shaped.prune is not None and set(shaped.prune.keep) == readers  # type: ignore[arg-type]
    res = compress(net, spec)
    sess = ort.InferenceSession(res.artifacts["model.onnx"])
    X, _ = D.task_data(4, seed=1)
    assert sess.run(None, {"input": X})[0].shape == (4, D.N_CLASSES)
    notes = [w for w in res.report["summary"]["warnings"] if w.startswith("prune.keep: on this")]
    changed = {r for r in readers if spec.prune.keep_for(r) != shaped.prune.keep_for(r)}  # type: ignore[union-attr]
    assert (len(notes) == 1 and all(f"{r} " in notes[0] for r in changed)) if changed else not notes


def test_the_budget_search_reports_the_keeps_it_draws_on_a_depthwise_cnn(tmp_path: Path) -> None:
    """`--target-top1 0.6` on the MobileNet (400 task samples, seed 1) failed at the export before
    ``space_keeps``; now it ships, and the budget's per-layer keeps are the drawn ones: one per
    channel space, the same in every reader."""
    (tmp_path / "m.onnx").write_bytes(D.onnx_bytes("mobilenet"))
    net = load_model(tmp_path / "m.onnx")
    X, y = D.task_data(400)
    np.savez(tmp_path / "cal.npz", inputs=X, labels=y)
    spec = CompressSpec.from_dict({"target": {"metric": "top1_agreement", "min": 0.6}, "seed": 1})
    res = compress(net, spec, calibration=load_calibration(tmp_path / "cal.npz", net))
    keep = {e["name"]: e["keep"] for e in res.report["budget"]["layers"]}
    cg = net.channel_groups
    for idx in cg.space_groups():
        assert len({keep[r] for g in idx for r in cg.consumers.get(int(g), [])}) <= 1
    assert any(k < 1 for k in keep.values())  # the search did prune channels
    ort.InferenceSession(res.artifacts["model.onnx"])
