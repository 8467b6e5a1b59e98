"""Streaming uploads: limits (413), sniffing (415), zip-bomb guard, hashing across chunk borders,
and no leftovers when a submission is refused. Ref: docs/api.md "POST /v1/jobs"."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from netshrink.service.errors import ApiError
from netshrink.service.main import create_app
from netshrink.service.uploads import UploadLimits, receive_upload, sniff_model
from tests import factories
from tests.service.conftest import SPEC, app_state, assert_problem, make_settings, submit

LIMITS = UploadLimits(model_bytes=1 << 20, calibration_bytes=1 << 20, json_bytes=4096, unzipped_bytes=1 << 20)


def test_sniffs_real_model_files(tmp_path: Path, onnx_model: bytes) -> None:
    assert sniff_model(onnx_model[:16]) == "onnx"
    pt = factories.write_pt(factories.tiny_mlp(), tmp_path / "m.pt").read_bytes()
    assert sniff_model(pt[:16]) == "pt"
    st = factories.write_safetensors(factories.tiny_mlp(), tmp_path / "m.safetensors").read_bytes()
    assert sniff_model(st[:16]) == "safetensors"
    assert sniff_model(b"<html>hello</html>") is None
    assert sniff_model(b"") is None


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    out = io.BytesIO()
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_stream_parser_hashes_across_chunk_borders(tmp_path: Path, onnx_model: bytes, chunk: int) -> None:
    body = _multipart([("spec", None, b'{"seed": 1}'), ("model", "../../evil.onnx", onnx_model)])
    parsed = asyncio.run(
        receive_upload(_chunks(body, chunk), "multipart/form-data; boundary=XyZ", tmp_path, LIMITS)
    )
    model = parsed.files["model"]
    assert model.sha256 == hashlib.sha256(onnx_model).hexdigest() and model.size_bytes == len(onnx_model)
    assert model.path.read_bytes() == onnx_model and model.path.parent == tmp_path
    assert model.filename == "evil.onnx" and model.format == "onnx"  # no path components kept
    assert parsed.fields == {"spec": '{"seed": 1}'}


def test_stream_parser_stops_at_the_limit_and_removes_the_partial_file(tmp_path: Path) -> None:
    body = _multipart([("model", "m.onnx", b"\x08" + b"\x00" * 5000)])
    small = UploadLimits(model_bytes=1000, calibration_bytes=1000, json_bytes=100, unzipped_bytes=1000)
    with pytest.raises(ApiError) as exc:
        asyncio.run(receive_upload(_chunks(body, 64), "multipart/form-data; boundary=XyZ", tmp_path, small))
    assert exc.value.status == 413
    assert list(tmp_path.iterdir()) == []


def test_oversized_model_is_413_and_leaves_nothing(tmp_path: Path, onnx_model: bytes) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=len(onnx_model) - 1)
    with TestClient(create_app(settings)) as client:
        body = assert_problem(submit(client, onnx_model, SPEC), 413, "limit-exceeded")
        assert "model" in body["detail"]
        assert app_state(client).artifacts.job_ids() == []
        assert client.get("/v1/jobs").json()["items"] == []


def test_declared_content_length_over_every_limit_is_refused_before_reading(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, max_upload_bytes=1024, max_calibration_bytes=1024, max_json_field_bytes=1024
    )
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/v1/jobs",
            content=b"x" * (200 * 1024),
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        assert_problem(r, 413)


def test_unknown_model_format_is_415(client: TestClient) -> None:
    assert_problem(submit(client, b"GIF89a not a model at all", SPEC), 415, "unsupported-media-type")


def test_calibration_must_be_npz_or_npy(client: TestClient, onnx_model: bytes) -> None:
    r = submit(client, onnx_model, SPEC, calibration=b"GIF89a not an array")
    assert_problem(r, 415, "unsupported-media-type")
    broken = submit(client, onnx_model, SPEC, calibration=b"\x93NUMPY but not a valid array")
    assert broken.status_code in (400, 422) and broken.headers["content-type"] == "application/problem+json"
    npy = io.BytesIO()
    np.save(npy, np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), allow_pickle=False)
    ok = submit(client, onnx_model, SPEC, calibration=npy.getvalue())
    assert ok.status_code == 202, ok.text


def test_zip_bomb_calibration_is_413(tmp_path: Path, onnx_model: bytes) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.npy", b"\x00" * (4 << 20))  # 4 MiB of zeros deflate to a few KiB
    assert len(buf.getvalue()) < 64 * 1024
    settings = make_settings(tmp_path, max_unzipped_bytes=1 << 20)
    with TestClient(create_app(settings)) as client:
        body = assert_problem(submit(client, onnx_model, SPEC, calibration=buf.getvalue()), 413)
        assert "expands" in body["detail"]


def test_unknown_and_duplicate_parts_are_refused(client: TestClient, onnx_model: bytes) -> None:
    assert_problem(submit(client, onnx_model, SPEC, extra_field="1"), 422, "validation")
    body = _multipart([("model", "a.onnx", onnx_model), ("model", "b.onnx", onnx_model)])
    r = client.post("/v1/jobs", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert_problem(r, 400, "bad-multipart")
    r = client.post(
        "/v1/jobs",
        content=_multipart([("spec", None, b"{}")]),
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert_problem(r, 422, "validation")
    assert app_state(client).artifacts.job_ids() == []


def test_valid_calibration_is_stored_for_the_worker(
    client: TestClient, onnx_model: bytes, tmp_path: Path
) -> None:
    npz = io.BytesIO()
    np.savez(npz, inputs=np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    r = submit(client, onnx_model, SPEC, calibration=npz.getvalue())
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    stored = app_state(client).artifacts.input_path(job_id, "calibration.npz")
    assert stored.read_bytes() == npz.getvalue()
    assert app_state(client).store.get(job_id).has_calibration


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_calibration_header_declaring_an_absurd_shape_is_413_not_500(
    client: TestClient, onnx_model: bytes, container: str
) -> None:
    """Issue 13 §3: a header declaring shape (2**40, 64) made np.load raise MemoryError (500)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 64)})
    data = buf.getvalue() + b"\x00" * 256
    if container == "npz":
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w") as zf:
            zf.writestr("inputs.npy", data)
        data = packed.getvalue()
    body = assert_problem(submit(client, onnx_model, SPEC, calibration=data), 413, "limit-exceeded")
    assert str(2**40 * 64 * 4) in body["detail"]
    assert not any(app_state(client).artifacts.root.iterdir())


