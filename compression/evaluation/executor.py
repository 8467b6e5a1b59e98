"""Run a ``Network`` with replaced weights, capturing intermediate tensors.

Ref: docs/method.md §1 (layers compressed in order on ẑ_{ℓ-1}), §2 (error on Φ = ``net.logits``),
§3 "A prediction that is not a bound" (Jacobians at a pre-activation, via ``inject``).

- ``support == "full"``: a small differentiable torch interpreter of the ONNX nodes needed for the
  requested tensors (never the tail after Φ). Runs on ``device`` (cuda included) in ``dtype``.
- ``support == "generic"``: onnxruntime on CPU. The graph is rebuilt with the overridden
  initializers and extra graph outputs for the captured tensors. No autograd and no ``inject``
  on this path; results are converted to torch tensors on ``device`` / ``dtype``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from netshrink.compression.errors import UnsupportedModelError
from netshrink.compression.evaluation.onnx_ops import OPS
from netshrink.compression.evaluation.ort_eval import refusing_missing_kernels, run_in_batches
from netshrink.compression.graph.network import Network

Tensor = torch.Tensor
BIAS = "#bias"  # an override key ``layer name + BIAS`` replaces that layer's bias (compensation)
Inject = Mapping[str, Callable[[Tensor], Tensor]]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Executor:
    """Evaluate ``net`` on a batch: ``run(X, overrides=..., capture=..., inject=...)``.

    ``overrides`` maps a LAYER NAME to a replacement weight in canonical orientation (the shape of
    ``layer.weight``), and ``name + BIAS`` to a replacement bias (n_out,); the returned dict holds
    every captured tensor by ONNX name, and ``net.logits``.
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
        self._plans: dict[tuple[tuple[str, ...], frozenset[str]], list[onnx.NodeProto]] = {}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self._nodes:
            for t in n.input:
                self._consumers.setdefault(t, []).append(n)
        self._downstream: dict[str, frozenset[str]] = {}
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        if self.backend == "torch":
            shared = self._shared_weights()
            for init in net.model.graph.initializer:
                arr = numpy_helper.to_array(init)
                s = shared.get(init.name)
                same = s is not None and np.array_equal(s.numpy(), arr)
                self._consts[init.name] = s if s is not None and same else self._const(arr)

    # ---- public ---------------------------------------------------------------------------------
    def run(
        self,
        X: Tensor,
        *,
        overrides: Mapping[str, Tensor] | None = None,
        capture: Sequence[str] = (),
        inject: Inject | None = None,
        initializers: Mapping[str, Tensor] | None = None,
        cache: dict[str, Tensor] | None = None,
        logits: bool = True,
    ) -> dict[str, Tensor]:
        """X: (S, *input_shape). Returns {name: tensor} for ``capture`` plus ``net.logits``.

        ``initializers`` replaces ONNX initializers by name, in their stored layout (torch path only;
        fine-tuning passes its trainable weights and biases here so that autograd reaches them).
        ``cache`` (torch path): tensors already computed for this X are read from it and every tensor
        this run computes is stored in it, so a run after a later layer's override only evaluates
        the nodes below what is known; the caller drops stale values with ``invalidate``.
        ``logits=False`` computes only ``capture`` (not the tail down to Φ).
        """
        if tuple(X.shape[1:]) != self.net.input_shape:
            raise ValueError(
                f"X must have shape (S, {', '.join(map(str, self.net.input_shape))}); got {tuple(X.shape)}"
            )
        overrides = dict(overrides or {})
        for key, W in overrides.items():
            name = key.removesuffix(BIAS)
            if name not in self._layers:
                raise KeyError(f"no layer named {name!r}")
            if key != name:
                if self._layers[name].bias_key is None or W.numel() != self._layers[name].n_out:
                    raise ValueError(
                        f"bias override for {name!r}: the layer has no bias of {W.numel()} entries"
                    )
                continue
            if tuple(W.shape) != self._layers[name].weight.shape:
                raise ValueError(
                    f"override for {name!r} has shape {tuple(W.shape)}; "
                    f"expected {self._layers[name].weight.shape}"
                )
        wanted = tuple(dict.fromkeys([*capture, *([self.net.logits] if logits else [])]))
        if self.backend == "onnxruntime":
            if inject:
                raise UnsupportedModelError(
                    "inject needs the torch path; this graph has generic support (onnxruntime)"
                )
            if initializers:
                raise UnsupportedModelError(
                    "initializer overrides need the torch path; this graph has generic support (onnxruntime)"
                )
            return self._run_ort(X, overrides, wanted)
        unknown = [k for k in (initializers or {}) if k not in self._consts]
        if unknown:
            raise KeyError(f"no initializers named {unknown}")
        if cache is not None and (inject or initializers):
            raise ValueError("cache cannot be combined with inject or initializers")
        return self._run_torch(X, overrides, wanted, inject or {}, initializers or {}, cache)

    def invalidate(self, cache: dict[str, Tensor], layer: str) -> None:
        """Drop from ``cache`` every tensor computed from ``layer``'s weight or bias (after an override)."""
        if layer not in self._downstream:
            la = self._layers[layer]
            seen: set[str] = set()
            stack = [k for k in (la.weight_key, la.bias_key) if k]
            while stack:
                t = stack.pop()
                for node in self._consumers.get(t, ()):
                    new = [o for o in node.output if o and o not in seen]
                    seen.update(new)
                    stack.extend(new)
            self._downstream[layer] = frozenset(seen)
        for t in self._downstream[layer] & cache.keys():
            del cache[t]

    # ---- torch interpreter ----------------------------------------------------------------------
    def _shared_weights(self) -> dict[str, Tensor]:
        """Layer weights as views of ``Layer.weight`` (float32, CPU): one dense copy of each weight.

        The initializer layout is a transposed view when the layer stores (in, out); the caller keeps
        a view only when it equals the initializer (BN folding updates both).
        """
        if self.device.type != "cpu" or self.dtype != torch.float32:
            return {}
        out = {}
        for layer in self.net.layers:
            w = torch.from_numpy(layer.weight)  # canonical orientation, shares memory
            out[layer.weight_key] = w.T if layer.transposed else w
        return out

    def _const(self, arr: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.array(arr, copy=True))
        return t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)

    def _plan(self, wanted: tuple[str, ...], known: frozenset[str] = frozenset()) -> list[onnx.NodeProto]:
        """The nodes needed for ``wanted`` given the ``known`` tensors, in graph (topological) order."""
        key = (wanted, known)
        if key not in self._plans:
            need: set[str] = set()
            stack = [t for t in wanted if t not in known]
            while stack:
                node = self._producer.get(stack.pop())
                if node is not None and node.name not in need:
                    need.add(node.name)
                    stack.extend(t for t in node.input if t and t not in known)
            if len(self._plans) > 256:
                self._plans.clear()
            self._plans[key] = [n for n in self._nodes if n.name in need]
        return self._plans[key]

    def _run_torch(
        self,
        X: Tensor,
        overrides: Mapping[str, Tensor],
        wanted: tuple[str, ...],
        inject: Inject,
        initializers: Mapping[str, Tensor],
        cache: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        env: dict[str, Tensor] = dict(self._consts)
        env.update(initializers)
        for key, W in overrides.items():
            layer = self._layers[key.removesuffix(BIAS)]
            w = W.to(self.device, self.dtype)
            if key.endswith(BIAS):
                assert layer.bias_key is not None
                env[layer.bias_key] = w.reshape(self._consts[layer.bias_key].shape)
                continue
            env[layer.weight_key] = w.T if layer.transposed else w  # canonical -> initializer layout
        x = X.to(self.device, self.dtype)
        env[self.net.input_name] = inject[self.net.input_name](x) if self.net.input_name in inject else x
        known = frozenset(cache) if cache else frozenset()
        if cache:
            env.update(cache)
        for node in self._plan(wanted, known):
            args = [env[t] if t else None for t in node.input]
            op = OPS.get(node.op_type)
            if op is None:
                raise UnsupportedModelError(
                    f"the torch executor does not run {node.op_type}", nodes=[node.name]
                )
            outs = op(self, node, args, _attrs(node))
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    env[name] = inject[name](value) if name in inject else value
                    if cache is not None:
                        cache[name] = env[name]
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
        outs = run_in_batches(sess, list(wanted), self.net.input_name, x)
        return {
            t: torch.from_numpy(np.asarray(v)).to(self.device, self.dtype)
            for t, v in zip(wanted, outs, strict=True)
        }

    def _session(self, overrides: Mapping[str, Tensor], wanted: tuple[str, ...]) -> ort.InferenceSession:
        model = onnx.ModelProto()
        model.CopyFrom(self.net.model)
        inits = {t.name: t for t in model.graph.initializer}
        for key, W in overrides.items():
            layer = self._layers[key.removesuffix(BIAS)]
            if key.endswith(BIAS):
                assert layer.bias_key is not None
                b = numpy_helper.to_array(inits[layer.bias_key])
                arr = W.detach().cpu().numpy().reshape(b.shape).astype(b.dtype)
                inits[layer.bias_key].CopyFrom(numpy_helper.from_array(arr, layer.bias_key))
                continue
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
        with refusing_missing_kernels(self.net.input_dtype):  # the upload's graph (a float64 Conv, ...)
            return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
