"""Sparse initializers are read as the dense initializers they stand for (2026-12-05).

netshrink stores a weight pruned below the sparse break-even as an ONNX ``sparse_initializer``; ONNX's
strict, type-checked shape inference refuses those where Conv/Gemm reads a tensor, so netshrink could
not read its own pruned artifact back (analyze / compress exited 2, "ONNX shape inference failed: ...
sparse_tensor(float)"). A sparse tensor's dense size counts against the limits before it is made dense.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from netshrink.cli.main import main
from netshrink.compression.errors import LimitExceededError, ModelFormatError, UnsupportedModelError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import LoadLimits, load_model
from netshrink.compression.io import onnx_io
from tests import factories as F

QUIET = ["--quiet", "--no-html", "--threads", "1", "--seed", "0"]


def _dense(s: onnx.SparseTensorProto) -> np.ndarray:
    """The dense array a sparse tensor stands for, written out here independently of the loader."""
    values = numpy_helper.to_array(s.values)
    indices = numpy_helper.to_array(s.indices)
    out = np.zeros(tuple(s.dims), values.dtype)
    if indices.ndim == 1:
        out.reshape(-1)[indices] = values
    else:
        out[tuple(indices.T)] = values
    return out


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def pruned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``netshrink compress --prune-keep 0.2`` of a small model: its model.onnx."""
    d = tmp_path_factory.mktemp(f"sparse_{request.param}")
    data = F.mlp_onnx() if request.param == "mlp" else F.cnn_onnx(batchnorm=False)
    src = F.write_bytes(data, d / "m.onnx")
    assert main(["compress", str(src), "--prune-keep", "0.2", "--out", str(d / "out"), *QUIET]) == 0
    return d / "out" / "model.onnx"


def test_a_pruned_artifact_with_sparse_initializers_is_read_back(pruned: Path, tmp_path: Path) -> None:
    artifact = onnx.load(str(pruned))
    sparse = {s.values.name: _dense(s) for s in artifact.graph.sparse_initializer}
    assert sparse  # below the break-even the weights are stored sparse: the case this is about
    net = load_model(pruned)  # was: ModelFormatError "ONNX shape inference failed: ... sparse_tensor"
    assert not net.model.graph.sparse_initializer
    inits = {t.name: t for t in net.model.graph.initializer}
    read = [layer for layer in net.layers if layer.weight_key in sparse]
    assert read  # the pruned layers are found as layers, with the stored values
    for layer in read:
        W = sparse[layer.weight_key]
        dense = inits[layer.weight_key]
        assert dense.data_type == TensorProto.FLOAT and list(dense.dims) == list(W.shape)
        assert np.array_equal(numpy_helper.to_array(dense), W)
        assert np.array_equal(layer.weight, layer.from_onnx_layout(W))
        assert np.mean(W == 0) >= 0.7  # the pruned zeros are zeros
    X = F.random_inputs(net.input_shape, n=8)
    session = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    y_artifact = session.run(None, {net.input_name: X})[0]
    y_net = Executor(net).run(torch.from_numpy(X))[net.logits].numpy()
    np.testing.assert_allclose(y_net, y_artifact, rtol=1e-5, atol=1e-5)


def test_netshrink_analyzes_and_compresses_its_own_pruned_artifact(pruned: Path, tmp_path: Path) -> None:
    assert main(["analyze", str(pruned), "--out", str(tmp_path / "an"), *QUIET]) == 0
    out = tmp_path / "again"
    assert main(["compress", str(pruned), "--bits", "8", "--out", str(out), *QUIET]) == 0
    ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])


def _with_sparse(indices: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
    """``gemm_model`` whose weight (3, 4) is a sparse initializer with ``indices`` (flat or (nnz, 2))."""
    m = F.gemm_model()
    W = numpy_helper.to_array(m.graph.initializer[0])
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), W.shape)
    values = W.reshape(-1)[flat]
    dense = np.zeros_like(W)
    dense.reshape(-1)[flat] = values
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(values, "w"), numpy_helper.from_array(indices, "w_indices"), list(W.shape)
    )
    del m.graph.initializer[0]
    m.graph.sparse_initializer.append(sparse)
    return m, dense


@pytest.mark.parametrize(
    "indices",
    [np.array([0, 5, 6, 11], np.int64), np.array([[0, 0], [1, 1], [1, 2], [2, 3]], np.int64)],
    ids=["flat", "coordinates"],
)
def test_both_index_forms_are_made_dense(write, indices: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    m, dense = _with_sparse(indices)
    net = load_model(write(m.SerializeToString()))
    assert np.array_equal(net.layer("fc").weight, dense)  # Gemm(transB=1): (out, in) is canonical


def _hostile(dims: list[int], where: str) -> onnx.ModelProto:
    """``gemm_model`` plus a sparse tensor of one value declaring ``dims``: an unused sparse initializer,
    one in an If's branches (control flow is refused, but only after the sizes are checked), or a
    Constant's ``sparse_value`` summed into the output (onnxruntime would make it dense)."""
    m = F.gemm_model()
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(1, np.float32), "huge"),
        numpy_helper.from_array(np.zeros(1, np.int64), "huge_indices"),
        dims,
    )
    if where == "initializer":
        m.graph.sparse_initializer.append(sparse)
        return m
    if where == "subgraph":
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        branch = helper.make_graph([helper.make_node("Identity", ["h"], ["y"])], "b", [], [y])
        branch.sparse_initializer.append(sparse)
        m.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
        m.graph.node[1].CopyFrom(
            helper.make_node("If", ["cond"], ["output"], "branchy", then_branch=branch, else_branch=branch)
        )
        return m
    out = m.graph.output[0].name
    m.graph.node[-1].output[0] = "pre"
    m.graph.node.extend(
        [
            helper.make_node("Constant", [], ["huge"], "huge", sparse_value=sparse),
            helper.make_node("ReduceSum", ["huge"], ["s"], "sum", keepdims=0),
            helper.make_node("Add", ["pre", "s"], [out], "add"),
        ]
    )
    return m


