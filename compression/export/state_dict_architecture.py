"""The architecture JSON that describes an exported state dict (``architecture.json``'s ``architecture``).

Ref: docs/architecture-json.md "After compression"; docs/method.md §1 "Structured pruning". The upload's
own architecture (v1 or v2, blocks included) is rewritten for the arrays ``export_torch`` writes:
- the widths of every linear/conv layer come from its physical weight (channels deleted);
- a depthwise conv (``groups`` = in = out) keeps ``groups`` equal to its new channel count;
- ``bias`` is true where the file holds a bias (BatchNorm folded into a conv that had none);
- ``batchnorm2d`` layers are dropped: the loader folded them into the conv before them.
``load_compressed_state_dict``'s output with this JSON then loads through ``graph.loading.load_model``.
A BatchNorm the loader could not fold is not in the file, so then there is no such JSON (None).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from netshrink.compression.export.physical import PhysicalLayer
from netshrink.compression.graph.network import Network


def _unfolded_batchnorm(net: Network) -> bool:
    """A BatchNormalization node is still in the working graph (not folded into a conv)."""
    return any(n.op_type == "BatchNormalization" for n in net.model.graph.node)


def _rewrite(specs: list[dict[str, Any]], phys: Mapping[str, PhysicalLayer]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in specs:
        kind = spec.get("kind")
        if kind == "batchnorm2d":
            continue  # folded into the conv before it
        if kind == "residual":
            spec["body"] = _rewrite(spec["body"], phys)
            spec["shortcut"] = _rewrite(spec.get("shortcut") or [], phys)
        elif kind == "concat":
            spec["branches"] = [_rewrite(branch, phys) for branch in spec["branches"]]
        p = phys.get(str(spec.get("name")))
        if p is not None and kind == "linear":
            spec["out_features"], spec["in_features"] = int(p.weight.shape[0]), int(p.weight.shape[1])
            spec["bias"] = p.bias is not None
        elif p is not None and kind == "conv2d":
            c_out, c_in_per_group = int(p.weight.shape[0]), int(p.weight.shape[1])  # (c_out, c_in/g, kh, kw)
            groups = int(spec.get("groups", 1))
            depthwise = groups > 1 and groups == spec.get("in_channels") == spec.get("out_channels")
            if depthwise:
                spec["groups"] = groups = c_out
            spec["out_channels"], spec["in_channels"] = c_out, c_in_per_group * groups
            spec["bias"] = p.bias is not None
        out.append(spec)
    return out


def reloadable_architecture(net: Network, phys: Mapping[str, PhysicalLayer]) -> dict[str, Any] | None:
    """``net.architecture`` rewritten for the exported arrays (module docstring); None without one."""
    if net.architecture is None or _unfolded_batchnorm(net):
        return None
    arch = copy.deepcopy(dict(net.architecture))
    arch["layers"] = _rewrite(list(arch.get("layers", [])), phys)
    return arch
