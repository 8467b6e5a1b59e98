"""State dicts of residual, depthwise and concat CNNs (architecture v2) through compression: the
state-dict path and the ONNX path give the same compressed network with the same seed, and the
exported state dict + its v2 architecture.json load back and compute what ``model.onnx`` computes.

Ref: docs/architecture-json.md "After compression"; docs/method.md §1 "Structured pruning".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import safetensors.torch
import torch

from netshrink.compression.export.export_onnx import export_onnx
from netshrink.compression.export.export_torch import export_state_dict, load_compressed_state_dict
from netshrink.compression.graph.calibration import load_calibration
from netshrink.compression.graph.loading import load_model
from netshrink.compression.io.architecture import FORMAT_V2
from netshrink.compression.pipeline import compress
from netshrink.compression.spec import CompressSpec
from tests import dag_models as D
from tests import factories as F
from tests.compression.export.export_models import quantized

torch.set_num_threads(1)
SPEC = {"prune": {"keep": 0.75, "granularity": "channel"}, "quantize": {"bits": 8}, "seed": 0}


def _run(model: bytes, X: np.ndarray) -> np.ndarray:
    return np.asarray(ort.InferenceSession(model).run(None, {"input": X})[0])


def _leaves(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in layers:
        lists = s.get("body", []), s.get("shortcut", []), *s.get("branches", [])
        out += _leaves([x for lst in lists for x in lst]) if s["kind"] in ("residual", "concat") else [s]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", tuple(D.BUILDERS))
def test_state_dict_and_onnx_paths_compress_alike_and_the_export_round_trips(
    tmp_path: Path, arch: str
) -> None:
    torch.save(D.trained(arch).state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.onnx").write_bytes(D.onnx_bytes(arch))
    X, y = D.task_data(160, seed=5)
    np.savez(tmp_path / "cal.npz", inputs=X, labels=y)
    spec = CompressSpec.from_dict(SPEC)
    results = {}
    for path in ("m.pt", "m.onnx"):
        architecture = D.architecture(arch) if path == "m.pt" else None
        net = load_model(tmp_path / path, architecture=architecture)
        results[path] = (net, compress(net, spec, calibration=load_calibration(tmp_path / "cal.npz", net)))
    (net, sd), (_, ox) = results["m.pt"], results["m.onnx"]
    X_test, _ = D.task_data(64, seed=9)
    out_sd, out_ox = _run(sd.artifacts["model.onnx"], X_test), _run(ox.artifacts["model.onnx"], X_test)
    np.testing.assert_allclose(out_sd, out_ox, rtol=1e-5, atol=1e-5)  # same seed, same network
    shapes_sd = [e["shape_after"] for e in sd.report["layers"]]
    assert shapes_sd == [e["shape_after"] for e in ox.report["layers"]]
    assert sum(np.prod(s) for s in shapes_sd) < sum(np.prod(e["shape_before"]) for e in sd.report["layers"])
    e_sd, e_ox = sd.report["summary"]["error"], ox.report["summary"]["error"]
    assert e_sd["relative_l2"] == pytest.approx(e_ox["relative_l2"], rel=1e-4)

    # The exported state dict: the new shapes, integer codes, and a v2 architecture that describes it.
    meta = json.loads(sd.artifacts["architecture.json"])
    described = meta["architecture"]
    assert described is not None and described["format"] == FORMAT_V2
    state = load_compressed_state_dict(sd.artifacts["model.pt"], meta)
    for layer, shape in zip(net.layers, shapes_sd, strict=True):
        assert list(state[f"{layer.name}.weight"].shape) == shape
    raw = _save(sd.artifacts["model.pt"], tmp_path)
    assert all(f"{la.name}.weight_codes" in raw and f"{la.name}.weight" not in raw for la in net.layers)
    leaves = _leaves(described["layers"])
    assert "batchnorm2d" not in {s["kind"] for s in leaves}  # folded
    for s in leaves:
        if s["kind"] == "conv2d" and s.get("groups", 1) > 1:  # a depthwise conv follows its channels
            assert (
                s["groups"]
                == s["in_channels"]
                == s["out_channels"]
                == list(state[f"{s['name']}.weight"].shape)[0]
            )
    torch.save(state, tmp_path / "rebuilt.pt")
    back = load_model(tmp_path / "rebuilt.pt", architecture=described)
    assert back.dag and back.support == "full"
    np.testing.assert_allclose(_run(back.model.SerializeToString(), X_test), out_sd, rtol=1e-5, atol=1e-5)


def _save(data: bytes, tmp_path: Path) -> dict[str, torch.Tensor]:
    (tmp_path / "artifact.pt").write_bytes(data)
    sd: dict[str, torch.Tensor] = torch.load(tmp_path / "artifact.pt", weights_only=True)
    return sd


@pytest.mark.parametrize("arch", tuple(D.BUILDERS))
def test_safetensors_export_of_a_quantized_dag_round_trips(tmp_path: Path, arch: str) -> None:
    """Hand-rolled 4-bit codes on every conv (depthwise included) and the linear, without the
    pipeline: the exported safetensors + v2 architecture reload and compute what ``export_onnx`` writes."""
    net = load_model(
        F.write_safetensors(D.trained(arch), tmp_path / "m.st"), architecture=D.architecture(arch)
    )
    cw = {la.name: quantized(net, la.name, 4) for la in net.layers}
    data, meta = export_state_dict(net, cw, fmt="safetensors")
    assert meta["architecture"]["format"] == FORMAT_V2
    state = load_compressed_state_dict(data, meta)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "back.st"))
    back = load_model(tmp_path / "back.st", architecture=meta["architecture"])
    X, _ = D.task_data(16, seed=2)
    want = _run(export_onnx(net, cw), X)
    np.testing.assert_allclose(_run(back.model.SerializeToString(), X), want, rtol=1e-5, atol=1e-5)


class _PreActivation(torch.nn.Module):
    """``h + conv(relu(bn(h)))``: the BatchNorm reads a tensor the Add reads too, so it cannot fold."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.conv, self.fc = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.fc((h + self.conv(torch.relu(self.bn(h)))).mean((2, 3)))


def test_an_unfolded_batchnorm_leaves_no_reloadable_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _PreActivation().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    arch = {
        "format": FORMAT_V2,
        "input_shape": [3, 6, 6],
        "layers": [
            {"kind": "conv2d", "name": "stem", "kernel_size": 3, "padding": 1},
            {
                "kind": "residual",
                "body": [
                    {"kind": "batchnorm2d", "name": "bn"},
                    {"kind": "relu"},
                    {"kind": "conv2d", "name": "conv", "kernel_size": 3, "padding": 1},
                ],
            },  # fmt: skip
            {"kind": "global_avgpool2d"},
            {"kind": "flatten"},
            {"kind": "linear", "name": "fc"},
        ],
    }
    torch.save(model.state_dict(), tmp_path / "m.pt")
    net = load_model(tmp_path / "m.pt", architecture=arch)
    assert net.support == "generic" and any("BatchNormalization 'bn'" in r for r in net.not_covered)
    X = np.random.default_rng(0).standard_normal((4, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(_run(net.model.SerializeToString(), X), ref, rtol=1e-5, atol=1e-5)
    assert export_state_dict(net, {}, fmt="pt")[1]["architecture"] is None  # the BN is not in the file
