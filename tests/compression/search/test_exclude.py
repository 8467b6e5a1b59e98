"""``exclude`` leaves a layer as it is, its rows included: a neuron/channel prune of a layer that
reads an excluded layer's units does not delete them (found by probing, 2026-12-05: the excluded
layer lost output rows, [32, 32] -> [14, 32], and the report said ``compressed: false``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D
from tests import factories


def _shapes(report: dict[str, object]) -> dict[str, tuple[list[int], list[int]]]:
    return {la["name"]: (la["shape_before"], la["shape_after"]) for la in report["layers"]}  # type: ignore[index,union-attr]


def test_an_excluded_layer_keeps_its_rows_under_neuron_pruning(mlp_net: Network) -> None:
    first, second, _ = (la.name for la in mlp_net.layers)  # 16 -> 64 -> 64 -> 8
    spec = CompressSpec.from_dict(
        {"prune": {"keep": 0.5, "granularity": "neuron"}, "exclude": [first], "seed": 0}
    )
    result = compress(mlp_net, spec)
    shapes = _shapes(result.report)
    assert shapes[first] == ([64, 16], [64, 16])  # its rows are the second layer's inputs: kept
    before, after = shapes[second]
    assert after[1] == before[1] == 64 and after[0] < 64  # its own rows, read by the third, are pruned
    key = mlp_net.layers[0].weight_key
    shipped = {t.name: t for t in onnx.load_from_string(result.artifacts["model.onnx"]).graph.initializer}
    uploaded = {t.name: t for t in mlp_net.original.graph.initializer}
    np.testing.assert_array_equal(numpy_helper.to_array(shipped[key]), numpy_helper.to_array(uploaded[key]))


def test_an_excluded_conv_of_a_residual_cnn_keeps_its_channels(model_dir: Path) -> None:
    net = load_model(factories.write_bytes(D.onnx_bytes("resnet"), model_dir / "resnet.onnx"))
    name = "/layer1/conv1/Conv"
    spec = CompressSpec.from_dict(
        {"prune": {"keep": 0.5, "granularity": "channel"}, "exclude": [name], "seed": 0}
    )
    shapes = _shapes(compress(net, spec).report)
    assert shapes[name][0] == shapes[name][1] == [8, 8, 3, 3]
    assert any(after != before for before, after in shapes.values())  # the rest is still pruned
