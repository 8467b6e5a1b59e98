"""The exporter's working copy of the graph, without the weights it writes anew (peak RSS, issue 10).

``export_onnx`` replaces the float initializer of every compressed layer by integer codes; a full
``ModelProto.CopyFrom`` of the working graph would first copy those float weights (the whole model on
an MLP: +0.25 GiB on the 64→8192→8192→10 MLP of ``bench/scale.py``), and an opset conversion
(``onnx.version_converter``: the model serialized, parsed in C++, converted and parsed back) would
copy them several times more. Here each such initializer becomes a placeholder: the same name, data
type and dims, its data marked ``EXTERNAL`` at a location no file has, so that the graph stays
valid for the converter (which carries external tensors through untouched) and no weight bytes are
copied. Every placeholder is replaced before the graph is written; ``is_placeholder`` lets the
exporter check that none is left.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["PLACEHOLDER_LOCATION", "copy_with_placeholders", "is_placeholder"]

PLACEHOLDER_LOCATION = "\0netshrink: weight written by the exporter"  # never a file name (NUL)


def placeholder(t: onnx.TensorProto) -> onnx.TensorProto:
    """``t``'s name, data type and dims, with no data (external, at ``PLACEHOLDER_LOCATION``)."""
    p = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
    p.data_location = onnx.TensorProto.EXTERNAL
    p.external_data.add(key="location", value=PLACEHOLDER_LOCATION)
    return p


def is_placeholder(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == PLACEHOLDER_LOCATION for e in t.external_data
    )


def _copy_fields(dst: Message, src: Message, skip: str) -> None:
    """Every set field of ``src`` but ``skip`` into ``dst`` (a shallow message copy, field by field)."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _has_unknown_fields(*msgs: Message) -> bool:
    from google.protobuf.unknown_fields import UnknownFieldSet

    return any(len(UnknownFieldSet(m)) for m in msgs)


def copy_with_placeholders(model: onnx.ModelProto, names: Collection[str]) -> onnx.ModelProto:
    """A copy of ``model`` in which every initializer named in ``names`` is a ``placeholder``;
    the other initializers, the nodes and every other field are copied as they are. The weights
    named are never copied (a model or graph with fields this onnx does not know is copied whole
    first: those fields are then kept too)."""
    out = onnx.ModelProto()
    if not names:
        out.CopyFrom(model)
        return out
    if _has_unknown_fields(model, model.graph):
        out.CopyFrom(model)
        for i, t in enumerate(out.graph.initializer):
            if t.name in names:
                out.graph.initializer[i].CopyFrom(placeholder(t))
        return out
    _copy_fields(out, model, skip="graph")
    _copy_fields(out.graph, model.graph, skip="initializer")
    out.graph.initializer.extend(placeholder(t) if t.name in names else t for t in model.graph.initializer)
    return out
