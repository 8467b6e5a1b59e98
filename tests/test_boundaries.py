"""Dependencies point one way: the core imports no web, queue or plotting library (STYLE.md)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("fastapi", "starlette", "celery", "kombu", "redis", "pydantic", "matplotlib", "httpx", "uvicorn")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_core_imports_no_service_libraries() -> None:
    loaded = _loaded_after(
        "import compression, compression.pipeline, compression.loading, compression.calibration, "
        "compression.export_onnx, compression.export_torch, compression.diagnostics, compression.budget"
    )
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_client_talks_http_only() -> None:
    loaded = _loaded_after("import client")
    assert not loaded & {"compression", "workers", "service", "torch", "onnx", "celery", "fastapi"}


def test_reporting_does_not_import_the_web_or_queue() -> None:
    loaded = _loaded_after("import reporting")
    assert not loaded & {"fastapi", "starlette", "celery", "kombu", "redis", "workers", "service"}
