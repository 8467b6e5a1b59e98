"""Physical layout for the exporters: a pruned layer's arrays with the dropped units deleted.

Ref: docs/method.md §1 "Structured pruning". Shared by ``export_onnx`` and ``export_torch``. On a DAG
the rows to delete come from the dependency groups (``graph/depgroups.py``): every producer's rows
and every depthwise filter of a dropped group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.errors import UnsupportedModelError
from netshrink.compression.graph.network import Layer, Network


@dataclass
class PhysicalLayer:
    """One layer's arrays as the artifact stores them: canonical orientation, dropped units deleted.

    Ref: docs/method.md §1 "Structured pruning": a dropped input unit u of layer ℓ removes the
    ``input_group`` columns [u·g, (u+1)·g) of W_ℓ (input channel u of a conv) and row u of the
    producer's W_{ℓ-1}, b_{ℓ-1} (and its per-row scale/codes/outliers). Exact, because those
    columns of Ŵ_ℓ are zero.
    """

    layer: Layer
    weight: np.ndarray  # Ŵ float32, (n_out', n_in') or (c_out', c_in', kh, kw)
    bias: np.ndarray | None  # (n_out',)
    codes: np.ndarray | None  # int8, same shape as weight
    scale: np.ndarray | None  # float32 (n_out',) per row, or (1,) per layer
    per_row: bool
    bits: int | None
    outliers: np.ndarray | None  # bool, same shape as weight
    kept_rows: np.ndarray  # int64 (n_out',): the producer-side units kept
    dropped_inputs: np.ndarray  # int64: the input units removed (group indices)
    shape_before: tuple[int, ...]
    compressed: bool  # the layer has a CompressedWeight
    reshaped: bool  # rows or columns were deleted
    bias_changed: bool = False  # the bias was refit (error compensation)


def _bias(layer: Layer, cw: CompressedWeight | None, rows: np.ndarray) -> np.ndarray | None:
    """The kept rows of the bias: the compensated b̂ when the layer was refit, else the layer's own."""
    if layer.bias is None:
        return None
    b = layer.bias if cw is None or cw.bias is None else cw.bias
    return np.asarray(b, dtype=np.float32)[rows]


def _input_units(layer: Layer) -> int:
    return int(layer.weight.shape[1]) if layer.kind == "conv" else layer.n_in // max(layer.input_group, 1)


def _column_index(layer: Layer, units: np.ndarray) -> np.ndarray:
    """Axis-1 indices owned by input ``units``: channels of a conv, g columns each for dense."""
    if layer.kind == "conv":
        return units
    g = max(layer.input_group, 1)
    return (units[:, None] * g + np.arange(g)[None, :]).reshape(-1)  # (units·g,)


def _columns(a: np.ndarray, layer: Layer, units: np.ndarray) -> np.ndarray:
    return a[:, _column_index(layer, units)]


def _drop_columns(a: np.ndarray, layer: Layer, units: np.ndarray) -> np.ndarray:
    return np.delete(a, _column_index(layer, units), axis=1)  # (n_out, n_in') or (c_out, c_in', kh, kw)


def _cut(a: np.ndarray | None, layer: Layer, rows: np.ndarray, units: np.ndarray) -> np.ndarray | None:
    """Keep output ``rows`` and delete the columns of input ``units`` (None passes through)."""
    if a is None:
        return None
    a = _rows(a, rows)
    return np.ascontiguousarray(_drop_columns(a, layer, units) if units.size else a)


