"""Fixed-batch ONNX models (``torch.onnx.export`` without dynamic axes: input ``[1, 16]``) are run in
batches of their own size, in the core's onnxruntime fallback and in the artifact re-check alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from netshrink.compression.errors import UnsupportedModelError
from netshrink.compression.evaluation.ort_eval import (
    fixed_batch,
    input_type,
    latency_ms,
    logits_of,
    run_in_batches,
    run_logits,
    session,
    with_logits_output,
)
from netshrink.compression.graph.loading import load_model
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import factories
from tests.compression.export.export_models import as_type, cnn_reshape, mlp_gemm


def test_run_in_batches_matches_torch_for_every_sample_count() -> None:
    module = factories.tiny_mlp((16, 32, 8))
    model = factories.export_onnx_fixed_batch(module, (16,))
    sess = session(model)
    assert fixed_batch(sess, sess.get_inputs()[0].name) == 1
    X = np.random.default_rng(0).standard_normal((51, 16)).astype(np.float32)  # (S, 16), S not 1
    (out,) = run_in_batches(sess, None, sess.get_inputs()[0].name, X)
    with torch.no_grad():
        ref = module(torch.from_numpy(X)).numpy()  # (51, 8)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 7])
def test_padding_of_the_last_chunk_is_cut(n: int) -> None:
    """Fixed batch 4: 3, 4 and 7 samples give 3, 4 and 7 rows, each equal to its own sample's output."""
    model = factories.residual_onnx(batch=4)
    X = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    out = run_logits(model, "input", "output", X)
    rows = [run_logits(model, "input", "output", np.repeat(X[i : i + 1], 4, axis=0))[0] for i in range(n)]
    assert out.shape == (n, 3)
    np.testing.assert_allclose(out, np.stack(rows), rtol=1e-6)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_a_fixed_batch_export_compresses_and_stays_a_drop_in(tmp_path: Path, granularity: str) -> None:
    module = factories.tiny_mlp((16, 32, 32, 8))
    path = factories.write_bytes(factories.export_onnx_fixed_batch(module, (16,)), tmp_path / "m.onnx")
    net = load_model(path)
    spec = {"prune": {"keep": 0.6, "granularity": granularity}, "quantize": {"bits": 8}, "seed": 0}
    spec["evaluation"] = {"samples": 51}
    result = compress(net, CompressSpec.from_dict(spec))
    ort_err = result.report["summary"]["error"]["onnxruntime"]["no_optimizations"]["relative_l2"]
    assert ort_err == pytest.approx(result.report["summary"]["error"]["relative_l2"], rel=1e-3)
    art = onnx.load_from_string(result.artifacts["model.onnx"])
    dims = [d.dim_value for d in art.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 16]  # the upload's batch dimension is kept


def test_a_fixed_batch_generic_graph_runs_through_the_ort_fallback(tmp_path: Path) -> None:
    net = load_model(factories.write_bytes(factories.gated_onnx(batch=4), tmp_path / "g.onnx"))
    assert net.support == "generic"
    spec = CompressSpec.from_dict({"quantize": {"bits": 8}, "seed": 0, "evaluation": {"samples": 50}})
    rep = compress(net, spec).report
    assert rep["summary"]["error"]["relative_l2"] < 0.05


def test_logits_output_is_added_only_when_missing() -> None:
    """The re-check session of a model whose logits are an output is built from the shipped bytes
    themselves (the artifact then reuses it for the latency); an inner tensor is added as an output."""
    model = factories.export_onnx_fixed_batch(factories.tiny_mlp((16, 32, 8)), (16,))
    out_name = onnx.load_from_string(model).graph.output[0].name
    assert with_logits_output(model, out_name) is model
    inner = next(n.output[0] for n in onnx.load_from_string(model).graph.node if n.output[0] != out_name)
    added = onnx.load_from_string(with_logits_output(model, inner))
    assert [o.name for o in added.graph.output] == [out_name, inner]


def test_latency_of_a_session_or_of_bytes() -> None:
    model = factories.export_onnx_fixed_batch(factories.tiny_mlp((16, 32, 8)), (16,))
    X = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    sess = session(model)
    name = sess.get_inputs()[0].name
    assert latency_ms(sess, name, X, repeats=2) > 0 and latency_ms(model, name, X, repeats=2) > 0
    out = sess.get_outputs()[0].name
    np.testing.assert_array_equal(logits_of(sess, name, out, X), run_logits(model, name, out, X))


# ---- float16 / float64 models: each session is fed its own declared input type -----------------------
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("batch", ["N", 4])
def test_a_session_is_fed_the_models_own_input_type(dtype: type, batch: int | str) -> None:
    """float32 inputs (what the core holds) reach a float16/float64 model in its own type; before,
    onnxruntime refused them: "Unexpected input data type. Actual: (tensor(float)), expected: ..."."""
    model = as_type(mlp_gemm((16, 32, 10), opset=17), dtype)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4 if batch == 4 else 0
    if batch == "N":
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    data = model.SerializeToString()
    sess = session(data)
    assert input_type(sess, "x") == dtype
    X = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)  # (S, 16) float32
    (out,) = run_in_batches(sess, None, "x", X)
    assert out.dtype == dtype and out.shape == (7, 10)
    (direct,) = session(data, "no_optimizations").run(None, {"x": X[:4].astype(dtype)})
    np.testing.assert_array_equal(run_logits(data, "x", "logits", X, "no_optimizations")[:4], direct)
    assert latency_ms(data, "x", X, repeats=1) > 0


def test_a_float64_conv_onnxruntime_has_no_kernel_for_is_refused_naming_the_type(tmp_path: Path) -> None:
    """onnxruntime's CPU provider has no float64 Conv: such an upload cannot be re-checked, and is
    refused (422 / exit 2) naming float64 and the node, never an internal error."""
    net = load_model(
        factories.write_bytes(as_type(cnn_reshape(), np.float64).SerializeToString(), tmp_path / "c.onnx")
    )
    with pytest.raises(
        UnsupportedModelError, match=r"no kernel for Conv \(node 'conv1'.* float64 model"
    ) as err:
        compress(
            net, CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "evaluation": {"samples": 20}})
        )
    assert err.value.nodes == ["conv1"]
