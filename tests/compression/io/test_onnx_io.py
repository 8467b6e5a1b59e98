"""ONNX validation: every bad upload raises its own error class (docs/method.md §6)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from netshrink.compression.errors import (
    ExternalDataError,
    InvalidWeightsError,
    LimitExceededError,
    ModelFormatError,
    NothingToCompressError,
    UnsupportedModelError,
)
from netshrink.compression.graph.loading import LoadLimits, load_model
from netshrink.compression.io.onnx_io import graph_input, name_nodes, parse_onnx
from tests import factories as F


def _load(write, model: onnx.ModelProto, limits: LoadLimits | None = None):  # type: ignore[no-untyped-def]
    return load_model(write(model.SerializeToString()), limits=limits)


def test_valid_gemm_model_loads(write) -> None:  # type: ignore[no-untyped-def]
    net = _load(write, F.gemm_model())
    assert net.support == "full" and [layer.name for layer in net.layers] == ["fc"]
    assert net.input_name == "input" and net.input_shape == (4,) and net.input_dtype == np.float32
    assert net.source_format == "onnx" and net.logits == "output"


@pytest.mark.parametrize("data", [b"", b"hello, not a model", bytes(range(256)) * 4])
def test_bad_bytes_are_a_model_format_error(write, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelFormatError):
        load_model(write(data))


def test_custom_domain_op_lists_the_node(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.node[1].domain = "com.evil"
    m.opset_import.append(helper.make_opsetid("com.evil", 1))
    with pytest.raises(UnsupportedModelError) as err:
        _load(write, m)
    assert err.value.nodes == ["relu"] and "com.evil" in err.value.detail
    assert type(err.value) is UnsupportedModelError


def test_control_flow_if_is_refused(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    branch = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["y"])],
        "b",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    m.graph.initializer.append(cond)
    m.graph.node[1].CopyFrom(
        helper.make_node("If", ["cond"], ["output"], "branchy", then_branch=branch, else_branch=branch)
    )
    with pytest.raises(UnsupportedModelError) as err:
        _load(write, m)
    assert err.value.nodes == ["branchy"] and "If" in err.value.detail


def test_external_data_is_refused(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../etc/passwd")
    with pytest.raises(ExternalDataError) as err:
        _load(write, m)
    assert "w" in err.value.nodes


def test_torch_default_export_is_refused_with_how_to_fix_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """torch 2.13 writes external data by default: the message says so and names external_data=False."""
    from netshrink.compression.graph.loading import load_model

    model = F.export_onnx_fixed_batch(F.tiny_mlp((16, 8, 4)), (16,), external_data=True)
    with pytest.raises(ExternalDataError) as err:
        load_model(F.write_bytes(model, tmp_path / "model.onnx"))
    msg = str(err.value.detail)
    assert "external_data=False" in msg and "save_as_external_data=False" in msg
    assert "model.onnx.data" in msg  # the data file the export wrote


def test_nan_weight_is_invalid(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[1, 2] = np.nan
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    with pytest.raises(InvalidWeightsError) as err:
        _load(write, m)
    assert err.value.nodes == ["w"]


def test_inf_in_bias_is_invalid(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array([0, np.inf, 0], np.float32), "b"))
    with pytest.raises(InvalidWeightsError):
        _load(write, m)


@pytest.mark.parametrize("layout", ["float_data", "float16", "raw_data"])
def test_nan_is_found_in_every_float_layout(write, layout: str) -> None:  # type: ignore[no-untyped-def]
    """The float32 ``raw_data`` fast path of the NaN check (issue 13 §8) and the generic path for
    the other layouts refuse alike."""
    m = F.gemm_model()
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[0, 1] = np.nan
    if layout == "float_data":
        t = helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel().tolist())
        assert not t.raw_data
    elif layout == "float16":
        t = numpy_helper.from_array(w.astype(np.float16), "w16")  # the Gemm reads it through a Cast
        m.graph.node.insert(0, helper.make_node("Cast", ["w16"], ["w"], "cast", to=TensorProto.FLOAT))
    else:
        t = numpy_helper.from_array(w, "w")
    m.graph.initializer[0].CopyFrom(t)
    with pytest.raises(InvalidWeightsError) as err:
        parse_onnx(m.SerializeToString(), max_dim=10**6, max_params=10**8)
    assert err.value.nodes == [t.name]


def test_raw_data_shorter_than_its_dims_is_refused(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:-4]
    with pytest.raises(ModelFormatError):
        _load(write, m)


def test_absurd_declared_dim_is_refused_before_allocation(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    big = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[2**40])  # no data: would be 4 TiB
    m.graph.initializer.append(big)
    with pytest.raises(LimitExceededError):
        _load(write, m)


def test_param_limit(write) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LimitExceededError):
        _load(write, F.gemm_model(), LoadLimits(max_params=10))


def test_file_size_limit(write) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LimitExceededError):
        _load(write, F.gemm_model(), LoadLimits(max_file_bytes=16))


def test_absurd_input_dim(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 10**9
    with pytest.raises(LimitExceededError):
        _load(write, m)


def test_nothing_to_compress(write) -> None:  # type: ignore[no-untyped-def]
    m = F.chain_model([helper.make_node("Relu", ["input"], ["output"], "r")], [], ["batch", 4], "output")
    with pytest.raises(NothingToCompressError):
        _load(write, m)


def test_matmul_of_two_inputs_is_nothing_to_compress(write) -> None:  # type: ignore[no-untyped-def]
    m = F.chain_model(
        [helper.make_node("MatMul", ["input", "input"], ["output"], "mm")], [], [4, 4], "output"
    )
    with pytest.raises(NothingToCompressError):
        _load(write, m)


def test_checker_failure_is_a_model_format_error(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.node[0].input[1] = "missing_weight"  # dangling input
    with pytest.raises(ModelFormatError):
        _load(write, m)


def test_shape_inference_failure_is_a_model_format_error(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5  # (batch, 5) @ W(3, 4).T: mismatch
    with pytest.raises(ModelFormatError):
        _load(write, m)


def test_shape_inference_runs_strict_once_without_the_checkers_copy(write, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 13 §8: the checker runs without ``full_check`` (its own strict inference, thrown away);
    the one strict, type-checked inference that is kept still refuses the mismatch."""
    calls: list[dict[str, object]] = []
    check = onnx.checker.check_model

    def spy(model: onnx.ModelProto, *args: object, **kwargs: object) -> None:
        calls.append(kwargs)
        check(model, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx.checker, "check_model", spy)
    _load(write, F.gemm_model())
    assert calls == [{}]
    m = F.gemm_model()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(ModelFormatError, match="shape inference failed"):
        _load(write, m)


