"""The UTF-8 check of an ONNX upload: the proto3 parse (``strings_are_utf8``) agrees with the field
walk (``find_non_utf8``) on every string field, and bytes fields are never taken for strings."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netshrink.compression.io.onnx_utf8 import find_non_utf8, non_utf8_field, strings_are_utf8
from tests import factories as F

MARKER = "QZQZQZQZ"  # replaced, byte for byte, in the serialized model: the protobuf stays well-formed


def _with_marker(where: str) -> bytes:
    """The test MLP with ``MARKER`` in one string field (which field: ``where``), serialized."""
    model = onnx.load_model_from_string(F.mlp_onnx())
    if where == "name":
        model.graph.node[0].name = MARKER
    elif where == "doc_string":
        model.graph.doc_string = MARKER
    elif where == "producer_name":
        model.producer_name = MARKER
    elif where == "input":  # a repeated string
        old = model.graph.node[0].input[0]
        model.graph.node[0].input[0] = MARKER
        for vi in model.graph.input:
            if vi.name == old:
                vi.name = MARKER
    elif where == "dim_param":  # deep: ValueInfo -> Type -> Tensor -> Shape -> Dimension
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = MARKER
    elif where in ("key", "value"):  # a node's metadata_props entry
        entry = model.graph.node[0].metadata_props.add(key="k", value="v")
        setattr(entry, where, MARKER)
    elif where == "large_tensor_doc_string":  # a weight over 2^14 values: read field by field
        model = F.gemm_model(n_in=128, n_out=160)
        max(model.graph.initializer, key=lambda t: int(np.prod(t.dims))).doc_string = MARKER
    else:
        raise AssertionError(where)
    data = model.SerializeToString()
    assert data.count(MARKER.encode()) >= 1
    return data


# The field the walk names, where it is not ``where`` itself: an entry by its list, and a node input
# that is also a graph input's name by whichever of the two the walk reaches first.
FIELDS = {"key": {"metadata_props"}, "value": {"metadata_props"}, "input": {"input", "name"}}
WHERE = [
    "name",
    "doc_string",
    "producer_name",
    "input",
    "dim_param",
    "key",
    "value",
    "large_tensor_doc_string",
]


@pytest.mark.parametrize("where", WHERE)
def test_a_string_that_is_not_utf8_fails_the_check_and_the_walk_names_its_field(where: str) -> None:
    good = _with_marker(where)
    assert strings_are_utf8(good)
    bad = good.replace(MARKER.encode(), b"\xff" * len(MARKER))
    onnx.ModelProto().ParseFromString(bad)  # still a protobuf that proto2 parses
    assert not strings_are_utf8(bad)
    assert find_non_utf8(onnx.load_model_from_string(bad)) in FIELDS.get(
        where, {where.removeprefix("large_tensor_")}
    )


def test_bytes_fields_may_hold_any_bytes() -> None:
    """``AttributeProto.s`` and ``TensorProto.raw_data`` are ``bytes``: not UTF-8 is fine there."""
    model = onnx.load_model_from_string(F.mlp_onnx())
    model.graph.node[0].attribute.add(name="blob", type=onnx.AttributeProto.STRING, s=b"\xff\xfe\x80")
    assert any(b"\xff" in t.raw_data or b"\x80" in t.raw_data for t in model.graph.initializer)
    data = model.SerializeToString()
    assert strings_are_utf8(data) and find_non_utf8(model) is None


def test_bytes_that_are_no_protobuf_fail_the_check() -> None:
    assert not strings_are_utf8(b"\x08\x96")  # a varint cut short
    assert strings_are_utf8(b"")  # the empty model: the caller refuses it for what it is


@settings(max_examples=150, deadline=None)
@given(
    where=st.sampled_from(WHERE),
    text=st.binary(min_size=len(MARKER), max_size=len(MARKER)),
)
def test_the_check_agrees_with_the_walk_on_any_bytes_in_a_string_field(where: str, text: bytes) -> None:
    """Any 8 bytes in any string field: the C check and the Python walk give the same answer, and
    the answer is whether those bytes decode as UTF-8."""
    data = _with_marker(where).replace(MARKER.encode(), text)
    model = onnx.ModelProto()
    model.ParseFromString(data)
    try:
        text.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    assert strings_are_utf8(data) is utf8
    assert (find_non_utf8(model) is None) is utf8


def test_a_small_file_is_checked_by_the_parse_and_a_large_one_by_the_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walk runs on a small file only to name a field the check refused; on a file over
    ``CHECK_BY_PARSE_BYTES`` it is the check (no second copy of the weights)."""
    from netshrink.compression.io import onnx_utf8

    calls: list[str] = []
    walk, check = onnx_utf8.find_non_utf8, onnx_utf8.strings_are_utf8
    monkeypatch.setattr(onnx_utf8, "find_non_utf8", lambda m: calls.append("walk") or walk(m))
    monkeypatch.setattr(onnx_utf8, "strings_are_utf8", lambda d: calls.append("check") or check(d))
    small = _with_marker("name")
    assert non_utf8_field(onnx.load_model_from_string(small), small) is None and calls == ["check"]
    calls.clear()
    bad = small.replace(MARKER.encode(), b"\xff" * len(MARKER))
    assert non_utf8_field(onnx.load_model_from_string(bad), bad) == "name" and calls == ["check", "walk"]
    calls.clear()
    model = F.gemm_model(n_in=512, n_out=600)  # 1.2 MB of weights
    model.graph.node[0].name = MARKER
    large = model.SerializeToString()
    assert len(large) > onnx_utf8.CHECK_BY_PARSE_BYTES
    assert non_utf8_field(model, large) is None and calls == ["walk"]
    calls.clear()
    bad = large.replace(MARKER.encode(), b"\xff" * len(MARKER))
    assert non_utf8_field(onnx.load_model_from_string(bad), bad) == "name" and calls == ["walk"]
