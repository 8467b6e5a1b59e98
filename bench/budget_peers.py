"""Peers of the budget benchmark (bench/budget.py), each judged on the same unseen test split.

onnxruntime ``quantize_dynamic`` (int8 weights), ``quantize_static`` QDQ per-channel int8 (calibrated
on the calibration split), ``MatMulNBits`` 4-bit (block 32, symmetric; the Gemm layers are rewritten
as MatMul + Add first, since the quantizer only takes MatMul), ``torch.nn.utils.prune``
(l1_unstructured 50% and ln_structured 25%, shipped as the dense fp32 ONNX they produce), and NNCF
(``compress_weights`` int8 / int4 group 32, ``quantize`` int8 PTQ) when it is installed (optional,
bench only: ``pip install nncf==3.4.0``; it leaves the torch pin alone).
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from torch import nn
from torch.nn.utils import prune as torch_prune

from bench.common import Split, accuracy, ort_logits, relative_l2, to_network
from netshrink.compression.graph.network import Network


def judge(model_bytes: bytes, split: Split, phi: np.ndarray, dense_bytes: int) -> dict[str, Any]:
    out = ort_logits(model_bytes, split.test_X)
    return {
        "bytes": len(model_bytes),
        "ratio": len(model_bytes) / dense_bytes,
        "agreement": float((out.argmax(1) == phi.argmax(1)).mean()),
        "accuracy": accuracy(out, split.test_y),
        "relative_l2": relative_l2(phi, out),
    }


def _ort_quant(fn: Any, dense: bytes, **kw: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "dense.onnx"), Path(tmp, "q.onnx")
        src.write_bytes(dense)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(str(src), str(dst), **kw)
        return dst.read_bytes()


class _Reader:
    """onnxruntime CalibrationDataReader over the calibration split."""

    def __init__(self, name: str, X: np.ndarray) -> None:
        self.items = iter([{name: X[i : i + 32]} for i in range(0, X.shape[0], 32)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def gemm_to_matmul(model_bytes: bytes) -> bytes:
    """Gemm(transB=1, B initializer) → MatMul(Bᵀ) + Add(C): the form MatMulNBits quantizes."""
    m = onnx.load_model_from_string(model_bytes)
    inits = {t.name: t for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (
            n.op_type != "Gemm"
            or n.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
        ):
            nodes.append(n)
            continue
        W = numpy_helper.to_array(inits[n.input[1]])
        Wt = np.ascontiguousarray(W.T if attrs.get("transB", 0) else W)  # (in, out)
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(Wt, n.input[1]))
        mid = n.output[0] + "_mm"
        nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1]], [mid], n.name + "_mm"))
        nodes.append(helper.make_node("Add", [mid, n.input[2]], [n.output[0]], n.name + "_add"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m.SerializeToString()


def peers(
    model: nn.Module, arch: dict[str, Any], net: Network, split: Split, phi: np.ndarray
) -> list[dict[str, Any]]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    dense = net.original.SerializeToString()
    n = len(dense)
    rows = []
    t0 = time.perf_counter()
    q = _ort_quant(quantize_dynamic, dense, weight_type=QuantType.QInt8)
    rows.append(
        {
            "method": "peer: ort quantize_dynamic",
            "setting": "int8 weights",
            **judge(q, split, phi, n),
            "seconds": time.perf_counter() - t0,
        }
    )
    t0 = time.perf_counter()
    q = _ort_quant(
        quantize_static,
        dense,
        calibration_data_reader=_Reader(net.input_name, split.cal_X),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
    )
    rows.append(
        {
            "method": "peer: ort QDQ static",
            "setting": "int8 per-channel",
            **judge(q, split, phi, n),
            "seconds": time.perf_counter() - t0,
        }
    )
    t0 = time.perf_counter()
    mm = onnx.load_model_from_string(gemm_to_matmul(dense))
    qz = MatMulNBitsQuantizer(mm, block_size=32, is_symmetric=True)
    qz.process()
    q = qz.model.model.SerializeToString()
    rows.append(
        {
            "method": "peer: ort MatMulNBits",
            "setting": "4-bit, block 32 (MatMul layers)",
            **judge(q, split, phi, n),
            "seconds": time.perf_counter() - t0,
        }
    )
    for setting, fn in (
        ("l1_unstructured 50%", lambda m: torch_prune.l1_unstructured(m, "weight", amount=0.5)),
        (
            "ln_structured 25% of output units",
            lambda m: torch_prune.ln_structured(m, "weight", 0.25, n=2, dim=0),
        ),
    ):
        pruned = copy.deepcopy(model)
        t0 = time.perf_counter()
        for mod in pruned.modules():
            if isinstance(mod, nn.Linear | nn.Conv2d) and (mod.weight.shape[0] != 10 or "l1" in setting):
                fn(mod)
                torch_prune.remove(mod, "weight")
        q = to_network(pruned, arch).original.SerializeToString()
        rows.append(
            {
                "method": "peer: torch.nn.utils.prune",
                "setting": setting + " (dense fp32 file)",
                **judge(q, split, phi, n),
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows + nncf_peers(net, split, phi)


def nncf_peers(net: Network, split: Split, phi: np.ndarray) -> list[dict[str, Any]]:
    """NNCF on the dense ONNX file, if installed: weight compression int8 / int4 and int8 PTQ."""
    try:
        import nncf
    except ImportError:
        return []
    dense = net.original.SerializeToString()
    name = net.input_name
    data = nncf.Dataset([split.cal_X[i : i + 1] for i in range(split.cal_X.shape[0])], lambda x: {name: x})
    cw, mode = nncf.compress_weights, nncf.CompressWeightsMode
    runs: list[tuple[str, Any]] = [
        ("compress_weights int8_asym", lambda m: cw(m, mode=mode.INT8_ASYM)),
        (
            "compress_weights int4_sym group 32, all layers (Gemm as MatMul + Add)",
            lambda m: cw(m, mode=mode.INT4_SYM, ratio=1.0, group_size=32, all_layers=True, dataset=data),
        ),
        ("quantize int8 (PTQ, calibration split)", lambda m: nncf.quantize(m, data)),
    ]
    rows = []
    for setting, fn in runs:
        t0 = time.perf_counter()
        src = gemm_to_matmul(dense) if "MatMul" in setting else dense
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = fn(onnx.load_model_from_string(src)).SerializeToString()
            seconds = time.perf_counter() - t0
            rows.append({"method": "peer: nncf", "setting": setting, **judge(q, split, phi, len(dense))})
            rows[-1]["seconds"] = seconds
        except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
            rows.append(
                {"method": "peer: nncf", "setting": setting, "error": f"{type(e).__name__}: {e}"[:160]}
            )
    return rows
