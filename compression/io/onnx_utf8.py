"""Every string in an uploaded ONNX file is UTF-8, checked once, in C, before anything reads a name.

``onnx.proto`` is proto2, whose ``string`` fields protobuf does not validate when it parses: upb
hands a field that is not UTF-8 back as ``bytes`` (or raises on access), so such a name used to
escape as ``UnicodeDecodeError`` from the checker or the graph reader (a 500, found by fuzzing the
upload, issue 13 §3). The check here parses the same bytes once more with a copy of the ONNX schema
in its own descriptor pool, declared proto3: for proto3 ``string`` fields upb verifies UTF-8 while
it decodes (https://protobuf.dev/programming-guides/proto3/#scalar, "string ... must always contain
UTF-8 encoded text"). Nothing else differs between the two parses for ONNX (no required fields, no
groups, no maps; unknown enum values parse under both). The copy is thrown away at once.

The Python walk over every field of the parsed model (``find_non_utf8``) stays the reference: it
names the field in a refusal, and it runs instead of the check on files over ``CHECK_BY_PARSE_BYTES``,
where the second parse's copy of the weights costs more than the walk, which reads only the text
fields of a large tensor. ``python -m bench.onnx_utf8``: 5.3 µs against 107 µs for the 8 KiB test MLP
(the walk was a quarter of a small submit's validation in the API's profile, issue 13 §8), but
318 µs against 127 µs for a 4 MiB MLP.
"""

from __future__ import annotations

import math
from typing import Any

import onnx
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message


def _utf8_checked_model_class() -> type[Message]:
    """``onnx.ModelProto`` as a proto3 message class in a private pool (never the default one)."""
    proto = descriptor_pb2.FileDescriptorProto()
    onnx.ModelProto.DESCRIPTOR.file.CopyToProto(proto)
    messages = list(proto.message_type)
    while messages:  # proto3 has no field defaults; nothing else in onnx.proto needs changing
        message = messages.pop()
        for field in message.field:
            field.ClearField("default_value")
        messages.extend(message.nested_type)
    proto.syntax = "proto3"
    proto.name = "netshrink/onnx-utf8-checked.proto"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("onnx.ModelProto"))


_UTF8_CHECKED_MODEL = _utf8_checked_model_class()


CHECK_BY_PARSE_BYTES = 1 << 20


def non_utf8_field(model: onnx.ModelProto, data: bytes) -> str | None:
    """The name of a string field of ``model`` (parsed from ``data``) that is not UTF-8, or ``None``
    when every string is UTF-8: the parse check for a small file, the walk for a large one or to
    name the field the check found."""
    if len(data) <= CHECK_BY_PARSE_BYTES and strings_are_utf8(data):
        return None
    return find_non_utf8(model)


def strings_are_utf8(data: bytes) -> bool:
    """True when ``data`` decodes under the UTF-8-verifying schema. False also for bytes that are no
    protobuf at all: the caller parses them with ``onnx.ModelProto`` to tell the two apart."""
    try:
        _UTF8_CHECKED_MODEL().ParseFromString(data)  # parsed, checked and dropped
    except DecodeError:
        return False
    return True


def find_non_utf8(message: Any) -> str | None:
    """The name of the first string field of a parsed ONNX message that is not UTF-8, or ``None``.

    Walks every field once. Each field descriptor's kind is looked up once per process
    (``_FIELD_KINDS``), not per field. A large ``TensorProto`` (a weight) has only its string and
    message fields read: ``ListFields`` would copy its ``raw_data`` out (65 MiB for the 17M MLP,
    issue 10)."""
    stack = [message]
    pop, push, extend, kinds = stack.pop, stack.append, stack.extend, _FIELD_KINDS
    while stack:
        msg = pop()
        fields = _tensor_text_fields(msg) if type(msg) is _LargeTensor else msg.ListFields()
        for fd, value in fields:
            kind = kinds.get(fd)
            if kind is None:
                kind = kinds[fd] = _field_kind(fd)
            if kind == _MESSAGE:
                push(value)
            elif kind == _MESSAGES:
                extend(value)
            elif kind == _TENSORS:
                extend(_LargeTensor(t) if math.prod(t.dims) > _COPY_VALUES else t for t in value)
            elif kind == _STRING:
                if type(value) is not str:  # upb hands back bytes when they are not UTF-8
                    return str(fd.name)
            elif kind == _STRINGS:
                if any(type(text) is not str for text in value):
                    return str(fd.name)
            elif kind == _ENTRIES:  # metadata_props: torch's exporter writes a few per node and value
                if any(type(e.key) is not str or type(e.value) is not str for e in value):
                    return str(fd.name)
    return None


_OTHER, _MESSAGE, _MESSAGES, _STRING, _STRINGS, _TENSORS, _ENTRIES = range(7)
_FIELD_KINDS: dict[Any, int] = {}  # FieldDescriptor -> kind; the onnx schema has a few hundred fields
_COPY_VALUES = 1 << 14  # a TensorProto with more values has its text fields read one by one


class _LargeTensor:
    """A weight's ``TensorProto`` on ``find_non_utf8``'s stack: read field by field."""

    __slots__ = ("t",)

    def __init__(self, t: onnx.TensorProto) -> None:
        self.t = t


def _tensor_text_fields(big: _LargeTensor) -> list[tuple[Any, Any]]:
    """``ListFields()`` of a large tensor restricted to its string and message fields (no raw_data)."""
    t, out = big.t, []
    for fd in _TENSOR_TEXT_FIELDS:
        if fd.is_repeated:
            value = getattr(t, fd.name)
            if value:
                out.append((fd, value))
        elif t.HasField(fd.name):
            out.append((fd, getattr(t, fd.name)))
    return out


_TENSOR_TEXT_FIELDS = [
    fd for fd in onnx.TensorProto.DESCRIPTOR.fields if fd.type in (fd.TYPE_MESSAGE, fd.TYPE_STRING)
]


def _field_kind(fd: Any) -> int:
    if fd.type == fd.TYPE_MESSAGE:
        if fd.is_repeated and fd.message_type.full_name == "onnx.TensorProto":
            return _TENSORS  # initializers, an attribute's tensors
        if fd.is_repeated and fd.message_type.full_name == "onnx.StringStringEntryProto":
            return _ENTRIES  # key and value checked in place, not pushed and listed one by one
        return _MESSAGES if fd.is_repeated else _MESSAGE
    if fd.type == fd.TYPE_STRING:
        return _STRINGS if fd.is_repeated else _STRING
    return _OTHER
