"""Submit-time checks of the uploaded arrays (``service/submission.py``): what can never succeed is
refused with a 4xx and no job, pointing at the form part (``/calibration/...``, ``/train/...``).
Found by probing the running service on 2026-12-05: each case below was accepted (202) and then
failed or silently misbehaved in the worker."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import factories
from tests.service.conftest import SPEC, assert_problem, submit


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _no_jobs(client: TestClient) -> None:
    assert client.get("/v1/jobs").json()["items"] == []


X = factories.random_inputs((8,), 10)  # the 8-16-16-4 MLP's inputs


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full(10, 9), r"must lie in \[0, 3\]"),  # was: the job failed as an internal error
        (np.full(10, -1), r"must lie in \[0, 3\]"),  # was: scored as the last class
        (np.full(10, 0.5), "integer class indices"),  # was: accuracy null, a loss bound of class 0
    ],
)
def test_calibration_labels_outside_the_classes_are_422(
    client: TestClient, onnx_model: bytes, labels: np.ndarray, match: str
) -> None:
    r = submit(client, onnx_model, SPEC, calibration=_npz(inputs=X, labels=labels))
    body = assert_problem(r, 422, "invalid-calibration")
    assert (body["errors"][0]["pointer"], body["errors"][0]["location"]) == ("/calibration/labels", "body")
    assert body["errors"][0]["field"] == "calibration.labels"
    assert re.search(match, body["detail"])
    _no_jobs(client)


def test_one_calibration_sample_is_422_for_a_compress_job(client: TestClient, onnx_model: bytes) -> None:
    """Was: 202, then the job failed ("calibration needs at least 2 samples", pointer /spec/calibration)."""
    r = submit(client, onnx_model, SPEC, calibration=_npz(inputs=X[:1]))
    body = assert_problem(r, 422, "invalid-calibration")
    assert body["errors"][0]["pointer"] == "/calibration/inputs" and "holds 1 sample" in body["detail"]
    _no_jobs(client)


def test_one_calibration_sample_is_enough_where_no_error_is_measured_on_it(
    client: TestClient, onnx_model: bytes
) -> None:
    spec = {**SPEC, "evaluation": {"inputs": "gaussian"}}  # (kind analyze takes no calibration at all)
    r = submit(client, onnx_model, spec, calibration=_npz(inputs=X[:1]))
    assert r.status_code == 202, r.text


# ---- kind analyze compresses nothing: compression options and calibration are refused -------------
# Until 2026-12-05 each was accepted (202), echoed in job.spec and ignored by the report (probe G, bug 5).
ANALYZE_REFUSES = {
    "prune": {"keep": 0.5, "granularity": "neuron"},
    "quantize": {"bits": 4},
    "target": {"max": 0.01},
    "exclude": ["node_linear"],
    "draws": 3,
    "compensate": False,
    "evaluation": {"inputs": "gaussian"},
    "compare_baselines": True,
    "target_opset": 17,
}


@pytest.mark.parametrize("name", sorted(ANALYZE_REFUSES))
def test_kind_analyze_refuses_each_compression_option(
    client: TestClient, onnx_model: bytes, name: str
) -> None:
    r = submit(client, onnx_model, {"kind": "analyze", "seed": 1, name: ANALYZE_REFUSES[name]})
    body = assert_problem(r, 422, "invalid-spec")
    assert [(e["pointer"], e["field"], e["location"]) for e in body["errors"]] == [
        (f"/spec/{name}", f"spec.{name}", "body")
    ]
    assert "kind analyze" in body["detail"] and name in body["detail"]
    _no_jobs(client)


def test_kind_analyze_names_every_compression_option_given(client: TestClient, onnx_model: bytes) -> None:
    """The probe's body: every offending field is named (the document refuses it, schemas.ANALYZE_REFUSES)."""
    spec = {"kind": "analyze", **ANALYZE_REFUSES, "exclude": ["no_such_layer"]}
    body = assert_problem(submit(client, onnx_model, spec), 422, "invalid-spec")
    assert [e["pointer"] for e in body["errors"]] == [f"/spec/{n}" for n in ANALYZE_REFUSES]
    _no_jobs(client)


