"""One bad file, one sentence: ``netshrink compress`` on a local file and ``POST /v1/jobs`` with the
same bytes word the refusal with the same message from the core (``compression/errors.py``
``not_a_model``, or the loader's own). The CLI adds its prefix and the server its status; the
sentence after them is compared exactly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from netshrink.cli.main import main
from netshrink.service.main import create_app
from tests import factories
from tests.service.conftest import TestClient, make_settings, submit


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((8, 8), np.float32), labels=np.zeros(8, np.int64))
    return buf.getvalue()


def _bad_files() -> dict[str, bytes]:
    good = factories.mlp_onnx((8, 16, 4))
    return {
        "npz-as-model": _npz(),
        "truncated-onnx": good[: len(good) // 2],
        "text-file": b"layer sizes: 8, 16, 4\nthis is a text file, not a model\n",
        "empty-file": b"",
        "binary-garbage": b"\x00\x01 this is not a model" * 10,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("srv")))) as c:
        yield c  # type: ignore[misc]


@pytest.mark.parametrize("kind", sorted(_bad_files()))
def test_cli_and_server_word_a_bad_file_identically(
    kind: str, server: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _bad_files()[kind]
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    rc = main(["compress", str(path), "--bits", "8", "--out", str(tmp_path / "out")])
    cli_line = capsys.readouterr().err.strip()

    r = submit(server, data, {"quantize": {"bits": 8}})
    assert r.status_code in (400, 415), r.text
    detail = r.json()["detail"]

    assert rc == 2 and "\n" not in cli_line and "Traceback" not in cli_line
    assert detail.startswith("this file ") and "expected an ONNX model" in detail, detail
    assert cli_line.endswith(f": {detail}"), f"CLI: {cli_line!r}\nAPI: {detail!r}"
