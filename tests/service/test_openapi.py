"""The contract: the committed ``openapi/openapi.json`` is exactly what the app serves (drift test),
and schemathesis fuzzes every operation of the real ASGI app against it. Ref: docs/api.md;
docs/development.md "Tests"."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import jsonschema_rs
import numpy as np
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.hooks import HookContext

from netshrink.service.auth import generate_key
from netshrink.service.main import create_app
from netshrink.service.openapi_dump import render
from netshrink.service.uploads import FILE_PARTS, JSON_PARTS
from netshrink.workers.cursor import CURSOR_PATTERN
from netshrink.workers.store import get_store
from tests import factories
from tests.service.conftest import assert_problem, make_settings, submit
from tests.service.grounding import ALLOWED_CALLBACK_HOST, POOL, _ground_spec, ground, ground_case

ROOT = Path(__file__).resolve().parents[2]

# Schemathesis starts the app's lifespan itself and keeps it for the process: give it its own dir.
# An API key exists, so the server enforces the bearer scheme the document declares.
_DATA = tempfile.TemporaryDirectory(prefix="netshrink-schemathesis-")
_SETTINGS = make_settings(
    Path(_DATA.name),
    rate_limit_requests=100_000,
    webhook_allow_hosts=[ALLOWED_CALLBACK_HOST],
    prefer_wait_max_s=0.05,  # nothing runs the accepted jobs: `Prefer: wait` would only idle
)
_TOKEN, _RECORD = generate_key("schemathesis")
_store = get_store(_SETTINGS)
_store.create_api_key(_RECORD)
_store.close()
_APP = create_app(_SETTINGS)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)
load_all_checks()
ALL_CHECKS = CHECKS.get_all()
_VALID = {"prune": {"keep": 0.5}, "seed": 1}
_CNN_PT = next(m for m in POOL if m.architecture is not None)
_MLP_ONNX = next(m for m in POOL if m.name == "mlp.onnx")


@schema.hook
def map_case(context: HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """A positive submission gets the contents the document cannot describe (tests/service/grounding.py)."""
    return ground_case(case)


@schema.hook
def before_add_examples(context: HookContext, examples: list[schemathesis.Case]) -> None:
    """The examples phase does not pass through ``map_case``: ground its cases here."""
    for case in examples:
        ground_case(case)


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
    """Every built-in check (``--checks all``), no exclusion: positive submissions are grounded in a real
    model first (``map_case`` above; what that supplies is listed in tests/service/grounding.py)."""
    # Read before the call, as the checks see it: after call_and_validate the case can read negative.
    mode = case.meta.generation.mode.value if case.meta else "?"
    response = case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN}"}, checks=ALL_CHECKS)
    if case.method == "POST" and case.path == "/v1/jobs":
        SUBMITS.append((mode, response.status_code))


SUBMITS: list[tuple[str, int]] = []  # (generation mode, status) of each POST /v1/jobs above


def test_the_contract_run_had_schema_valid_submissions_accepted() -> None:
    """The run above is not vacuous: grounded positive submissions reached the server and got 202
    (were grounding to break, every case would turn negative and positive_data_acceptance idle).
    With grounding's model bytes replaced by junk, that check fails the run ("Valid data should have
    been accepted"), so it does run on them."""
    if not SUBMITS:
        pytest.skip("runs after test_api_conforms_to_its_schema[POST /v1/jobs] in the same session")
    accepted = [status for mode, status in SUBMITS if mode == "positive"]
    assert len(accepted) >= 5 and all(status in (200, 202) for status in accepted), SUBMITS


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
    with TestClient(create_app(make_settings(tmp_path))) as client:
        files = {
            "model": ("m.onnx", _MLP_ONNX.data, "application/octet-stream"),
            "spec": (None, json.dumps({"prune": {"keep": 0.5}, "seed": 1}).encode(), "application/json"),
        }
        r = client.post("/v1/jobs", files=files)
        assert r.status_code == 202, r.text
        extra = client.post("/v1/jobs", files={**files, "junk": (None, b"1", "text/plain")})
        assert extra.status_code == 422 and "junk" in extra.json()["detail"]


# ---- what the document cannot say (tests/service/grounding.py): schema-valid, and refused ------------


def _wrong_calibration() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((24, 3), np.float32))  # (N, 3): the model takes 8 features
    return buf.getvalue()


def _train(n: int) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((n, 8), np.float32), labels=np.arange(n) % 4)
    return buf.getvalue()


