"""Dependencies point one way (docs/development.md): import-linter's contracts in pyproject.toml,
plus a runtime
check that importing the core really loads no web, queue or plotting library.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FORBIDDEN = ("fastapi", "starlette", "celery", "kombu", "redis", "pydantic", "matplotlib", "httpx", "uvicorn")
STAGES = "netshrink.compression"


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _lint_imports(config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / ".ci/linked-tree"), str(BIN / "lint-imports"), "--no-cache"]
    if config is not None:
        cmd.append(str(config))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_import_contracts_are_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_reversed_stage_order_is_reported_broken(tmp_path: Path) -> None:
    """Negative control: the stage contract really looks at the imports (graph imports io, so io above
    graph must break)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    stages = next(c for c in config["contracts"] if c.get("containers") == [STAGES])
    layers = list(stages["layers"])
    i, g = layers.index("io"), layers.index("graph")
    layers[i], layers[g] = layers[g], layers[i]
    bad = tmp_path / "contracts.toml"
    quoted = ", ".join(f'"{x}"' for x in layers)
    bad.write_text(
        '[tool.importlinter]\nroot_packages = ["netshrink"]\n\n[[tool.importlinter.contracts]]\n'
        f'name = "reversed"\ntype = "layers"\ncontainers = ["{STAGES}"]\nlayers = [{quoted}]\n'
    )
    result = _lint_imports(bad)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr


def test_core_imports_no_service_libraries() -> None:
    loaded = _loaded_after(
        "import netshrink.compression, netshrink.compression.pipeline,"
        " netshrink.compression.export.artifacts, netshrink.compression.search.budget,"
        " netshrink.compression.diagnostics.diagnostics"
    )
    assert not {m.split(".")[0] for m in loaded} & set(FORBIDDEN)


def test_client_talks_http_only() -> None:
    loaded = _loaded_after("import netshrink.client")
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & {"torch", "onnx", "celery", "fastapi"}
    inner = ("netshrink.compression", "netshrink.workers", "netshrink.service")
    assert not {m for m in loaded if m.startswith(inner)}


def test_reporting_does_not_import_the_web_or_queue() -> None:
    loaded = _loaded_after("import netshrink.reporting")
    assert not {m.split(".")[0] for m in loaded} & {"fastapi", "starlette", "celery", "kombu", "redis"}
    assert not {m for m in loaded if m.startswith(("netshrink.workers", "netshrink.service"))}


def test_tests_and_benches_use_the_installed_names() -> None:
    """The repo root is on sys.path for pytest and `python -m bench.*`, so a bare `import cli` or
    `from compression...` would silently load a second copy of a package; only netshrink.* may be used."""
    import re

    bare = re.compile(r"\b(?:from|import)\s+(?:compression|service|workers|reporting|client|cli)(?:\.|\s)")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line) and "netshrink." not in line.split("import")[0]
    ]
    assert not offenders, offenders