def test_two_inputs_are_refused(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 4]))
    with pytest.raises(UnsupportedModelError) as err:
        _load(write, m)
    assert sorted(err.value.nodes) == ["extra", "input"]


def test_integer_input_is_refused() -> None:
    m = F.gemm_model()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(UnsupportedModelError):
        graph_input(m)


def test_symbolic_feature_dim_is_refused(write) -> None:  # type: ignore[no-untyped-def]
    m = F.gemm_model()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    with pytest.raises((UnsupportedModelError, ModelFormatError)):
        _load(write, m)


def test_nodes_get_unique_names() -> None:
    m = F.gemm_model()
    m.graph.node[0].name = ""
    m.graph.node[1].name = "Gemm_0"  # collides with the generated name of node 0
    name_nodes(m)
    names = [n.name for n in m.graph.node]
    assert all(names) and len(set(names)) == 2


def test_parse_onnx_keeps_torch_export_valid() -> None:
    model = parse_onnx(F.mlp_onnx(), max_dim=10**6, max_params=10**8)
    assert {vi.name for vi in model.graph.value_info} >= {"relu", "relu_1"}  # shapes were inferred


@pytest.mark.parametrize(
    "where", ["node_name", "doc_string", "producer_name", "metadata_key", "metadata_value"]
)
def test_strings_that_are_not_utf8_are_a_format_error(where: str) -> None:
    """Found by fuzzing the upload (issue 13 §3): protobuf decodes strings on access, so a name with
    a byte 0x80 escaped as UnicodeDecodeError from the checker or the node namer (a 500)."""
    from netshrink.compression.errors import ModelFormatError

    model = onnx.load_from_string(F.mlp_onnx())
    marker = "ZQZQZQ"
    if where == "node_name":
        model.graph.node[0].name = marker
    elif where == "doc_string":
        model.graph.doc_string = marker
    elif where.startswith("metadata"):  # a node's metadata_props (checked in place, issue 13 §8)
        entry = model.graph.node[0].metadata_props.add(key="k", value="v")
        setattr(entry, where.removeprefix("metadata_"), marker)
    else:
        model.producer_name = marker
    data = model.SerializeToString().replace(marker.encode(), b"\x80" + marker[1:].encode())
    with pytest.raises(ModelFormatError, match="not UTF-8"):
        parse_onnx(data, max_dim=10**6, max_params=10**8)


def test_a_variable_length_lstm_is_refused_naming_the_operator(write) -> None:  # type: ignore[no-untyped-def]
    """Issue 13 §9: an LSTM over a symbolic sequence length was refused as a 'non-static
    per-sample dimension' without saying why; the refusal now names the operator and its node."""
    from netshrink.compression.errors import UnsupportedModelError

    hidden = 8
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, 4)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R")
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="to_seq_major"),
            helper.make_node("LSTM", ["xt", "W", "R"], ["y"], hidden_size=hidden, name="encoder"),
        ],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", 1, "batch", hidden])],
        [W, R],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", F.OPSET)])
    with pytest.raises(UnsupportedModelError, match="LSTM operator is not supported") as info:
        _load(write, model)
    assert info.value.nodes == ["encoder"]
