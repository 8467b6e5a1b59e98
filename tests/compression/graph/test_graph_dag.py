"""Residual, depthwise and concatenating CNNs are read as full-support DAGs (issue 9).

Three small CNNs built and trained in torch (tests/dag_models.py), exported with the TorchScript
exporter (BatchNormalization kept as nodes, folded by the loader, inside branches too).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from tests import dag_models as D

ARCHS = tuple(D.BUILDERS)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Network]:
    d = tmp_path_factory.mktemp("dag")
    out = {}
    for name in ARCHS:
        path = d / f"{name}.onnx"
        path.write_bytes(D.onnx_bytes(name))
        out[name] = load_model(path)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_cnn_is_a_full_dag_with_bn_folded_and_matches_onnxruntime(
    nets: dict[str, Network], arch: str
) -> None:
    net = nets[arch]
    assert D.accuracy(arch) > 0.9  # the brief training worked
    assert net.support == "full" and net.dag and net.not_covered == []
    assert "BatchNormalization" in [n.op_type for n in net.original.graph.node]
    assert "BatchNormalization" not in [n.op_type for n in net.model.graph.node]
    X, _ = D.task_data(32, seed=3)
    ours = Executor(net).run(torch.from_numpy(X))[net.logits].numpy()
    ref = ort.InferenceSession(net.original.SerializeToString()).run(None, {"input": X})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(ours, D.trained(arch)(torch.from_numpy(X)).numpy(), rtol=1e-4, atol=1e-4)


def test_every_conv_is_a_layer_including_depthwise_and_projection(nets: dict[str, Network]) -> None:
    mob = nets["mobilenet"]
    groups = [la.conv.group for la in mob.layers if la.conv is not None]
    assert groups == [1, 1, 16, 1, 1, 16, 1] and len(mob.layers) == 8
    assert [la.activation for la in mob.layers[:3]] == ["clip", "clip", "clip"]
    res = nets["resnet"]
    assert len(res.layers) == 7 and any(la.conv and la.conv.strides == (2, 2) for la in res.layers)
    assert nets["concat"].layers[-2].weight.shape == (8, 12, 1, 1)  # reads the Concat of 6 + 6 channels


def test_unsupported_op_inside_a_branch_makes_the_graph_generic_with_its_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = onnx.load_from_string(D.onnx_bytes("resnet"))
    relu = next(n for n in model.graph.node if n.name == "/layer1/Relu")  # inside the first block's body
    relu.op_type = "Sin"
    path = tmp_path / "sin.onnx"
    onnx.save_model(model, path)
    net = load_model(path)
    assert net.support == "generic"
    assert net.not_covered == ["Sin '/layer1/Relu': operator not covered by the bounds"]
    assert all(not la.structured for la in net.layers)
