"""``Constant`` nodes as the initializers they stand for.

Some exporters (older ``torch.onnx.export``, ``do_constant_folding=False``, hand-built graphs) hold a
Gemm/MatMul/Conv weight or bias in a ``Constant`` node instead of an initializer. The analysis, the
executor and the exporter find a layer's weight among the initializers, so such a model was refused
(2026-12-05: ``netshrink compress`` failed as an internal error, ``KeyError`` on the bias).
``canonicalize`` turns each such node into an initializer of its output's name and drops the node;
the values, and every reader (a Reshape's shape included), stay as they were.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# Constant's attributes that hold a dense tensor (opset 1-13); ``sparse_value`` and the string
# forms stay nodes
_DENSE = ("value", "value_float", "value_floats", "value_int", "value_ints")
_DTYPES = {
    "value_float": np.float32,  # ONNX: a float32 scalar ()
    "value_floats": np.float32,  # a float32 vector (n,)
    "value_int": np.int64,  # an int64 scalar ()
    "value_ints": np.int64,  # an int64 vector (n,)
}


def _dense_attribute(node: onnx.NodeProto) -> onnx.AttributeProto | None:
    """The one dense-tensor attribute of a default-domain ``Constant`` node, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    if len(node.attribute) != 1 or node.attribute[0].name not in _DENSE:
        return None
    return node.attribute[0]


def is_dense_constant(node: onnx.NodeProto) -> bool:
    """True when ``constant_initializer`` turns ``node`` into an initializer."""
    return _dense_attribute(node) is not None


def constant_initializer(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The initializer ``node`` stands for, named after its output: a copy of its ``value`` tensor, or
    ``value_float(s)`` as a float32 scalar (vector), ``value_int(s)`` as an int64 scalar (vector), as
    the ONNX spec types them; None for any other node."""
    a = _dense_attribute(node)
    if a is None:
        return None
    if a.name == "value":
        t = onnx.TensorProto()
        t.CopyFrom(a.t)
    else:
        value = onnx.helper.get_attribute_value(a)  # a scalar, or a list for the plural forms
        t = numpy_helper.from_array(np.asarray(value, dtype=_DTYPES[a.name]))  # () or (n,)
    t.name = node.output[0]
    return t
