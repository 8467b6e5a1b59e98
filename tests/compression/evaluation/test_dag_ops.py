"""The DAG operators of the torch executor agree with onnxruntime: Pad, Clip (ReLU6), HardSigmoid,
HardSwish, channel Concat, residual Add, grouped conv and the keepdims=0 spatial ReduceMean."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from tests import factories as F


def _graph() -> bytes:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "dw"),  # depthwise
        numpy_helper.from_array(rng.standard_normal((4, 2, 1, 1)).astype(np.float32), "gw"),  # 2 groups
        numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["p"], "pad", mode="constant"),
        helper.make_node("Conv", ["p", "dw"], ["d"], "dwconv", group=4, kernel_shape=[3, 3]),
        helper.make_node("Clip", ["d", "lo", "hi"], ["r6"], "relu6"),
        helper.make_node("Conv", ["r6", "gw"], ["gc"], "gconv", group=2, kernel_shape=[1, 1]),
        helper.make_node("HardSwish", ["gc"], ["hs"], "hswish"),
        helper.make_node("Add", ["hs", "input"], ["res"], "residual"),
        helper.make_node("HardSigmoid", ["res"], ["hg"], "hsig", alpha=1 / 6, beta=0.5),
        helper.make_node("Concat", ["res", "hg"], ["cat"], "concat", axis=1),
        helper.make_node("ReduceMean", ["cat", "axes"], ["m"], "mean", keepdims=0),
        helper.make_node("Gemm", ["m", "fc"], ["output"], "head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "ops", [F._vi("input", ["batch", 4, 5, 5])], [F._vi("output", ["batch", 3])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_dag_ops_match_onnxruntime_and_the_graph_is_full(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = _graph()
    net = load_model(F.write_bytes(data, tmp_path / "ops.onnx"))
    assert net.support == "full" and net.dag and net.not_covered == []
    assert [la.name for la in net.layers] == ["dwconv", "gconv", "head"]
    X = F.random_inputs((4, 5, 5), 6) * 3
    ours = Executor(net).run(torch.from_numpy(X), capture=["cat"])
    model = onnx.load_from_string(data)
    model.graph.output.append(helper.make_tensor_value_info("cat", onnx.TensorProto.FLOAT, None))
    ref = ort.InferenceSession(model.SerializeToString()).run(["output", "cat"], {"input": X})
    np.testing.assert_allclose(ours["output"].numpy(), ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["cat"].numpy(), ref[1], rtol=1e-5, atol=1e-5)
    assert net.layer("gconv").lipschitz == 1.5  # HardSwish's slope at x = 3
