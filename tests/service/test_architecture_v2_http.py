"""A state dict with an architecture v2 over real HTTP (a ``netshrink serve`` child process, embedded
mode): a document that does not fit the tensors is a 422 whose ``errors[0].pointer`` is the bad block
inside the ``architecture`` form field; a good one runs, and its ``model.pt`` + ``architecture.json``
load back and compute what its ``model.onnx`` computes. Ref: docs/architecture-json.md."""

from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch

from netshrink.compression.export.export_torch import load_compressed_state_dict
from netshrink.compression.graph.loading import load_model
from tests import dag_models as D
from tests.serve_process import embedded_serve

SPEC = json.dumps({"prune": {"keep": 0.75, "granularity": "channel"}, "quantize": {"bits": 8}, "seed": 0})


def _bad(path: tuple[Any, ...], change: dict[str, Any]) -> dict[str, Any]:
    arch = copy.deepcopy(D.architecture("mobilenet"))
    node: Any = arch
    for key in path:
        node = node[key]
    node.update(change)
    return arch


@pytest.mark.slow
def test_v2_architecture_over_http(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save(D.trained("mobilenet").state_dict(), buf)
    model = buf.getvalue()
    X, y = D.task_data(160, seed=5)
    cal = io.BytesIO()
    np.savez(cal, inputs=X, labels=y)
    bad = [
        (_bad(("layers", 3, "body", 1), {"kind": "batchnorm3d"}), "/layers/3/body/1"),  # bad block kind
        (_bad(("layers", 3, "body", 3), {"groups": 3}), "/layers/3/body/3"),  # groups vs the weight
        (_bad(("layers", 3, "body", 6), {"out_channels": 12}), "/layers/3/body/6"),  # wrong shape
    ]
    with embedded_serve(tmp_path / "data") as (base, _), httpx.Client(base_url=base, timeout=120) as c:

        def post(arch: dict[str, Any]) -> httpx.Response:
            files = {"model": ("m.pt", model, "application/octet-stream")}
            files["calibration"] = ("c.npz", cal.getvalue(), "application/octet-stream")
            return c.post("/v1/jobs", files=files, data={"spec": SPEC, "architecture": json.dumps(arch)})

        for arch, pointer in bad:
            r = post(arch)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["type"].endswith("/invalid-architecture") and pointer in body["detail"]
            assert body["errors"][0]["pointer"] == "/architecture" + pointer
        r = post(D.architecture("mobilenet"))
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        deadline = time.monotonic() + 300
        while (status := c.get(f"/v1/jobs/{job}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["status"] == "succeeded", status
        files = {
            n: c.get(f"/v1/jobs/{job}/artifacts/{n}") for n in ("model.onnx", "model.pt", "architecture.json")
        }
    assert all(f.status_code == 200 for f in files.values())
    meta = json.loads(files["architecture.json"].content)
    state = load_compressed_state_dict(files["model.pt"].content, meta)
    torch.save(state, tmp_path / "back.pt")
    back = load_model(tmp_path / "back.pt", architecture=meta["architecture"])
    X_test, _ = D.task_data(32, seed=9)
    want = ort.InferenceSession(files["model.onnx"].content).run(None, {"input": X_test})[0]
    got = ort.InferenceSession(back.model.SerializeToString()).run(None, {"input": X_test})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert meta["architecture"]["format"] == "netshrink.architecture/v2"
