"""Dependency groups (DepGraph-style) on the three small CNNs of tests/dag_models.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from tests import dag_models as D


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Network]:
    d: Path = tmp_path_factory.mktemp("dep")
    out = {}
    for name in D.BUILDERS:
        (d / f"{name}.onnx").write_bytes(D.onnx_bytes(name))
        out[name] = load_model(d / f"{name}.onnx")
    return out


def test_resnet_stream_channels_couple_every_producer_and_reader_of_the_add(nets: dict[str, Network]) -> None:
    cg = nets["resnet"].channel_groups
    assert cg is not None
    stream = cg.rows["/stem/stem.0/Conv"]  # stage-1 residual stream: stem, block 1's conv2, both Adds
    np.testing.assert_array_equal(cg.rows["/layer1/conv2/Conv"], stream)
    for reader in ("/layer1/conv1/Conv", "/layer2/conv1/Conv", "/layer2/shortcut/shortcut.0/Conv"):
        np.testing.assert_array_equal(cg.units[reader], stream)
    # stage 2: block 2's conv2 and the projection shortcut meet at the Add and feed the classifier
    np.testing.assert_array_equal(cg.rows["/layer2/conv2/Conv"], cg.rows["/layer2/shortcut/shortcut.0/Conv"])
    np.testing.assert_array_equal(cg.units["/fc/Gemm"], cg.rows["/layer2/conv2/Conv"])
    # never cut: layer 1's inputs (image channels) and the network outputs (logits)
    assert "/stem/stem.0/Conv" not in cg.units and "/fc/Gemm" not in cg.rows
    assert sorted(cg.shared_upstream) == ["/layer2/conv1/Conv", "/layer2/shortcut/shortcut.0/Conv"]
    assert [len(s) for s in cg.space_groups()] == [8, 8, 16, 16]


def test_depthwise_ties_its_input_and_output_channels(nets: dict[str, Network]) -> None:
    cg = nets["mobilenet"].channel_groups
    assert cg is not None
    expand, dw, project = "/block1/body/body.0/Conv", "/block1/body/body.3/Conv", "/block1/body/body.6/Conv"
    np.testing.assert_array_equal(cg.rows[expand], cg.rows[dw])
    np.testing.assert_array_equal(cg.units[project], cg.rows[dw])
    assert dw not in cg.units  # a depthwise conv is carried by its group, not a reader


def test_concat_offsets_the_branches(nets: dict[str, Network]) -> None:
    cg = nets["concat"].channel_groups
    assert cg is not None
    mix = cg.units["/mix/mix.0/Conv"]  # 12 input channels: branch a's 6, then branch b's 6
    np.testing.assert_array_equal(mix[:6], cg.rows["/a/a.0/Conv"])
    np.testing.assert_array_equal(mix[6:], cg.rows["/b/b.3/Conv"])
    assert nets["concat"].layer("/fc/Gemm").input_group == 4  # a flattened 2x2 map per channel
    assert cg.shared_upstream == {}