MULTIPART = "multipart/form-data; boundary="


def _assert_nothing_left(client: TestClient) -> None:
    state = app_state(client)
    assert state.artifacts.job_ids() == [] and client.get("/v1/jobs").json()["items"] == []
    assert not state.artifacts.root.exists() or not any(state.artifacts.root.iterdir())


@pytest.mark.parametrize("length", [257, 5000])
def test_boundary_over_the_parsers_maximum_is_400_and_leaves_nothing(
    client: TestClient, onnx_model: bytes, length: int
) -> None:
    """python_multipart's constructor refuses a boundary over 256 characters (FormParserError): a 500
    before the fix. RFC 2046 §5.1.1 allows at most 70, so it is a malformed body like any other."""
    boundary = "b" * length
    body = _multipart([("spec", None, b"{}"), ("model", "m.onnx", onnx_model)], boundary=boundary)
    r = client.post("/v1/jobs", content=body, headers={"content-type": MULTIPART + boundary})
    problem = assert_problem(r, 400, "bad-multipart")
    assert "boundary" in problem["detail"].lower()
    _assert_nothing_left(client)


def test_boundary_at_the_parsers_maximum_is_accepted(client: TestClient, onnx_model: bytes) -> None:
    boundary = "b" * 256
    body = _multipart([("spec", None, b"{}"), ("model", "m.onnx", onnx_model)], boundary=boundary)
    r = client.post("/v1/jobs", content=body, headers={"content-type": MULTIPART + boundary})
    assert r.status_code == 202, r.text


def test_stream_parser_refuses_a_long_boundary_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as exc:
        ctype = "multipart/form-data; boundary=" + "x" * 300
        asyncio.run(receive_upload(_chunks(b"--" + b"x" * 300, 64), ctype, tmp_path, LIMITS))
    assert exc.value.status == 400 and exc.value.slug == "bad-multipart"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tail", [b"", b"\r\n--XyZ", b"\r\n--XyZ-"])
def test_body_without_its_closing_boundary_is_400_and_leaves_nothing(
    client: TestClient, onnx_model: bytes, tail: bytes
) -> None:
    """python_multipart's ``finalize`` does not check that the body reached its closing boundary: a
    truncated body (every model byte sent, the closing ``--XyZ--`` missing) made a job whose input
    had ``size_bytes`` 0 and an empty sha256, from a file still open for writing."""
    body = _multipart([("spec", None, b"{}"), ("model", "m.onnx", onnx_model)])
    body = body[: body.rindex(b"\r\n--XyZ--")] + tail
    r = client.post("/v1/jobs", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})
    problem = assert_problem(r, 400, "bad-multipart")
    assert "closing boundary" in problem["detail"]
    _assert_nothing_left(client)
