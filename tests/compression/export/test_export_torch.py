"""Oracles for the compressed state dict + architecture.json (export/export_torch.py, docs/method.md §5).

The round trip must reproduce Ŵ exactly (with dropped units deleted), the file must load with
``torch.load(weights_only=True)`` / safetensors, and the rebuilt float state dict plus the exported
architecture must load back through ``netshrink.compression.graph.loading.load_model`` and compute what the
exported ONNX computes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from netshrink.compression.algorithm.compressed import CompressedWeight
from netshrink.compression.errors import ArchitectureError
from netshrink.compression.export.export_onnx import export_onnx
from netshrink.compression.export.export_torch import (
    INT4_PACKING,
    export_state_dict,
    load_compressed_state_dict,
    pack_int4,
    unpack_int4,
)
from netshrink.compression.export.storage import state_dict_storage
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from tests.compression.export.export_models import dropped_columns, inputs, pruned, quantized, run
from tests.factories import cnn_architecture, tiny_cnn, tiny_mlp, write_pt

torch.set_num_threads(1)


def expected_weights(net: Network, cw: dict[str, CompressedWeight]) -> dict[str, np.ndarray]:
    """Ŵ (or W) per layer with dropped input units' columns and the producers' rows deleted (naive)."""
    out = {la.name: (cw[la.name].weight if la.name in cw else la.weight).copy() for la in net.layers}
    bias = {la.name: None if la.bias is None else la.bias.copy() for la in net.layers}
    for la in net.layers:
        c = cw.get(la.name)
        if c is None or c.dropped_inputs is None:
            continue
        g = 1 if la.kind == "conv" else la.input_group
        cols = [u * g + j for u in c.dropped_inputs for j in range(g)]
        out[la.name] = np.delete(out[la.name], cols, axis=1)
        out[la.producer] = np.delete(out[la.producer], c.dropped_inputs, axis=0)  # type: ignore[index]
        bias[la.producer] = np.delete(bias[la.producer], c.dropped_inputs)  # type: ignore[index,arg-type]
    flat = {f"{k}.weight": v for k, v in out.items()}
    flat.update({f"{k}.bias": v for k, v in bias.items() if v is not None})
    return flat


def mlp_net(tmp_path: Path) -> Network:
    return load_model(write_pt(tiny_mlp((8, 32, 24, 4)), tmp_path / "mlp.pt"))


def cnn_net(tmp_path: Path) -> Network:
    return load_model(write_pt(tiny_cnn(True), tmp_path / "cnn.pt"), architecture=cnn_architecture())


def test_int4_packing_is_low_nibble_first_and_round_trips() -> None:
    assert pack_int4(np.array([1, -1], np.int8)).tolist() == [0xF1]
    assert pack_int4(np.array([-8, 7, 3], np.int8)).tolist() == [0x78, 0x03]  # odd: zero-padded nibble
    codes = np.random.default_rng(0).integers(-8, 8, size=(7, 5, 3)).astype(np.int8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(codes), codes.shape), codes)
    with pytest.raises(ValueError):
        pack_int4(np.array([8], np.int8))


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_round_trip_reproduces_w_hat_exactly(tmp_path: Path, fmt: str) -> None:
    net = mlp_net(tmp_path)
    rng = np.random.default_rng(1)
    cw = {
        "0": quantized(net, "0", 4, outlier_frac=0.05),  # int4 packed + sparse outliers
        "2": quantized(net, "2", 6, outlier_frac=0.4, dropped=np.array([0, 3, 17])),  # int8 + dense outliers
        "4": CompressedWeight("4", (net.layer("4").weight * (rng.random((4, 24)) < 0.2)).astype(np.float32)),
    }
    data, arch = export_state_dict(net, cw, fmt=fmt)  # type: ignore[arg-type]
    json.dumps(arch)  # architecture.json is plain JSON
    got = load_compressed_state_dict(data, arch)
    want = expected_weights(net, cw)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key].numpy(), value, err_msg=key)
    layers = {entry["name"]: entry for entry in arch["layers"]}
    assert layers["0"]["shape"] == [29, 8] and layers["2"]["shape"] == [24, 29]
    w0, w2, w4 = layers["0"]["weight"], layers["2"]["weight"], layers["4"]["weight"]
    assert (w0["container"], w0["packing"], w0["scale_axis"], w0["outliers"]["storage"]) == (
        "int4",
        INT4_PACKING,
        0,
        "sparse",
    )
    assert (w2["container"], w2["bits"], w2["outliers"]["storage"]) == ("int8", 6, "dense")
    assert w4["storage"] == "sparse_float32"
    # the file holds no float copy of a quantized weight
    raw = torch.load(io.BytesIO(data), weights_only=True) if fmt == "pt" else safetensors.numpy.load(data)
    assert "0.weight" not in raw and "2.weight" not in raw
    assert raw["0.weight_codes"].dtype in (torch.uint8, np.uint8) and tuple(raw["0.weight_codes"].shape) == (
        116,
    )


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_bytes_shrink_and_are_deterministic(tmp_path: Path, fmt: str) -> None:
    net = mlp_net(tmp_path)
    plain, _ = export_state_dict(net, {}, fmt=fmt)  # type: ignore[arg-type]
    cw = {la.name: quantized(net, la.name, 4) for la in net.layers}
    data, arch = export_state_dict(net, cw, fmt=fmt)  # type: ignore[arg-type]
    assert export_state_dict(net, cw, fmt=fmt)[0] == data  # type: ignore[arg-type]
    before, after = state_dict_storage(plain), state_dict_storage(data, architecture=arch)
    n = sum(la.weight.size for la in net.layers)
    assert after["by_dtype"]["int4"] == sum((la.weight.size + 1) // 2 for la in net.layers)
    assert before["by_dtype"]["float32"] - after["by_dtype"]["float32"] == 4 * n - 4 * sum(
        la.n_out for la in net.layers
    )  # weights became codes; one float32 scale per row was added
    assert "uint8" not in after["by_dtype"]


def test_cnn_channel_pruning_reloads_through_the_loader(tmp_path: Path) -> None:
    net = cnn_net(tmp_path)
    cw = {
        "features.4": dropped_columns(net, "features.4", [1, 2]),
        "classifier": dropped_columns(net, "classifier", [5]),
    }
    cw["features.0"] = quantized(net, "features.0", 8)
    data, arch = export_state_dict(net, cw, fmt="pt")
    state = load_compressed_state_dict(data, arch)
    assert tuple(state["features.0.weight"].shape) == (2, 1, 3, 3)
    assert tuple(state["features.4.weight"].shape) == (5, 2, 3, 3)
    assert tuple(state["classifier.weight"].shape) == (5, 80)
    assert [la["kind"] for la in arch["architecture"]["layers"]].count("batchnorm2d") == 0  # folded
    path = tmp_path / "rebuilt.pt"
    torch.save(state, path)
    reloaded = load_model(path, architecture=arch["architecture"])
    X = inputs(net, 8)
    onnx_out = run(export_onnx(net, cw), X)[0]
    np.testing.assert_allclose(run(reloaded.model.SerializeToString(), X)[0], onnx_out, rtol=1e-5, atol=1e-5)


def test_loader_refuses_a_file_that_does_not_match(tmp_path: Path) -> None:
    net = mlp_net(tmp_path)
    data, arch = export_state_dict(net, {"0": pruned(net, "0", 0.5)}, fmt="safetensors")
    arch["layers"][0]["weight"]["key"] = "missing.weight"
    with pytest.raises(ArchitectureError):
        load_compressed_state_dict(data, arch)
    with pytest.raises(ArchitectureError):
        load_compressed_state_dict(data, {**arch, "format": "something-else"})