def test_kind_analyze_refuses_a_calibration_part(client: TestClient, onnx_model: bytes) -> None:
    r = submit(client, onnx_model, {"kind": "analyze", "seed": 1}, calibration=_npz(inputs=X))
    body = assert_problem(r, 422)
    assert [(e["pointer"], e["field"]) for e in body["errors"]] == [("/calibration", "calibration")]
    assert "analyze takes no calibration" in body["detail"]
    _no_jobs(client)


def test_kind_analyze_takes_its_own_options_and_the_neutral_ones(
    client: TestClient, onnx_model: bytes
) -> None:
    """seed, device, full_diagnostics are analyze's; the compression options at their neutral values
    (what the document admits: an empty exclude, draws auto, compare_baselines false, nulls) pass."""
    neutral = {"exclude": [], "draws": "auto", "compare_baselines": False, "prune": None, "quantize": None}
    neutral |= {"target": None, "compensate": None, "evaluation": None, "target_opset": None}
    spec = {"kind": "analyze", "seed": 3, "device": "cpu", "full_diagnostics": True, **neutral}
    r = submit(client, onnx_model, spec)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["seed"] == 3 and r.json()["spec"]["full_diagnostics"] is True


def test_a_train_set_too_small_to_carve_is_422(client: TestClient, onnx_model: bytes) -> None:
    """Was: 202, then the job failed ("train has 2 samples: too few to carve ...")."""
    train = _npz(inputs=X[:2], labels=np.array([0, 1]))
    r = submit(client, onnx_model, {"kind": "finetune", "finetune": {"epochs": 1}}, train=train)
    body = assert_problem(r, 422, "invalid-calibration")
    assert body["errors"][0]["pointer"] == "/train" and "too few to carve" in body["detail"]
    _no_jobs(client)
    given = {"kind": "finetune", "finetune": {"epochs": 1}}  # with a validation file nothing is carved
    r = submit(client, onnx_model, given, train=train, validation=_npz(inputs=X[:1], labels=np.array([2])))
    assert r.status_code == 202, r.text


def test_a_bare_npy_train_file_is_422(client: TestClient, onnx_model: bytes) -> None:
    """A bare ``.npy`` holds inputs only: fine-tuning needs labels."""
    r = submit(client, onnx_model, {"kind": "finetune"}, train=_npy(X))
    body = assert_problem(r, 422, "invalid-calibration")
    assert body["errors"][0]["pointer"] == "/train/labels"
    _no_jobs(client)


@pytest.mark.parametrize(
    ("spec", "pointer"),
    [
        ({"quantize": {"bits": "4"}}, "/spec/quantize/bits"),
        ({"seed": "5"}, "/spec/seed"),
        ({"compare_baselines": "yes"}, "/spec/compare_baselines"),
        ({"prune": {"keep": "0.5"}}, "/spec/prune/keep"),
        ({"draws": "3"}, "/spec/draws"),
    ],
)
def test_a_string_is_no_number(
    client: TestClient, onnx_model: bytes, spec: dict[str, Any], pointer: str
) -> None:
    """The document types these as numbers and booleans; until 2026-12-05 the server coerced the
    strings (lax pydantic) and answered 202 to a request the document refuses."""
    body = assert_problem(submit(client, onnx_model, spec), 422, "invalid-spec")
    assert any(e["pointer"].startswith(pointer) for e in body["errors"]), body["errors"]
    _no_jobs(client)


def test_integral_json_numbers_are_integers(client: TestClient, onnx_model: bytes) -> None:
    """JSON Schema counts 4.0 as an integer, so the strict models take it as one."""
    r = submit(client, onnx_model, '{"quantize": {"bits": 4.0}, "seed": 3.0, "prune": {"keep": 1}}')
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["quantize"]["bits"] == 4 and r.json()["spec"]["seed"] == 3


@pytest.mark.parametrize(
    ("header", "wait"),
    [("wait=5", 5.0), ("respond-async, wait=10", 10.0), ("wait = 3 ,x", 3.0), ("wait=99", 30.0)]
    + [("wait=1e9", None), ("wait=2.5", None), ("wait=7x", None)],
)
def test_prefer_wait_is_delta_seconds(header: str, wait: float | None) -> None:
    """RFC 7240 §4.3: ``wait`` is delta-seconds; anything else is ignored (``wait=1e9`` was read
    as 1 s and echoed as ``Preference-Applied: wait=1``, found by probing 2026-12-05)."""
    from netshrink.service.submission import prefer_wait_s

    assert prefer_wait_s(header, 30.0) == wait
