"""Loading an ONNX upload checks it once (issue 10, fixed costs): one checker pass and one strict,
type-checked shape inference, both reading the upload's own bytes; the checks themselves stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from netshrink.compression.errors import ModelFormatError
from netshrink.compression.graph.loading import load_model
from tests import factories as F


def _count(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"check": [], "infer": [], "serialize": []}
    check, infer = onnx.checker.check_model, onnx.shape_inference.infer_shapes

    def counted_check(model: Any, full_check: bool = False, *args: Any, **kw: Any) -> None:
        calls["check"].append((type(model), full_check))
        check(model, full_check, *args, **kw)

    def counted_infer(model: Any, *args: Any, **kw: Any) -> onnx.ModelProto:
        calls["infer"].append((type(model), args, kw))
        return infer(model, *args, **kw)

    monkeypatch.setattr(onnx.checker, "check_model", counted_check)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counted_infer)
    return calls


def test_load_runs_the_checker_and_shape_inference_once_on_the_file_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = F.write_bytes(F.mlp_onnx(), tmp_path / "m.onnx")
    calls = _count(monkeypatch)
    net = load_model(path)
    assert len(net.layers) == 3
    # check_model(full_check=True) would run a second (throw-away) shape inference on a copy
    assert calls["check"] == [(bytes, False)]
    assert len(calls["infer"]) == 1
    kind, args, kw = calls["infer"][0]
    assert kind is bytes  # the upload's bytes as read, not a re-serialized ModelProto
    assert kw == {"check_type": True, "strict_mode": True, "data_prop": True} and not args


def test_a_type_error_only_the_full_check_catches_is_still_refused(tmp_path: Path) -> None:
    """The checker without ``full_check`` passes this graph (Add of float and int64); the strict,
    type-checked shape inference refuses it: dropping that inference would let it through."""
    m = F.gemm_model()
    m.graph.initializer.append(numpy_helper.from_array(np.ones((3,), np.int64), "k"))
    out = m.graph.output[0].name
    m.graph.node[-1].output[0] = "pre"
    m.graph.node.append(helper.make_node("Add", ["pre", "k"], [out], "add"))
    onnx.checker.check_model(m, full_check=False)  # the plain checker alone lets it through
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    with pytest.raises(ModelFormatError, match="shape inference|checker"):
        load_model(F.write_bytes(m.SerializeToString(), tmp_path / "bad.onnx"))


def test_the_raw_weights_of_an_unrewritten_upload_are_the_layer_weights(tmp_path: Path) -> None:
    net = load_model(F.write_bytes(F.mlp_onnx(), tmp_path / "m.onnx"))
    model = onnx.load_model_from_string(F.mlp_onnx())
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for layer in net.layers:
        assert net.raw_weights[layer.name] is layer.weight  # one array: no second conversion
        uploaded = layer.from_onnx_layout(inits[layer.weight_key].astype(np.float32))
        assert np.array_equal(net.raw_weights[layer.name], uploaded)


def test_a_non_utf8_string_is_refused_before_the_checker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = F.mlp_onnx()
    name = onnx.load_model_from_string(data).graph.node[0].name.encode()
    assert name and data.count(name) >= 1
    bad = data.replace(name, b"\xff" * len(name), 1)  # the same length: the protobuf stays well-formed
    calls = _count(monkeypatch)
    with pytest.raises(ModelFormatError, match="UTF-8"):
        load_model(F.write_bytes(bad, tmp_path / "bad.onnx"))
    assert calls["check"] == [] and calls["infer"] == []


def test_a_non_utf8_string_in_a_large_weight_tensor_is_refused(tmp_path: Path) -> None:
    """A weight over 2^14 values has its string fields read one by one (not ``ListFields``, which
    copies its raw_data out): a bad ``doc_string`` there is still found."""
    m = F.gemm_model(n_in=128, n_out=160)  # W: 20,480 values
    big = max(m.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    assert int(np.prod(big.dims)) > 2**14
    big.doc_string = "MARKERMARKER"
    data = m.SerializeToString().replace(b"MARKERMARKER", b"\xff" * 12, 1)
    with pytest.raises(ModelFormatError, match="UTF-8"):
        load_model(F.write_bytes(data, tmp_path / "bad.onnx"))
