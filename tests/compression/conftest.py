"""Fixtures for the core tests: loaded networks and the report JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import netshrink.compression.report as report_pkg
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from tests import factories

# the schema the package ships (package data), wherever the package is imported from (make mutate: a copy)
SCHEMA_PATH = Path(report_pkg.__file__).parent / "schemas/report.schema.json"


@pytest.fixture(scope="session")
def report_schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="session")
def validate_report(report_schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def _validate(report: dict[str, Any]) -> None:
        jsonschema.validate(json.loads(json.dumps(report)), report_schema)

    return _validate


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mlp_net(model_dir: Path) -> Network:
    """16 -> 64 -> 64 -> 8 ReLU MLP exported by torch.onnx.export."""
    return load_model(factories.write_bytes(factories.mlp_onnx((16, 64, 64, 8)), model_dir / "mlp.onnx"))


@pytest.fixture(scope="session")
def cnn_net(model_dir: Path) -> Network:
    return load_model(factories.write_bytes(factories.cnn_with_bn_node_onnx(), model_dir / "cnn_bn.onnx"))
