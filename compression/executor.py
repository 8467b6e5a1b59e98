"""Run a ``Network`` with replaced weights, capturing intermediate tensors.

Ref: ALGORITHM.md §1 (layers compressed in order on ẑ_{ℓ-1}), §2 (error on Φ = ``net.logits``),
§3 "A prediction that is not a bound" (Jacobians at a pre-activation, via ``inject``).

- ``support == "full"``: a small differentiable torch interpreter of the ONNX nodes needed for the
  requested tensors (never the tail after Φ). Runs on ``device`` (cuda included) in ``dtype``.
- ``support == "generic"``: onnxruntime on CPU. The graph is rebuilt with the overridden
  initializers and extra graph outputs for the captured tensors. No autograd and no ``inject``
  on this path; results are converted to torch tensors on ``device`` / ``dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from compression.errors import UnsupportedModelError
from compression.network import Network

Tensor = torch.Tensor
Inject = Mapping[str, Callable[[Tensor], Tensor]]
_ONNX_TO_TORCH: dict[int, torch.dtype] = {
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
    onnx.TensorProto.INT8: torch.int8,
}
_FLOAT_CODES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Executor:
    """Evaluate ``net`` on a batch: ``run(X, overrides=..., capture=..., inject=...)``.

    ``overrides`` maps a LAYER NAME to a replacement weight in canonical orientation (the shape of
    ``layer.weight``); the returned dict holds every captured tensor by ONNX name, and ``net.logits``.
    """

    def __init__(
        self, net: Network, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("dtype must be torch.float32 or torch.float64")
        self.net = net
        self.device = torch.device(device)
        self.dtype = dtype
        self.backend = "torch" if net.support == "full" else "onnxruntime"
        self._nodes = list(net.model.graph.node)
        self._producer = {t: n for n in self._nodes for t in n.output}
        self._layers = {layer.name: layer for layer in net.layers}
        self._consts: dict[str, Tensor] = {}
        self._plans: dict[tuple[str, ...], list[onnx.NodeProto]] = {}
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        if self.backend == "torch":
            for init in net.model.graph.initializer:
                self._consts[init.name] = self._const(numpy_helper.to_array(init))

    # ---- public ---------------------------------------------------------------------------------
    def run(
        self,
        X: Tensor,
        *,
        overrides: Mapping[str, Tensor] | None = None,
        capture: Sequence[str] = (),
        inject: Inject | None = None,
    ) -> dict[str, Tensor]:
        """X: (S, *input_shape). Returns {name: tensor} for ``capture`` plus ``net.logits``."""
        if tuple(X.shape[1:]) != self.net.input_shape:
            raise ValueError(
                f"X must have shape (S, {', '.join(map(str, self.net.input_shape))}); got {tuple(X.shape)}"
            )
        overrides = dict(overrides or {})
        for name, W in overrides.items():
            if name not in self._layers:
                raise KeyError(f"no layer named {name!r}")
            if tuple(W.shape) != self._layers[name].weight.shape:
                raise ValueError(
                    f"override for {name!r} has shape {tuple(W.shape)}; "
                    f"expected {self._layers[name].weight.shape}"
                )
        wanted = tuple(dict.fromkeys([*capture, self.net.logits]))
        if self.backend == "onnxruntime":
            if inject:
                raise UnsupportedModelError(
                    "inject needs the torch path; this graph has generic support (onnxruntime)"
                )
            return self._run_ort(X, overrides, wanted)
        return self._run_torch(X, overrides, wanted, inject or {})

    # ---- torch interpreter ----------------------------------------------------------------------
    def _const(self, arr: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.array(arr, copy=True))
        return t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)

    def _plan(self, wanted: tuple[str, ...]) -> list[onnx.NodeProto]:
        """The nodes needed for ``wanted``, in graph (topological) order."""
        if wanted not in self._plans:
            need: set[str] = set()
            stack = list(wanted)
            while stack:
                node = self._producer.get(stack.pop())
                if node is not None and node.name not in need:
                    need.add(node.name)
                    stack.extend(t for t in node.input if t)
            self._plans[wanted] = [n for n in self._nodes if n.name in need]
        return self._plans[wanted]

    def _run_torch(
        self, X: Tensor, overrides: Mapping[str, Tensor], wanted: tuple[str, ...], inject: Inject
    ) -> dict[str, Tensor]:
        env: dict[str, Tensor] = dict(self._consts)
        for name, W in overrides.items():
            layer = self._layers[name]
            w = W.to(self.device, self.dtype)
            env[layer.weight_key] = w.T if layer.transposed else w  # canonical -> initializer layout
        x = X.to(self.device, self.dtype)
        env[self.net.input_name] = inject[self.net.input_name](x) if self.net.input_name in inject else x
        for node in self._plan(wanted):
            args = [env[t] if t else None for t in node.input]
            op = _OPS.get(node.op_type)
            if op is None:
                raise UnsupportedModelError(
                    f"the torch executor does not run {node.op_type}", nodes=[node.name]
                )
            outs = op(self, node, args, _attrs(node))
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    env[name] = inject[name](value) if name in inject else value
        missing = [t for t in wanted if t not in env]
        if missing:
            raise KeyError(f"unknown tensor names: {missing}")
        return {t: env[t] for t in wanted}

    # ---- onnxruntime fallback -------------------------------------------------------------------
    def _run_ort(
        self, X: Tensor, overrides: Mapping[str, Tensor], wanted: tuple[str, ...]
    ) -> dict[str, Tensor]:
        key = wanted if not overrides else ()
        sess = self._sessions.get(key) if key else None
        if sess is None:
            sess = self._session(overrides, wanted)
            if key:
                self._sessions[key] = sess
        x = X.detach().cpu().numpy().astype(self.net.input_dtype)
        outs = sess.run(list(wanted), {self.net.input_name: x})
        return {
            t: torch.from_numpy(np.asarray(v)).to(self.device, self.dtype)
            for t, v in zip(wanted, outs, strict=True)
        }

    def _session(self, overrides: Mapping[str, Tensor], wanted: tuple[str, ...]) -> ort.InferenceSession:
        model = onnx.ModelProto()
        model.CopyFrom(self.net.model)
        inits = {t.name: t for t in model.graph.initializer}
        for name, W in overrides.items():
            layer = self._layers[name]
            old = inits[layer.weight_key]
            arr = layer.to_onnx_layout(W.detach().cpu().numpy()).astype(numpy_helper.to_array(old).dtype)
            old.CopyFrom(numpy_helper.from_array(arr, layer.weight_key))
        infos = {vi.name: vi for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
        known = {t for n in model.graph.node for t in n.output} | {model.graph.input[0].name}
        del model.graph.output[:]
        for t in wanted:
            if t not in known:
                raise KeyError(f"unknown tensor name: {t!r}")
            model.graph.output.append(
                infos.get(t) or onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---- ONNX operators (torch semantics match the ONNX spec for the listed attributes) ----------------
Op = Callable[[Executor, onnx.NodeProto, list[Any], dict[str, Any]], list[Tensor]]


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


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unary(fn: Callable[[Tensor, dict[str, Any]], Tensor]) -> Op:
    return lambda ex, n, a, at: [fn(a[0], at)]


_OPS: dict[str, Op] = {
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