_ONE_OUTPUT = factories.gemm_model(8, 1).SerializeToString()  # one output per sample

# (what breaks it, extra parts, spec, headers, expected status, problem type)
CANNOT_SAY: dict[str, tuple[dict[str, Any], dict[str, Any], int, str]] = {
    "1 model bytes are no model": ({"model": b"\x01not a model"}, _VALID, 415, "unsupported-media-type"),
    "2 architecture with an ONNX model": (
        {"architecture": _CNN_PT.architecture},
        _VALID,
        422,
        "invalid-architecture",
    ),
    "3 calibration of another shape": (
        {"calibration": _wrong_calibration()},
        _VALID,
        422,
        "invalid-calibration",
    ),
    "4 a layer name the model lacks": ({}, {**_VALID, "exclude": ["no-such-layer"]}, 422, "invalid-spec"),
    "5 a callback to a private address": (
        {},
        {**_VALID, "callback": {"url": "http://10.0.0.1/hook"}},
        422,
        "invalid-callback",
    ),
    "8 a neuron keep below one unit per layer": (
        {},
        {"prune": {"keep": 0.05, "granularity": "neuron"}, "seed": 1},  # 0.8 of 16 neurons
        422,
        "invalid-spec",
    ),
    "9 a top-1 target on a one-output model": (
        {"model": _ONE_OUTPUT},
        {"target": {"metric": "top1_agreement", "min": 0.9}, "seed": 1},
        422,
        "invalid-spec",
    ),
    "10 a neuron prune of a one-layer model": (
        {"model": _ONE_OUTPUT},
        {"prune": {"keep": 0.5, "granularity": "neuron"}, "seed": 1},  # its units: inputs, outputs
        422,
        "invalid-spec",
    ),
    "3 a carved split of one sample for a follow-up compress to measure on": (
        {"train": _train(24)},
        {"kind": "finetune", "finetune": {"validation_fraction": 1 / 24}, "quantize": {"bits": 4}, "seed": 1},
        422,
        "invalid-calibration",
    ),
    "4 a layer name the model lacks, in a finetune job's follow-up compress": (
        {"train": _train(24)},
        {"kind": "finetune", "quantize": {"bits": 4}, "exclude": ["no-such-layer"], "seed": 1},
        422,
        "invalid-spec",
    ),
    "3 a train set too small to carve a validation split": (
        {"train": _train(24)},
        {"kind": "finetune", "finetune": {"validation_fraction": 0.01}, "seed": 1},  # 0.24 of 24
        422,
        "invalid-calibration",
    ),
}
if not torch.cuda.is_available():
    CANNOT_SAY["6 device cuda on an embedded server without CUDA"] = (
        {},
        {**_VALID, "device": "cuda"},
        422,
        "invalid-spec",
    )


@pytest.mark.parametrize("why", sorted(CANNOT_SAY))
def test_what_the_document_cannot_say_is_refused(why: str, tmp_path: Path) -> None:
    """Each rule of tests/service/grounding.py's list, broken in a request the document admits:
    the server refuses it with a problem, and the document's own validator admits the request."""
    parts, spec, status, kind = CANNOT_SAY[why]
    body = {"model": _MLP_ONNX.data, "spec": spec, **parts}
    doc = json.loads(render())
    body_schema = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    validator = jsonschema_rs.validator_for({**body_schema, "components": doc["components"]})
    judged = {k: "file" if isinstance(v, bytes) else v for k, v in body.items()}
    assert validator.is_valid(judged), list(validator.iter_errors(judged))
    with TestClient(create_app(make_settings(tmp_path))) as client:
        extra = {k: v for k, v in body.items() if k not in ("model", "spec")}
        r = submit(client, body["model"], body["spec"], **extra)
        assert_problem(r, status, kind)


