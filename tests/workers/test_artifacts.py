"""ArtifactStore: atomic writes, digests, path-traversal refusal, deletion."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from netshrink.workers.artifacts import ArtifactStore, media_type_for


def test_save_records_size_sha256_and_media_type(artifacts: ArtifactStore) -> None:
    data = b"\x08\x01onnx-bytes" * 100
    info = artifacts.save("job_1", "model.onnx", data)
    assert info.size_bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.media_type == "application/onnx"
    with artifacts.open("job_1", "model.onnx") as f:
        assert f.read() == data
    assert artifacts.list("job_1") == ["model.onnx"]


def test_save_leaves_no_temporary_files_and_overwrites_atomically(artifacts: ArtifactStore) -> None:
    artifacts.save("job_1", "report.json", b"{}")
    artifacts.save("job_1", "report.json", b'{"v": 2}')
    out_dir = artifacts.path("job_1", "report.json").parent
    assert sorted(os.listdir(out_dir)) == ["report.json"]
    assert artifacts.path("job_1", "report.json").read_bytes() == b'{"v": 2}'


def test_failed_write_keeps_previous_file(artifacts: ArtifactStore) -> None:
    artifacts.save_input("job_1", "model.onnx", b"old")

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset")
            return b"partial"

    with pytest.raises(OSError):
        artifacts.save_input("job_1", "model.onnx", Broken())  # type: ignore[arg-type]
    assert artifacts.input_path("job_1", "model.onnx").read_bytes() == b"old"
    assert sorted(os.listdir(artifacts.input_dir("job_1"))) == ["model.onnx"]


def test_streamed_input_and_model_lookup(artifacts: ArtifactStore) -> None:
    payload = os.urandom(3 * (1 << 20) + 17)  # crosses the chunk size
    size, digest = artifacts.save_input("job_1", "model.safetensors", io.BytesIO(payload))
    assert (size, digest) == (len(payload), hashlib.sha256(payload).hexdigest())
    artifacts.save_input("job_1", "calibration.npz", b"npz")
    assert artifacts.model_input("job_1").name == "model.safetensors"
    with pytest.raises(FileNotFoundError):
        artifacts.model_input("job_2")


def test_inputs_live_in_the_job_directory_and_a_legacy_input_subdirectory_is_still_read(
    artifacts: ArtifactStore,
) -> None:
    """A submit makes one directory per job (issue 13 §8: each new directory is an inode the kernel
    allocates on the request's path); the inputs sit beside ``out/``. Jobs stored before keep their
    inputs in ``input/``, and the worker still finds them there."""
    artifacts.save_input("job_1", "model.onnx", b"new")
    artifacts.save("job_1", "report.json", b"{}")
    assert sorted(os.listdir(artifacts.job_dir("job_1"))) == ["model.onnx", "out"]
    assert artifacts.model_input("job_1") == artifacts.job_dir("job_1") / "model.onnx"
    assert artifacts.list("job_1") == ["report.json"]
    legacy = artifacts.job_dir("job_old") / "input"
    legacy.mkdir(parents=True)
    (legacy / "model.pt").write_bytes(b"old")
    (legacy / "calibration.npz").write_bytes(b"npz")
    assert artifacts.model_input("job_old") == legacy / "model.pt"
    assert artifacts.input_path("job_old", "calibration.npz").read_bytes() == b"npz"


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "..", "x" * 200])
def test_refuses_unsafe_names(artifacts: ArtifactStore, name: str) -> None:
    with pytest.raises(ValueError):
        artifacts.save("job_1", name, b"x")


@pytest.mark.parametrize("job_id", ["../etc", "a/b", "", "job 1"])
def test_refuses_unsafe_job_ids(artifacts: ArtifactStore, job_id: str) -> None:
    with pytest.raises(ValueError):
        artifacts.job_dir(job_id)


def test_delete_is_idempotent_and_scoped(artifacts: ArtifactStore, tmp_path: Path) -> None:
    artifacts.save("job_1", "model.onnx", b"1")
    artifacts.save("job_2", "model.onnx", b"2")
    artifacts.delete("job_1")
    artifacts.delete("job_1")
    assert list(artifacts.job_ids()) == ["job_2"]
    assert artifacts.list("job_1") == []


def test_media_types() -> None:
    assert media_type_for("report.html").startswith("text/html")
    assert media_type_for("report.json") == "application/json"
    assert media_type_for("weird.bin") == "application/octet-stream"
