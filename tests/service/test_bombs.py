"""Decompression bombs against a real ``netshrink serve`` process: the API's peak RSS (issue 13 §2).

Each bomb is a ~0.5 MB ``.npz`` whose ``inputs`` inflate to 512 MiB of float32 zeros with one NaN
at the very end, under the 2 GiB default cap: the API must stream through all of it to find the
NaN and answer 422, and three at once must keep its peak RSS within 200 MB of idle (before the fix
``np.load`` inflated each whole: +1.5 GB). The peak is the kernel's ``VmHWM``, reset with
``clear_refs`` after the warm-up, so nothing between two samples is missed.
"""

from __future__ import annotations

import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import factories
from tests.serve_process import embedded_serve

MIB = 1 << 20
BOMB_BYTES = 512 * MIB
SPEC = json.dumps({"prune": {"keep": 0.5}, "seed": 1})


def nan_bomb(path: Path, data_bytes: int, width: int = 8) -> bytes:
    """An .npz of float32 zeros (rows of ``width``) ending in one NaN, written without holding it."""
    rows = data_bytes // (4 * width)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("inputs.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (rows, width)}
            )
            zeros, left = bytes(MIB), rows * width * 4 - 4
            while left > 0:
                member.write(zeros[: min(MIB, left)])
                left -= min(MIB, left)
            member.write(np.array([np.nan], dtype="<f4").tobytes())
    return path.read_bytes()


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise AssertionError(f"{field} missing")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_three_concurrent_bombs_keep_the_api_within_200_mb_of_idle(tmp_path: Path) -> None:
    bomb = nan_bomb(tmp_path / "bomb.npz", BOMB_BYTES)
    assert len(bomb) < 2 * MIB
    model = factories.mlp_onnx()

    def post(calibration: bytes) -> httpx.Response:
        files = {
            "model": ("m.onnx", model, "application/octet-stream"),
            "calibration": ("c.npz", calibration, "application/octet-stream"),
        }
        with httpx.Client(base_url=base, timeout=300) as c:
            return c.post("/v1/jobs", files=files, data={"spec": SPEC})

    with embedded_serve(tmp_path / "data") as (base, proc):
        # Warm-up on the same code path (imports torch/onnx, loads the model): a small NaN file.
        warm = post(nan_bomb(tmp_path / "small.npz", MIB))
        assert warm.status_code == 422, warm.text
        time.sleep(0.5)
        idle = _status(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(post, [bomb] * 3))
        peak = _status(proc.pid, "VmHWM")
        for r in answers:
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert "NaN" in r.json()["detail"]
        growth_mb = (peak - idle) / 1e6
        print(f"idle RSS {idle / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB under 3 bombs: +{growth_mb:.0f} MB")
        assert growth_mb < 200, f"peak RSS grew {growth_mb:.0f} MB over idle ({idle / 1e6:.0f} MB)"
