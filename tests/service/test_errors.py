"""One error map, RFC 9457 everywhere: core errors, validation, unknown routes, 405, and 500s."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from netshrink.compression import errors as core
from netshrink.service.errors import STATUS_BY_ERROR, problem_from_error, status_for
from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings
from tests.service.conftest import assert_problem

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
    classes = {getattr(core, name) for name in core.__all__}
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
