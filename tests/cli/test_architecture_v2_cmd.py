"""``netshrink compress`` / ``analyze`` with a state dict and an architecture v2 (docs/architecture-json.md):
a document that does not fit the tensors exits 2 with one line naming the JSON pointer; a good one
writes the compressed state dict and a v2 architecture that load back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from netshrink.cli.main import main
from netshrink.compression.export.export_torch import load_compressed_state_dict
from netshrink.compression.graph.loading import load_model
from tests import dag_models as D


@pytest.fixture(scope="module")
def resnet_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v2") / "resnet.pt"
    torch.save(D.trained("resnet").state_dict(), path)
    return path


def _write(arch: dict[str, object], path: Path) -> Path:
    path.write_text(json.dumps(arch))
    return path


@pytest.mark.parametrize("command", ["compress", "analyze"])
@pytest.mark.parametrize(
    ("layer", "change", "pointer"),
    [
        ((3, 1), {"kind": "batchnorm3d"}, "/layers/3/body/1"),  # bad kind inside a block
        ((5, 0), {"out_channels": 12}, "/layers/5/body/0"),  # wrong shape
    ],
)
def test_a_bad_v2_architecture_exits_2_naming_the_pointer(
    resnet_pt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    layer: tuple[int, int],
    change: dict[str, object],
    pointer: str,
) -> None:
    arch = copy.deepcopy(D.architecture("resnet"))
    arch["layers"][layer[0]]["body"][layer[1]].update(change)  # type: ignore[index]
    argv = [command, str(resnet_pt), "--architecture", str(_write(arch, tmp_path / "a.json"))]
    rc = main([*argv, *(["--bits", "8"] if command == "compress" else []), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert pointer in err and "architecture" in err.lower()


def test_v2_state_dict_compresses_and_the_output_loads_back(
    resnet_pt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    X, y = D.task_data(160, seed=5)
    np.savez(tmp_path / "cal.npz", inputs=X, labels=y)
    arch = _write(D.architecture("resnet"), tmp_path / "arch.json")
    argv = [
        "compress",
        str(resnet_pt),
        "--architecture",
        str(arch),
        "--calibration",
        str(tmp_path / "cal.npz"),
    ]
    flags = ["--prune-keep", "0.75", "--granularity", "channel", "--bits", "4", "--seed", "0"]
    rc = main([*argv, *flags, "--out", str(out), "--no-html", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert {"model.onnx", "model.pt", "architecture.json", "report.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "architecture.json").read_text())
    state = load_compressed_state_dict(out / "model.pt", meta)
    assert state["layer2.shortcut.0.weight"].shape[0] < 16  # the residual stream's channels were cut
    torch.save(state, tmp_path / "back.pt")
    back = load_model(tmp_path / "back.pt", architecture=meta["architecture"])
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    X_test, _ = D.task_data(32, seed=9)
    want = sess.run(None, {"input": X_test})[0]
    got = ort.InferenceSession(back.model.SerializeToString()).run(None, {"input": X_test})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
