"""A full disk while an upload is written is the server's fault: 507 problem+json with Retry-After,
nothing half-written left behind, nothing stored before lost, and the service stays up
(service/errors.py, service/uploads.py). Until 2026-12-05 it was a 400 "malformed multipart body",
which told the client its request was wrong.

The disk is real: ``netshrink serve`` runs in its own mount namespace (``unshare --mount``) with its
data directory on a 4 MiB tmpfs, so the mount never outlives the server and the host sees none of it.
That needs root (CAP_SYS_ADMIN), as CI has; elsewhere the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.factories import mlp_onnx
from tests.serve_process import embedded_serve

SPEC = {"quantize": {"bits": 8}, "seed": 1, "evaluation": {"inputs": "gaussian", "samples": 64}}


def _tmpfs_wrap(mountpoint: Path, size: str) -> list[str]:
    script = f'mount -t tmpfs -o size={size} netshrink-test "{mountpoint}" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def _can_mount(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run([*_tmpfs_wrap(probe, "1m"), "true"], capture_output=True, timeout=30)
    return done.returncode == 0


def _submit(client: httpx.Client, model: bytes) -> httpx.Response:
    return client.post("/v1/jobs", files={"model": ("m.onnx", model)}, data={"spec": json.dumps(SPEC)})


def test_a_full_disk_is_507_and_the_service_keeps_what_it_had(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not _can_mount(tmp_path):
        pytest.skip("a private tmpfs needs root (unshare --mount, mount -t tmpfs)")
    data = tmp_path / "data"
    data.mkdir()
    with embedded_serve(data, wrap=_tmpfs_wrap(data, "4m")) as (base, proc):
        jobs_root = Path(f"/proc/{proc.pid}/root") / str(data).lstrip("/") / "jobs"  # its namespace's view
        with httpx.Client(base_url=base, timeout=60) as client:
            first = _submit(client, mlp_onnx())
            assert first.status_code == 202, first.text
            first_id = first.json()["id"]
            too_big = _submit(client, b"\x08\x07" + os.urandom(6 * 2**20))  # > the 4 MiB disk
            assert too_big.status_code == 507, too_big.text
            assert too_big.headers["content-type"] == "application/problem+json"
            assert too_big.headers["retry-after"].isdigit()
            problem = too_big.json()
            assert problem["type"].endswith("/insufficient-storage") and problem["status"] == 507
            assert "Traceback" not in too_big.text
            assert sorted(p.name for p in jobs_root.iterdir()) == [first_id]  # no half-written job
            assert client.get("/healthz").status_code == 200
            assert client.get(f"/v1/jobs/{first_id}").status_code == 200  # stored before: kept
            again = _submit(client, mlp_onnx())  # the refused upload's bytes were freed
            assert again.status_code == 202, again.text
        assert proc.poll() is None