def _rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]``; ``a`` itself (no copy: memory, issue 10) when ``rows`` keeps every row in order."""
    return a if len(rows) == a.shape[0] else a[rows]


def _group_rows(
    net: Network,
    cg: Any,
    dropped: set[int],
    drop_in: dict[str, np.ndarray],
    drop_rows: dict[str, set[int]],
) -> None:
    """Rows of every producer and depthwise filter of the dropped dependency groups; every reader of
    a dropped group must have dropped it too (else deleting the channel would change the network)."""
    for g in sorted(dropped):
        for reader in cg.consumers.get(g, []):
            units = drop_in.get(reader, np.zeros(0, np.int64))
            if g not in set(cg.units[reader][units].tolist()):
                raise UnsupportedModelError(
                    f"channel group {g} is dropped by some readers but not by {reader!r}", nodes=[reader]
                )
    for name, ids in cg.rows.items():
        rows = np.flatnonzero(np.isin(ids, np.fromiter(dropped, np.int64)))
        if rows.size == ids.size:
            raise UnsupportedModelError(f"every output channel of {name!r} would be deleted", nodes=[name])
        drop_rows.setdefault(name, set()).update(int(r) for r in rows)


def physical_layers(net: Network, compressed: Mapping[str, CompressedWeight]) -> dict[str, PhysicalLayer]:
    """Every layer of ``net`` with the structured deletions applied (docs/method.md §1, §5)."""
    unknown = sorted(set(compressed) - {layer.name for layer in net.layers})
    if unknown:
        raise KeyError(f"compressed weights for unknown layers: {unknown}")
    drop_rows: dict[str, set[int]] = {}
    drop_in: dict[str, np.ndarray] = {}
    cg = net.channel_groups if net.dag else None
    dropped_groups: set[int] = set()
    for layer in net.layers:
        cw = compressed.get(layer.name)
        if cw is None or cw.dropped_inputs is None or cw.dropped_inputs.size == 0:
            continue
        if cg is not None and layer.name in cg.units:  # a DAG: rows come from the dependency groups
            units = np.unique(np.asarray(cw.dropped_inputs, dtype=np.int64))
            ids = cg.units[layer.name]
            if units.min() < 0 or units.max() >= ids.size or np.any(ids[units] < 0):
                raise UnsupportedModelError(
                    f"{layer.name!r}: dropped units outside its channel groups", nodes=[layer.name]
                )
            if np.any(_columns(cw.weight, layer, units)):
                raise ValueError(f"{layer.name!r}: dropped input units must be zero columns of Ŵ")
            drop_in[layer.name] = units
            dropped_groups.update(int(i) for i in ids[units])
            continue
        if not layer.structured or layer.producer is None:
            raise UnsupportedModelError(
                f"layer {layer.name!r} does not allow structured pruning", nodes=[layer.name]
            )
        units = np.unique(np.asarray(cw.dropped_inputs, dtype=np.int64))
        producer = net.layer(layer.producer)
        n_units = _input_units(layer)
        if producer.n_out != n_units or units.min() < 0 or units.max() >= n_units:
            raise UnsupportedModelError(
                f"{layer.name!r}: dropped units do not match the producer's {producer.n_out} outputs",
                nodes=[layer.name, producer.name],
            )
        if np.any(_columns(cw.weight, layer, units)):
            raise ValueError(f"{layer.name!r}: dropped input units must be zero columns of Ŵ")
        drop_in[layer.name] = units
        drop_rows.setdefault(producer.name, set()).update(int(u) for u in units)
    if cg is not None and dropped_groups:
        _group_rows(net, cg, dropped_groups, drop_in, drop_rows)
    out: dict[str, PhysicalLayer] = {}
    for layer in net.layers:
        cw = compressed.get(layer.name)
        rows = np.setdiff1d(np.arange(layer.n_out), np.fromiter(drop_rows.get(layer.name, ()), np.int64))
        units = drop_in.get(layer.name, np.zeros(0, dtype=np.int64))
        W = cw.weight if cw is not None else layer.weight
        per_row = cw is not None and cw.scale is not None and cw.scale.size == layer.n_out and layer.n_out > 1

        scale = None if cw is None or cw.scale is None else (cw.scale[rows] if per_row else cw.scale)
        out[layer.name] = PhysicalLayer(
            layer=layer,
            weight=np.ascontiguousarray(
                _rows(W, rows) if not units.size else _drop_columns(_rows(W, rows), layer, units),
                dtype=np.float32,
            ),
            bias=_bias(layer, cw, rows),
            codes=None if cw is None else _cut(cw.codes, layer, rows, units),
            scale=None if scale is None else np.asarray(scale, dtype=np.float32),
            per_row=per_row,
            bits=None if cw is None else cw.bits,
            outliers=None if cw is None else _cut(cw.outliers, layer, rows, units),
            kept_rows=rows,
            dropped_inputs=units,
            shape_before=tuple(int(d) for d in layer.weight.shape),
            compressed=cw is not None,
            reshaped=bool(units.size) or len(rows) != layer.n_out,
            bias_changed=cw is not None and cw.bias is not None,
        )
    return out
