"""``ArtifactStore``: a job's input upload and output files in one directory per job.

Layout under ``root`` (``data_dir/jobs``)::

    {job_id}/model.{onnx|pt|pth|safetensors}   the upload (written by the API)
    {job_id}/architecture.json, calibration.npz, train.npz, validation.npz (optional)
    {job_id}/out/{name}                        artifacts (model.onnx, report.json, ...)

A submit creates one directory, the job's: each new directory is an inode that the kernel allocates
on the request's path (issue 13 §8). Jobs stored before 2026-12-04 keep their inputs in
``{job_id}/input/``, where ``input_dir`` still finds them.

Every write goes to a hidden temporary name in the same directory, is fsync'ed, and is then
``os.replace``d, so a reader never sees a half-written file (POSIX rename is atomic).
Ref: docs/development.md "How the layers talk"; docs/api.md "GET /v1/jobs/{id}/artifacts/{name}".
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from netshrink.workers.jobs import ArtifactInfo

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHUNK_BYTES = 1 << 20

MEDIA_TYPES = {
    ".onnx": "application/onnx",
    ".pt": "application/octet-stream",
    ".pth": "application/octet-stream",
    ".safetensors": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".npz": "application/octet-stream",
}


def media_type_for(name: str) -> str:
    """The Content-Type served for an artifact name."""
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


class ArtifactStore:
    """Files of every job under one root directory. Names are validated (no path traversal)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return self.root / job_id

    def input_dir(self, job_id: str) -> Path:
        """Where the API writes the upload and the optional architecture/calibration files: the job's
        directory itself (a job stored before 2026-12-04 keeps its ``input/`` subdirectory)."""
        job_dir = self.job_dir(job_id)
        legacy = job_dir / "input"
        return legacy if legacy.is_dir() else job_dir

    def input_path(self, job_id: str, name: str) -> Path:
        """Path of one input file (e.g. ``model.onnx``, ``architecture.json``, ``calibration.npz``)."""
        return self.input_dir(job_id) / _check_name(name)

    def model_input(self, job_id: str) -> Path:
        """The uploaded model file (``model.*``); FileNotFoundError when missing."""
        for path in sorted(self.input_dir(job_id).glob("model.*")):
            if not path.name.startswith("."):
                return path
        raise FileNotFoundError(f"no model input for job {job_id}")

    def save_input(self, job_id: str, name: str, stream: BinaryIO | bytes) -> tuple[int, str]:
        """Write an input file atomically from bytes or a stream; return (size_bytes, sha256 hex)."""
        return _atomic_write(self.input_path(job_id, name), stream)

    def path(self, job_id: str, name: str) -> Path:
        """Path of an output artifact (may not exist)."""
        return self.job_dir(job_id) / "out" / _check_name(name)

    def save(self, job_id: str, name: str, data: bytes) -> ArtifactInfo:
        """Write one artifact atomically and return its metadata (size + sha256 of the bytes)."""
        size, digest = _atomic_write(self.path(job_id, name), data)
        return ArtifactInfo(name=name, media_type=media_type_for(name), size_bytes=size, sha256=digest)

    def open(self, job_id: str, name: str) -> BinaryIO:
        """Open an artifact for download (FileNotFoundError when absent)."""
        return self.path(job_id, name).open("rb")

    def list(self, job_id: str) -> list[str]:
        out = self.job_dir(job_id) / "out"
        return sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []

    def delete(self, job_id: str) -> None:
        """Remove everything of a job (idempotent)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_ids(self) -> Iterable[str]:
        """Ids of every job directory on disk (retention finds orphans with it)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _JOB_ID.match(p.name))


def _check_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"invalid file name {name!r}")
    return name


def _atomic_write(path: Path, source: BinaryIO | bytes) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            chunks: Iterable[bytes] = (
                [source] if isinstance(source, bytes) else iter(lambda: source.read(CHUNK_BYTES), b"")
            )
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


__all__ = ["ArtifactStore", "media_type_for"]