def test_an_idempotency_key_reused_with_another_payload_is_refused(tmp_path: Path) -> None:
    """Rule 7 of tests/service/grounding.py: two schema-valid requests, one key, different payloads."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        key = {"Idempotency-Key": "same-key"}
        assert submit(client, _MLP_ONNX.data, _VALID, headers=key).status_code == 202
        other = submit(client, _MLP_ONNX.data, {**_VALID, "seed": 2}, headers=key)
        assert_problem(other, 422, "idempotency-key-reused")


def test_grounding_lifts_a_structured_keep_below_one_unit(tmp_path: Path) -> None:
    """Rule 8 in the grounding: schemathesis may draw `keep: 0.1` with channel granularity, which the
    pool's 4-channel CNN refuses; grounded, the keep is 2/4, the submission is accepted, and a keep
    the rule admits, or an unstructured one, is left as drawn."""
    cnn = next(m for m in POOL if m.name == "cnn.onnx")
    drawn = {"prune": {"keep": 0.1, "granularity": "channel"}, "seed": 1}
    grounded = _ground_spec(drawn, cnn)
    assert grounded["prune"]["keep"] == 0.5 and drawn["prune"]["keep"] == 0.1
    assert _ground_spec({"prune": {"keep": 0.3, "granularity": "channel"}}, cnn)["prune"]["keep"] == 0.3
    assert _ground_spec({"prune": {"keep": 0.1}}, cnn)["prune"]["keep"] == 0.1
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert_problem(submit(client, cnn.data, drawn), 422, "invalid-spec")
        assert submit(client, cnn.data, grounded).status_code == 202


def _body_validator() -> Any:
    doc = json.loads(render())
    body_schema = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    return jsonschema_rs.validator_for({**body_schema, "components": doc["components"]})


_ANALYZE_REFUSES: dict[str, Any] = {
    "prune": {"keep": 0.5},
    "quantize": {"bits": 4},
    "target": {"max": 0.01},
    "exclude": ["x"],
    "draws": 2,
    "compensate": True,
    "evaluation": {},
    "compare_baselines": True,
    "target_opset": 17,
}


@pytest.mark.parametrize(
    ("spec", "parts"),
    [({"kind": "analyze", name: value}, {}) for name, value in _ANALYZE_REFUSES.items()]
    + [({"kind": "analyze"}, {"calibration": "file"})],
    ids=[*_ANALYZE_REFUSES, "calibration"],
)
def test_the_document_says_kind_analyze_takes_no_compression_option(
    spec: dict[str, Any], parts: dict[str, Any]
) -> None:
    """Said in `dependentSchemas` (spec_rules.ANALYZE_REFUSES, submit_body.SUBMIT_BODY): the document refuses
    what the server refuses (tests/service/test_submission.py), so schemathesis' positive cases never
    carry them. Until 2026-12-05 both admitted them and the report ignored them."""
    validator = _body_validator()
    assert not validator.is_valid({"model": "file", "spec": spec, **parts})
    for kind in ("compress", "finetune"):  # the other kinds take them (finetune: for its follow-up)
        other = {**spec, "kind": kind}
        train = {"train": "file"} if kind == "finetune" else {}
        if not parts or kind == "compress":
            assert validator.is_valid({"model": "file", "spec": other, **parts, **train}), other
    neutral = {"exclude": [], "draws": "auto", "compare_baselines": False, "prune": None, "evaluation": None}
    assert validator.is_valid({"model": "file", "spec": {"kind": "analyze", "seed": 1, **neutral}})
    assert validator.is_valid(
        {"model": "file", "spec": {"kind": "analyze", "device": "cpu", "full_diagnostics": True}}
    )


def test_grounding_leaves_a_follow_up_compress_two_validation_samples(tmp_path: Path) -> None:
    """Rule 3 in the grounding: a drawn finetune body with compress fields and a validation_fraction
    carving one of the 24 samples gets two (a follow-up compress measures on them); without compress
    fields, or with an uploaded validation, one is enough and the fraction is left alone."""
    drawn = {
        "kind": "finetune",
        "finetune": {"validation_fraction": 0.001},
        "quantize": {"bits": 4},
        "seed": 1,
    }
    body, _ = ground({"model": b"", "spec": drawn, "train": b""}, None)
    assert body["spec"]["finetune"]["validation_fraction"] == 2 / 24
    plain = {"kind": "finetune", "finetune": {"validation_fraction": 0.001}, "seed": 1}
    assert (
        ground({"model": b"", "spec": plain, "train": b""}, None)[0]["spec"]["finetune"][
            "validation_fraction"
        ]
        == 1 / 24
    )
    gaussian = {**drawn, "evaluation": {"inputs": "gaussian"}}
    assert (
        ground({"model": b"", "spec": gaussian, "train": b""}, None)[0]["spec"]["finetune"][
            "validation_fraction"
        ]
        == 1 / 24
    )
    with TestClient(create_app(make_settings(tmp_path))) as client:
        parts = {k: v.data for k, v in body.items() if k not in ("model", "spec")}  # Binary -> bytes
        r = submit(client, body["model"].data, body["spec"], **parts)
        assert r.status_code == 202, r.text