@pytest.mark.parametrize("where", ["initializer", "subgraph", "constant"])
@pytest.mark.parametrize(
    ("dims", "limits"),
    [
        ([10**6, 10**6], LoadLimits()),  # each dimension within max_dim; 10^12 values (4 TB dense)
        ([2**40], LoadLimits()),  # a dimension over max_dim
        ([100, 100], LoadLimits(max_params=5_000)),  # 10^4 dense values; 2 stored
    ],
    ids=["product", "dimension", "max_params"],
)
def test_a_sparse_tensor_counts_its_dense_size_and_is_refused_before_allocation(
    write,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    dims: list[int],
    limits: LoadLimits,
    where: str,
) -> None:
    def no_dense_form(model: onnx.ModelProto) -> int:
        raise AssertionError("a sparse tensor over the limits was made dense")

    monkeypatch.setattr(onnx_io, "densify_sparse_initializers", no_dense_form, raising=False)
    with pytest.raises(LimitExceededError) as err:
        load_model(write(_hostile(dims, where).SerializeToString()), limits=limits)
    assert type(err.value) is LimitExceededError  # HTTP 413 (workers/problems.py), CLI exit 2


def test_a_sparse_tensor_within_the_limits_still_loads(write) -> None:  # type: ignore[no-untyped-def]
    net = load_model(write(_hostile([100, 100], "initializer").SerializeToString()))
    huge = next(t for t in net.model.graph.initializer if t.name == "huge")
    assert list(huge.dims) == [100, 100]
    with pytest.raises(UnsupportedModelError, match="control flow If"):  # as without the sparse tensor
        load_model(write(_hostile([100, 100], "subgraph").SerializeToString()))


def test_a_sparse_initializer_the_checker_refuses_is_a_format_error(write) -> None:  # type: ignore[no-untyped-def]
    m, _ = _with_sparse(np.array([0, 5, 6, 11], np.int64))
    bad = np.array([0, 5, 6, 12], np.int64)  # 12 is past the 3 x 4 weight
    m.graph.sparse_initializer[0].indices.CopyFrom(numpy_helper.from_array(bad, "w_indices"))
    with pytest.raises(ModelFormatError, match="out of range"):
        load_model(write(m.SerializeToString()))


def test_a_sparse_upload_is_still_checked_once(write, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The dense model is serialized once, and the checker and the strict inference each read it once
    (tests/compression/io/test_onnx_io_once.py: no ``full_check`` copy)."""
    calls: list[tuple[str, type, bool]] = []
    check, infer = onnx.checker.check_model, onnx.shape_inference.infer_shapes

    def counted_check(model: object, full_check: bool = False) -> None:
        calls.append(("check", type(model), full_check))
        check(model, full_check)  # type: ignore[arg-type]

    def counted_infer(model: object, **kw: bool) -> onnx.ModelProto:
        calls.append(("infer", type(model), kw["strict_mode"] and kw["check_type"]))
        return infer(model, **kw)  # type: ignore[arg-type]

    m, _ = _with_sparse(np.array([0, 5, 6, 11], np.int64))
    path = write(m.SerializeToString())
    monkeypatch.setattr(onnx.checker, "check_model", counted_check)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counted_infer)
    load_model(path)
    assert calls == [("check", bytes, False), ("infer", bytes, True)]


def test_netshrink_finetunes_its_own_pruned_artifact(pruned: Path, tmp_path: Path) -> None:
    """The fine-tuned model is written from the upload itself (finetune/writeback.py), whose pruned
    weights were still sparse initializers: "weight ... not in the upload" (exit 2) until 2026-12-05."""
    net = load_model(pruned)
    X = F.random_inputs(net.input_shape, n=64)
    session = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    labels = session.run(None, {net.input_name: X})[0].argmax(axis=1)
    np.savez(tmp_path / "train.npz", inputs=X, labels=labels)
    argv = ["finetune", str(pruned), "--train", str(tmp_path / "train.npz"), "--out", str(tmp_path / "ft")]
    assert main([*argv, "--spec", '{"epochs": 1, "batch_size": 16}', *QUIET]) == 0
    ort.InferenceSession(str(tmp_path / "ft" / "model.onnx"), providers=["CPUExecutionProvider"])
