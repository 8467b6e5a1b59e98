"""The ONNX operators of the full-support torch interpreter (``executor.Executor``).

Each op follows the ONNX spec for the attributes listed; torch semantics are checked against
onnxruntime in ``tests/compression/evaluation/test_executor.py``. Ref: docs/method.md §1 (the layers the
method compresses run through these ops).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from netshrink.compression.errors import UnsupportedModelError

if TYPE_CHECKING:
    from netshrink.compression.evaluation.executor import Executor

Tensor = torch.Tensor
_ONNX_TO_TORCH: dict[int, torch.dtype] = {
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
    onnx.TensorProto.INT8: torch.int8,
}
_FLOAT_CODES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)

# ---- ONNX operators (torch semantics match the ONNX spec for the listed attributes) ----------------
Op = Callable[["Executor", onnx.NodeProto, list[Any], dict[str, Any]], list[Tensor]]


def _gemm(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    A = a[0].T if at.get("transA", 0) else a[0]  # (S, in)
    B = a[1].T if at.get("transB", 0) else a[1]  # (in, out)
    Y = at.get("alpha", 1.0) * (A @ B)  # (S, out)
    if len(a) > 2 and a[2] is not None:
        Y = Y + at.get("beta", 1.0) * a[2]
    return [Y]


def _sym_pads(x: Tensor, pads: Sequence[int], value: float) -> tuple[Tensor, tuple[int, int]]:
    """ONNX (top, left, bottom, right) -> torch's symmetric padding, pre-padding when asymmetric."""
    t, l, b, r = pads
    if (t, l) == (b, r):
        return x, (t, l)
    return F.pad(x, (l, r, t, b), value=value), (0, 0)


def _conv(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise UnsupportedModelError(
            "Conv auto_pad SAME is not supported by the torch executor", nodes=[n.name]
        )
    x, pad = _sym_pads(a[0], pads, 0.0)
    bias = a[2] if len(a) > 2 else None
    out = F.conv2d(
        x,
        a[1],
        bias,
        tuple(at.get("strides", [1, 1])),
        pad,
        tuple(at.get("dilations", [1, 1])),
        int(at.get("group", 1)),
    )
    return [out]  # (S, c_out, H', W')


def _pool(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    k = tuple(at["kernel_shape"])
    s = tuple(at.get("strides", [1] * len(k)))
    ceil = bool(at.get("ceil_mode", 0))
    if n.op_type == "MaxPool":
        x, pad = _sym_pads(a[0], list(at.get("pads", [0, 0, 0, 0])), -math.inf)
        return [F.max_pool2d(x, k, s, pad, tuple(at.get("dilations", [1, 1])), ceil_mode=ceil)]
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise UnsupportedModelError("AveragePool with asymmetric pads is not supported", nodes=[n.name])
    return [F.avg_pool2d(a[0], k, s, tuple(pads[:2]), ceil, bool(at.get("count_include_pad", 0)))]


def _reshape(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    shape = [int(v) for v in a[1].tolist()]
    if not at.get("allowzero", 0):
        shape = [a[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return [a[0].reshape(shape)]


def _cast(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    to = int(at["to"])
    if to in _FLOAT_CODES:
        return [a[0].to(ex.dtype)]  # float casts keep the executor's precision
    if to not in _ONNX_TO_TORCH:
        raise UnsupportedModelError(f"Cast to ONNX type {to} is not supported", nodes=[n.name])
    return [a[0].to(_ONNX_TO_TORCH[to])]


def _flatten(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    axis = int(at.get("axis", 1)) % max(a[0].dim(), 1)
    return [a[0].reshape(math.prod(a[0].shape[:axis]), -1)]


def _constant(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    value = at.get("value")
    arr = (
        numpy_helper.to_array(value)
        if isinstance(value, onnx.TensorProto)
        else np.asarray(next(iter(at.values())))
    )
    return [ex._const(arr)]


def _clip(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    """Clip: limits from inputs 1, 2 (opset >= 11) or the min/max attributes (older opsets)."""
    lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
    lo = lo.to(a[0].dtype) if isinstance(lo, Tensor) else lo
    hi = hi.to(a[0].dtype) if isinstance(hi, Tensor) else hi
    return [torch.clamp(a[0], lo, hi)]


def _pad(ex: Executor, n: onnx.NodeProto, a: list[Any], at: dict[str, Any]) -> list[Tensor]:
    """Pad (opset >= 11: pads and constant_value as inputs; older: attributes). ONNX pads are
    [x1_begin, x2_begin, ..., x1_end, x2_end, ...]; torch wants (last_begin, last_end, ...)."""
    pads = [int(v) for v in (a[1].tolist() if len(a) > 1 and a[1] is not None else at["pads"])]
    if len(a) > 3 and a[3] is not None:
        raise UnsupportedModelError("Pad with an axes input is not supported", nodes=[n.name])
    value = a[2] if len(a) > 2 and a[2] is not None else at.get("value", 0.0)
    rank = len(pads) // 2
    torch_pads: list[int] = []
    for d in reversed(range(rank)):
        torch_pads += [pads[d], pads[d + rank]]
    mode = _text(at.get("mode", "constant"))
    mode = {"edge": "replicate"}.get(mode, mode)
    if mode == "constant":
        return [F.pad(a[0], torch_pads, mode="constant", value=float(value))]
    spatial = torch_pads[: 2 * (rank - 2)]
    if any(torch_pads[2 * (rank - 2) :]):
        raise UnsupportedModelError(f"Pad mode {mode} on batch/channel axes", nodes=[n.name])
    return [F.pad(a[0], spatial, mode=mode)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unary(fn: Callable[[Tensor, dict[str, Any]], Tensor]) -> Op:
    return lambda ex, n, a, at: [fn(a[0], at)]


OPS: dict[str, Op] = {
    "Gemm": _gemm,
    "MatMul": lambda ex, n, a, at: [torch.matmul(a[0], a[1])],
    "Add": lambda ex, n, a, at: [a[0] + a[1]],
    "Sub": lambda ex, n, a, at: [a[0] - a[1]],
    "Mul": lambda ex, n, a, at: [a[0] * a[1]],
    "Div": lambda ex, n, a, at: [a[0] / a[1]],
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _unary(lambda x, at: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "Relu": _unary(lambda x, at: torch.relu(x)),
    "LeakyRelu": _unary(lambda x, at: F.leaky_relu(x, float(at.get("alpha", 0.01)))),
    "Tanh": _unary(lambda x, at: torch.tanh(x)),
    "Sigmoid": _unary(lambda x, at: torch.sigmoid(x)),
    "Softplus": _unary(lambda x, at: F.softplus(x)),
    "Clip": _clip,
    "HardSigmoid": _unary(
        lambda x, at: torch.clamp(float(at.get("alpha", 0.2)) * x + float(at.get("beta", 0.5)), 0.0, 1.0)
    ),
    "HardSwish": _unary(lambda x, at: F.hardswish(x)),
    "Concat": lambda ex, n, a, at: [torch.cat([t for t in a if t is not None], dim=int(at["axis"]))],
    "Pad": _pad,
    "Gelu": _unary(lambda x, at: F.gelu(x, approximate=_text(at.get("approximate", "none")))),
    "Softmax": _unary(lambda x, at: torch.softmax(x, int(at.get("axis", -1)))),
    "LogSoftmax": _unary(lambda x, at: torch.log_softmax(x, int(at.get("axis", -1)))),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Dropout": _unary(lambda x, at: x),
    "Identity": _unary(lambda x, at: x),
    "Cast": _cast,
    "Constant": _constant,
}
