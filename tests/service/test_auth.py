"""API keys: hashing, dev mode, refusing an open non-loopback bind, Bearer auth, per-key isolation.
Ref: docs/api.md "Auth and limits"."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from netshrink.service.auth import AuthConfigError, generate_key, hash_key
from netshrink.service.main import create_app
from netshrink.workers.store import get_store
from tests.service.conftest import SPEC, app_state, assert_problem, make_settings, submit


def test_keys_are_random_and_only_their_hash_is_stored() -> None:
    token, record = generate_key("ci")
    other, _ = generate_key()
    assert token.startswith("ns_") and len(token) >= 40 and token != other
    assert record.key_hash == hashlib.sha256(token.encode()).hexdigest() == hash_key(token)
    assert token not in record.model_dump_json()
    assert record.webhook_secret.startswith("whsec_")


def test_dev_mode_on_loopback_without_keys_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), TestClient(create_app(make_settings(tmp_path))) as client:
        assert app_state(client).auth_mode == "dev"
        assert client.get("/v1/jobs").status_code == 200
    assert "dev mode" in caplog.text


def test_non_loopback_without_keys_refuses_to_start(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, host="0.0.0.0"))
    with pytest.raises(AuthConfigError, match="not loopback"), TestClient(app):
        pass


def test_non_loopback_with_auth_disabled_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING),
        TestClient(create_app(make_settings(tmp_path, host="0.0.0.0", auth_disabled=True))) as c,
    ):
        assert c.get("/v1/jobs").status_code == 200
    assert "DISABLED" in caplog.text


def _with_keys(tmp_path: Path, n: int, **overrides: Any) -> tuple[Any, list[str]]:
    settings = make_settings(tmp_path, host="0.0.0.0", **overrides)
    store = get_store(settings)
    tokens = []
    for i in range(n):
        token, record = generate_key(f"k{i}")
        store.create_api_key(record)
        tokens.append(token)
    store.close()
    return settings, tokens


def test_bearer_key_required_when_keys_exist(tmp_path: Path, onnx_model: bytes) -> None:
    settings, (token,) = _with_keys(tmp_path, 1)
    with TestClient(create_app(settings)) as client:
        r = client.get("/v1/jobs")
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert_problem(client.get("/v1/jobs", headers={"Authorization": "Bearer ns_wrong"}), 401)
        assert_problem(client.get("/v1/jobs", headers={"Authorization": f"Basic {token}"}), 401)
        assert_problem(submit(client, onnx_model, SPEC), 401)
        ok = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # The probes stay open for load balancers.
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_each_key_sees_only_its_own_jobs(tmp_path: Path, onnx_model: bytes) -> None:
    settings, (alice, bob) = _with_keys(tmp_path, 2)
    a = {"Authorization": f"Bearer {alice}"}
    b = {"Authorization": f"Bearer {bob}"}
    with TestClient(create_app(settings)) as client:
        job = submit(client, onnx_model, SPEC, headers=a).json()
        assert client.get(f"/v1/jobs/{job['id']}", headers=a).status_code == 200
        for method, path in [
            ("GET", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/report"),
            ("POST", f"/v1/jobs/{job['id']}/cancel"),
            ("DELETE", f"/v1/jobs/{job['id']}"),
        ]:
            assert_problem(client.request(method, path, headers=b), 404, "not-found")
        assert client.get("/v1/jobs", headers=b).json()["items"] == []
        assert [j["id"] for j in client.get("/v1/jobs", headers=a).json()["items"]] == [job["id"]]
        # The same Idempotency-Key under another key is another request, not a conflict.
        k = {"Idempotency-Key": "same"}
        ja = submit(client, onnx_model, SPEC, headers={**a, **k}).json()["id"]
        jb = submit(client, onnx_model, {**SPEC, "seed": 99}, headers={**b, **k}).json()["id"]
        assert ja != jb


def test_creating_a_key_ends_dev_mode(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 200
    token, record = generate_key()
    app_state(client).store.create_api_key(record)
    assert_problem(client.get("/v1/jobs"), 401)
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_keys_cli_creates_a_key_the_api_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from netshrink.cli import keys_cmd

    settings = make_settings(tmp_path, host="0.0.0.0")
    parser = argparse.ArgumentParser()
    keys_cmd.add_arguments(parser)
    assert keys_cmd.run(parser.parse_args(["create", "--name", "ci"]), settings) == 0
    out = capsys.readouterr().out
    token = next(line.split()[-1] for line in out.splitlines() if line.startswith("api key:"))
    assert "whsec_" in out
    assert keys_cmd.run(parser.parse_args(["list"]), settings) == 0
    listed = capsys.readouterr().out
    assert "\tci\t" in listed and token not in listed
    with TestClient(create_app(settings)) as client:  # non-loopback now starts: a key exists
        assert_problem(client.get("/v1/jobs"), 401)
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
