"""A client generated from the committed ``openapi/openapi.json`` with ``openapi-python-client`` runs
submit -> poll -> download -> report against a live ``netshrink serve`` (issue 13 §7), every call
through the generated functions. The download returns the raw bytes of each artifact: the 200
response lists ``application/octet-stream`` first, and the generator reads a body by its first known
media type (with ``application/json`` first it parsed the ONNX file as JSON).

Before ``format: binary`` the generator typed the model part as ``str`` and the server got the
bytes' Python repr (415); the typed ``spec`` part is sent as JSON by the generated model class.
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import factories
from tests.serve_process import embedded_serve

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "netshrink_generated_client"


def _generate(tmp_path: Path) -> Any:
    tool = Path(sys.executable).parent / "openapi-python-client"
    exe = str(tool) if tool.exists() else shutil.which("openapi-python-client")
    assert exe, "openapi-python-client is not installed (pyproject dev extras)"
    out = tmp_path / PACKAGE
    subprocess.run(
        [exe, "generate", "--path", str(ROOT / "openapi" / "openapi.json"), "--output-path", str(out)]
        + ["--meta", "none"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sys.path.insert(0, str(tmp_path))
    return importlib.import_module(PACKAGE)


@pytest.mark.slow
def test_generated_client_submits_polls_downloads_and_reads_the_report(tmp_path: Path) -> None:
    gen = _generate(tmp_path)
    from netshrink_generated_client.api.jobs import (  # type: ignore[import-not-found]
        download_artifact_v1_jobs_job_id_artifacts_name_get as download,
    )
    from netshrink_generated_client.api.jobs import (
        get_job_v1_jobs_job_id_get as get_job,
    )
    from netshrink_generated_client.api.jobs import (
        get_report_v1_jobs_job_id_report_get as get_report,
    )
    from netshrink_generated_client.api.jobs import (
        submit_job_v1_jobs_post as submit,
    )
    from netshrink_generated_client.models import (  # type: ignore[import-not-found]
        JobSpecCreate,
        SubmitJobV1JobsPostBody,
    )
    from netshrink_generated_client.types import File  # type: ignore[import-not-found]

    with embedded_serve(tmp_path / "data") as (base, _proc):
        client = gen.Client(base_url=base, raise_on_unexpected_status=True, timeout=httpx.Timeout(60))
        spec = JobSpecCreate.from_dict(
            {"prune": {"keep": 0.5}, "seed": 3, "evaluation": {"inputs": "gaussian", "samples": 16}}
        )
        model = factories.mlp_onnx()
        body = SubmitJobV1JobsPostBody(model=File(payload=model, file_name="m.onnx"), spec=spec)
        created = submit.sync_detailed(client=client, body=body)
        assert created.status_code == 202, created.content
        job_id = created.parsed.id
        deadline = time.monotonic() + 120
        while (job := get_job.sync(job_id, client=client)).status.value in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job.status.value == "succeeded", job.error
        # The generated download function returns a File with the raw bytes for every artifact,
        # whatever its Content-Type (application/onnx, application/json, text/html).
        files = {}
        for name in ("model.onnx", "report.json", "report.html"):
            got = download.sync_detailed(job_id, name, client=client)
            assert got.status_code == 200 and isinstance(got.parsed, File), (name, got.content[:200])
            files[name] = got.parsed.payload.read()
            assert files[name] == got.content and files[name]
        assert files["model.onnx"][:1] == b"\x08"  # an ONNX ModelProto (field 1, ir_version)
        assert json.loads(files["report.json"])["summary"] and files["report.html"].startswith(b"<!")
        report = get_report.sync(job_id, client=client)
        assert report is not None and "summary" in report.to_dict()
        # kind finetune: the `train` part is in the document, so the generated body carries it.
        rng = np.random.default_rng(0)
        train = io.BytesIO()
        np.savez(train, inputs=rng.standard_normal((64, 8)).astype("float32"), labels=rng.integers(0, 4, 64))
        tune = JobSpecCreate.from_dict({"kind": "finetune", "finetune": {"epochs": 1}, "seed": 0})
        body = SubmitJobV1JobsPostBody(
            model=File(payload=model, file_name="m.onnx"),
            spec=tune,
            train=File(payload=train.getvalue(), file_name="train.npz"),
        )
        tuned = submit.sync_detailed(client=client, body=body)
        assert tuned.status_code == 202, tuned.content
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
            del sys.modules[name]
