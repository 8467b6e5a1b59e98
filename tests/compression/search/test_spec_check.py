"""``search/spec_check.check_spec``: specs that cannot apply to the loaded network are refused before
anything is drawn (the service's 422 on submit): a neuron/channel keep below one unit per layer, a
top-1 target on a one-output model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.search.spec_check import check_spec
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D
from tests import factories


def test_a_neuron_keep_below_one_unit_per_layer_is_a_spec_error(mlp_net: Network) -> None:
    """64 neurons at κ = 0.01 keep 0.64 on average: refused before anything is drawn, naming the layer
    and the smallest keep, as the service does on submit (check_spec). κ = 0.02 (1.28) compresses,
    and every layer keeps a neuron."""
    spec = CompressSpec.from_dict({"prune": {"keep": 0.01, "granularity": "neuron"}, "seed": 0})
    with pytest.raises(
        InvalidSpecError, match=r"keeps 0.64 of the 64 unit\(s\) layer .*\(keep > 0.0156"
    ) as info:
        check_spec(mlp_net, spec)
    assert info.value.field == "prune.keep"
    excluded = [layer.name for layer in mlp_net.layers if layer.structured]
    with pytest.raises(InvalidSpecError, match="keeps 0.64"):  # one layer left: still refused
        check_spec(mlp_net, dataclasses.replace(spec, exclude=tuple(excluded[1:])))
    with pytest.raises(InvalidSpecError, match="applies to no layer"):  # none left (rule 10)
        check_spec(mlp_net, dataclasses.replace(spec, exclude=tuple(excluded)))
    for seed in range(8):  # each export is run in onnxruntime: a layer with no input would fail there
        ok = CompressSpec.from_dict(
            {"prune": {"keep": 0.1, "granularity": "neuron"}, "seed": seed, "draws": 1}
        )
        assert compress(mlp_net, ok).report["summary"]["params"]["after"] > 0


def test_a_top1_target_on_a_single_output_model_is_a_spec_error(model_dir: Path) -> None:
    """One output per sample: its argmax is always 0, so any model would meet a top-1 target. Once
    top-1 was measured for every top-1 target (test_pipeline_inputs.py), an 8→16→1 regressor (``tiny_mlp``,
    seed 1) 'met' 0.9 at 2 bits with κ = 0.1 before this check."""
    net = load_model(factories.write_bytes(factories.mlp_onnx((16, 32, 1)), model_dir / "regressor.onnx"))
    spec = CompressSpec.from_dict({"target": {"metric": "top1_agreement", "min": 0.9}, "seed": 0})
    with pytest.raises(InvalidSpecError, match="at least 2 outputs per sample") as info:
        check_spec(net, spec)
    assert info.value.field == "target.metric"
    check_spec(net, CompressSpec.from_dict({"target": {"metric": "relative_l2", "max": 0.1}, "seed": 0}))


def test_a_layer_that_reads_one_unit_can_only_be_excluded(model_dir: Path) -> None:
    """8 → 1 → 4: the second layer reads one neuron, which no keep can prune: the error says to
    exclude it rather than asking for a keep above 1."""
    net = load_model(factories.write_bytes(factories.mlp_onnx((8, 1, 4)), model_dir / "one_unit.onnx"))
    spec = CompressSpec.from_dict({"prune": {"keep": 0.6, "granularity": "neuron"}, "seed": 0})
    with pytest.raises(InvalidSpecError, match=r"of the 1 unit\(s\) layer .*\(exclude it\)$"):
        check_spec(net, spec)


@pytest.mark.parametrize(
    ("widths", "spec"),
    [
        ((8, 4), {"prune": {"keep": 0.5, "granularity": "neuron"}, "quantize": {"bits": 4}}),  # one layer
        ((8, 16, 4), {"prune": {"keep": {"0": 0.5}, "granularity": "neuron"}}),  # only the first layer
    ],
)
def test_a_structured_prune_that_applies_to_no_layer_is_a_spec_error(
    model_dir: Path, widths: tuple[int, ...], spec: dict[str, object]
) -> None:
    """Rule 10 (2026-12-05, found by probing): a neuron/channel prune no layer can take ran as a silent
    1.00x with no warning. A one-layer model's units are its inputs and outputs; a per-layer keep
    for the first layer only prunes the model's inputs, which are never removed."""
    net = load_model(factories.write_bytes(factories.mlp_onnx(widths), model_dir / "m.onnx"))
    names = [layer.name for layer in net.layers]
    raw = dict(spec, seed=0)
    if isinstance(raw["prune"], dict) and isinstance(raw["prune"]["keep"], dict):
        raw["prune"] = dict(raw["prune"], keep={names[0]: 0.5})
    with pytest.raises(InvalidSpecError, match="neuron pruning applies to no layer") as info:
        check_spec(net, CompressSpec.from_dict(raw))
    assert info.value.field == "prune.granularity"
    check_spec(net, CompressSpec.from_dict(dict(raw, prune=dict(raw["prune"], granularity="weight"))))  # type: ignore[arg-type]


def test_a_channel_prune_of_a_dag_needs_a_channel_space(model_dir: Path) -> None:
    """A residual CNN prunes per dependency group: excluding every first reader of every space
    leaves nothing to draw."""
    net = load_model(factories.write_bytes(D.onnx_bytes("resnet"), model_dir / "r.onnx"))
    spec = CompressSpec.from_dict({"prune": {"keep": 0.5, "granularity": "channel"}, "seed": 0})
    check_spec(net, spec)
    every = tuple(layer.name for layer in net.layers)
    with pytest.raises(InvalidSpecError, match="channel pruning applies to no layer"):
        check_spec(net, dataclasses.replace(spec, exclude=every))


def test_a_structured_prune_of_a_generic_graph_names_the_operator(tmp_path: Path) -> None:
    """The refusal said only "this graph is generic" until 2026-12-05 (found by probing SE blocks,
    SiLU and GroupNorm); it names what the analysis found, as ``not_covered`` does."""
    net = load_model(factories.write_bytes(factories.gated_onnx(), tmp_path / "gated.onnx"))
    assert net.support == "generic" and net.not_covered
    cases = (({"granularity": "neuron"}, "prune.granularity"), ({"score": "output"}, "prune.score"))
    for extra, field in cases:
        spec = CompressSpec.from_dict({"prune": {"keep": 0.5, **extra}, "seed": 0})
        with pytest.raises(InvalidSpecError) as info:
            check_spec(net, spec)
        assert info.value.field == field and "Mul 'gated' of two tensors" in info.value.detail
