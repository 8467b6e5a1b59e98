"""One error map, RFC 9457 everywhere: core errors, validation, unknown routes, 405, and 500s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from netshrink.compression import errors as core
from netshrink.service.errors import STATUS_BY_ERROR, problem_from_error, status_for
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings
from netshrink.workers import problems
from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.jobs import InputInfo, Job, JobStatus
from netshrink.workers.run import run_job
from netshrink.workers.store_sqlite import SQLiteJobStore
from tests import factories
from tests.service.conftest import assert_problem, make_settings

CORE_STATUS = [
    (core.ModelFormatError, 400),
    (core.ExternalDataError, 422),
    (core.UnsupportedModelError, 422),
    (core.NothingToCompressError, 422),
    (core.InvalidWeightsError, 422),
    (core.ArchitectureError, 422),
    (core.CalibrationError, 422),
    (core.InvalidSpecError, 422),
    (core.LimitExceededError, 413),
    (core.CancelledError, 409),
]


@pytest.mark.parametrize(("cls", "status"), CORE_STATUS)
def test_every_core_error_has_a_status(cls: type[core.CompressionError], status: int) -> None:
    assert status_for(cls("boom")) == status


def test_the_map_covers_every_core_error_class() -> None:
    exported = [getattr(core, name) for name in core.__all__]
    # the module also exports the refusal wording (MODEL_EXPECTED, not_a_model); the map is for classes
    classes = {x for x in exported if isinstance(x, type) and issubclass(x, Exception)}
    assert len(classes) >= 11
    assert classes <= set(STATUS_BY_ERROR) | {c for c, _ in CORE_STATUS}
    assert {c for c, _ in CORE_STATUS} | {core.CompressionError} == classes


def test_core_error_problem_points_at_the_spec_field_and_lists_nodes() -> None:
    p = problem_from_error(core.InvalidSpecError("bits must be 2..8", field="quantize.bits"))
    assert p.type == "https://netshrink.dev/problems/invalid-spec" and p.status == 422
    assert [(e.pointer, e.field) for e in p.errors] == [("/spec/quantize/bits", "spec.quantize.bits")]
    u = problem_from_error(core.UnsupportedModelError("custom ops", nodes=["n1", "n2"]))
    assert u.model_dump()["nodes"] == ["n1", "n2"]


def test_unknown_route_and_wrong_method_are_problems(client: TestClient) -> None:
    body = assert_problem(client.get("/v2/nothing"), 404)
    assert body["instance"] == "/v2/nothing" and body["title"] == "Not Found"
    r = client.put("/v1/jobs")
    assert_problem(r, 405)
    assert r.headers["allow"] == "GET, POST"  # every route on the path, not only the first


def test_query_validation_is_422_with_pointer(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422, "validation")
    assert body["errors"] == [
        {
            "detail": "Input should be greater than or equal to 1",
            "pointer": "/limit",
            "field": "limit",
            "location": "query",
        }
    ]


def test_unexpected_exception_is_a_500_problem_without_stack_trace(settings: ServiceSettings) -> None:
    app = create_app(settings)

    def explode() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    app.add_api_route("/boom", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    body = assert_problem(r, 500, "internal")
    assert "secret" not in r.text and "RuntimeError" not in r.text
    assert body["detail"] == "An unexpected error occurred; it has been logged."


def test_non_multipart_submit_is_415(client: TestClient) -> None:
    assert_problem(client.post("/v1/jobs", json={"spec": {}}), 415, "unsupported-media-type")


def test_a_core_error_is_the_same_problem_from_the_api_and_from_a_failed_job(tmp_path: Path) -> None:
    """One map (``workers.problems.STATUS_BY_ERROR``) on both sides: the same model over the same
    ``max_params`` is a 413 ``limit-exceeded`` from ``POST /v1/jobs`` *and* in the ``error`` of a
    job the worker fails with that limit (before, the worker recorded 422)."""
    model, spec = factories.mlp_onnx(), {"prune": {"keep": 0.5}, "seed": 1}
    settings = make_settings(tmp_path, max_params=100)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/jobs", files={"model": ("m.onnx", model), "spec": (None, json.dumps(spec))})
    body = assert_problem(answer, 413, "limit-exceeded")
    store = SQLiteJobStore(settings.sqlite_path, retention_s=3600)
    artifacts = ArtifactStore(settings.artifacts_dir)
    job = Job(spec=spec, input=InputInfo(filename="m.onnx", format="onnx", sha256="0" * 64, size_bytes=1))
    store.create(job)
    artifacts.save_input(job.id, "model.onnx", model)
    run_job(job.id, store=store, artifacts=artifacts, settings=settings)  # a worker with the same limit
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    body.pop("instance")
    assert failed.error == body  # type, title, status 413, detail, errors: identical


def test_the_worker_records_the_same_field_pointer_as_the_api() -> None:
    exc = core.InvalidSpecError("keep must be in (0, 1]", field="prune.keep")
    assert problems.from_error(exc) == problem_from_error(exc).model_dump(mode="json", exclude_none=True)
    assert problems.from_error(exc)["errors"][0]["pointer"] == "/spec/prune/keep"


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/no/such/route", 404, "nothing is at /no/such/route"),
        ("GET", "/v1/jobs/abc/artifacts/a%2Fb", 404, "nothing is at"),
        ("PUT", "/v1/jobs", 405, "PUT is not allowed here; allowed: GET, POST"),
    ],
)
def test_framework_problems_carry_a_detail(
    client: TestClient, method: str, path: str, status: int, says: str
) -> None:
    """docs/api.md "Errors": every problem has a `detail` (Starlette's own 404/405 had none)."""
    r = client.request(method, path)
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
    assert says in r.json()["detail"]
