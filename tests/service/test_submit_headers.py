"""``POST /v1/jobs`` reads ``Idempotency-Key`` and ``Prefer`` itself (issue 13 §8: FastAPI's solving
of two ``Header`` parameters was a measurable part of a submit's CPU); what they did is unchanged."""

from __future__ import annotations

from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from netshrink.service.routes import submit as submit_routes
from tests.service.conftest import SPEC, app_state, assert_problem, submit


def _submit_route() -> APIRoute:
    (route,) = (r for r in submit_routes.router.routes if isinstance(r, APIRoute) and "POST" in r.methods)
    return route


def test_fastapi_solves_no_header_parameter_for_a_submit() -> None:
    assert get_flat_params(_submit_route().dependant) == []  # the two headers before


def test_the_headers_keep_their_openapi_parameters(client: TestClient) -> None:
    params = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in params] == [
        ("idempotency-key", "header", False),
        ("prefer", "header", False),
    ]
    assert params[0]["schema"]["anyOf"][0] == {"maxLength": 255, "type": "string"}


def test_an_idempotency_key_over_255_characters_is_422_and_creates_nothing(
    client: TestClient, onnx_model: bytes
) -> None:
    r = submit(client, onnx_model, SPEC, headers={"Idempotency-Key": "k" * 256})
    body = assert_problem(r, 422, "validation")
    assert body["errors"] == [
        {
            "detail": "String should have at most 255 characters",
            "field": "idempotency-key",
            "location": "header",
            "pointer": "/idempotency-key",
        }
    ]
    assert app_state(client).artifacts.job_ids() == []
    ok = submit(client, onnx_model, SPEC, headers={"Idempotency-Key": "k" * 255, "Prefer": "wait=0"})
    assert ok.status_code == 202 and ok.headers["preference-applied"] == "wait=0"
    again = submit(client, onnx_model, SPEC, headers={"Idempotency-Key": "k" * 255})
    assert again.json()["id"] == ok.json()["id"] and again.headers["idempotent-replayed"] == "true"
