"""The contract: the committed ``openapi/openapi.json`` is exactly what the app serves (drift test),
and schemathesis fuzzes every operation of the real ASGI app against it. Ref: docs/api.md;
docs/development.md "Tests"."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from netshrink.service.auth import generate_key
from netshrink.service.main import create_app
from netshrink.service.openapi_dump import render
from netshrink.service.uploads import FILE_PARTS, JSON_PARTS
from netshrink.workers.cursor import CURSOR_PATTERN
from netshrink.workers.store import get_store
from tests.service.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]

# Schemathesis starts the app's lifespan itself and keeps it for the process: give it its own dir.
# An API key exists, so the server enforces the bearer scheme the document declares.
_DATA = tempfile.TemporaryDirectory(prefix="netshrink-schemathesis-")
_SETTINGS = make_settings(Path(_DATA.name), rate_limit_requests=100_000)
_TOKEN, _RECORD = generate_key("schemathesis")
_store = get_store(_SETTINGS)
_store.create_api_key(_RECORD)
_store.close()
_APP = create_app(_SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


def test_committed_openapi_matches_the_app() -> None:
    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert committed == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_openapi_document_shape() -> None:
    doc = json.loads(render())
    assert doc["openapi"].startswith("3.1")
    assert set(doc["webhooks"]) == {
        "job.started",
        "job.progress",
        "job.succeeded",
        "job.failed",
        "job.cancelled",
    }
    submit = doc["paths"]["/v1/jobs"]["post"]
    assert "jobEvent" in submit["callbacks"]
    assert submit["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["model", "spec"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    for name in ("JobSpecCreate", "JobPublic", "Problem", "WebhookEvent", "Capabilities"):
        assert name in doc["components"]["schemas"]


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    excluded = []
    if case.method == "POST" and case.path == "/v1/jobs":
        # Random bytes match the schema ("a binary file") but are never a loadable model: 4xx is right.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN}"}, excluded_checks=excluded)


def test_the_document_says_what_the_server_does() -> None:
    """Issue 13 §7: binary parts (generated clients send bytes, not their repr), the artifact's real
    content types, the 401 of /v1/capabilities with its schema, no extra parts, the cursor's 400,
    and a typed ``spec`` part (a JSON part with the JobSpecCreate schema)."""
    from netshrink.workers.artifacts import MEDIA_TYPES

    doc = json.loads(render())
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = body["schema"]["properties"]
    for part in ("model", "calibration", "train", "validation"):  # every part the server takes
        assert props[part]["format"] == "binary" and props[part]["minLength"] == 1
    assert set(props) == set(FILE_PARTS) | set(JSON_PARTS)
    assert body["schema"]["additionalProperties"] is False
    assert props["spec"]["$ref"] == "#/components/schemas/JobSpecCreate"
    assert body["encoding"]["spec"]["contentType"] == "application/json"
    artifact = doc["paths"]["/v1/jobs/{job_id}/artifacts/{name}"]["get"]["responses"]["200"]["content"]
    assert set(artifact) == {m.split(";")[0] for m in MEDIA_TYPES.values()}
    assert next(iter(artifact)) == "application/octet-stream"  # generators read the body as bytes
    assert all(c["schema"] == {"type": "string", "format": "binary"} for c in artifact.values())
    caps_401 = doc["paths"]["/v1/capabilities"]["get"]["responses"]["401"]["content"]
    assert caps_401["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "400" in doc["paths"]["/v1/jobs"]["get"]["responses"]
    cursor = next(p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "cursor")
    assert cursor["schema"]["pattern"] == CURSOR_PATTERN


def test_spec_sent_as_a_typed_json_part_is_accepted(tmp_path: Path) -> None:
    """What a generated client sends for the typed ``spec``: a part with Content-Type application/json."""
    from fastapi.testclient import TestClient

    from tests import factories

    with TestClient(create_app(make_settings(tmp_path))) as client:
        files = {
            "model": ("m.onnx", factories.mlp_onnx(), "application/octet-stream"),
            "spec": (None, json.dumps({"prune": {"keep": 0.5}, "seed": 1}).encode(), "application/json"),
        }
        r = client.post("/v1/jobs", files=files)
        assert r.status_code == 202, r.text
        extra = client.post("/v1/jobs", files={**files, "junk": (None, b"1", "text/plain")})
        assert extra.status_code == 422 and "junk" in extra.json()["detail"]
