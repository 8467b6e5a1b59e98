"""What ``netshrink compress`` imports (issue 10, fixed costs), checked in a fresh process.

The CLI's compress path imports no web or queue library (the service's), and with ``--quiet`` no
rich: nothing is drawn, and its imports cost about 0.1 s of CPU per job (without ``--quiet`` the
progress bar and the summary table are drawn with rich, as before: tests/cli/test_compress_cmd.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factories

SERVICE_LIBS = ("fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "httpx", "pydantic_settings")

RUN = """
import json, sys
from netshrink.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _run(args: list[str]) -> tuple[int, set[str], str]:
    proc = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(last["code"]), set(last["modules"]), proc.stderr


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.write_bytes(factories.mlp_onnx(), tmp_path_factory.mktemp("imp") / "mlp.onnx")


def test_quiet_compress_imports_neither_rich_nor_service_libraries(mlp_path: Path, tmp_path: Path) -> None:
    code, modules, err = _run(
        ["compress", str(mlp_path), "--bits", "4", "--seed", "0", "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert code == 0 and (tmp_path / "o" / "report.html").exists()
    assert "rich" not in modules
    assert not modules & set(SERVICE_LIBS), modules & set(SERVICE_LIBS)
    assert "torch" in modules and "matplotlib" in modules  # the run itself happened in this process
    assert "wrote model.onnx" in err  # the last line is still printed


WHO_IMPORTS = """
import json, sys, threading
from netshrink.cli.main import main

seen = []


class Who:
    def find_spec(self, name, path=None, target=None):
        if name == "netshrink.reporting":
            seen.append(threading.current_thread().name)
        return None  # the normal import goes on


sys.meta_path.insert(0, Who())
code = main(sys.argv[1:])
print(json.dumps({"code": code, "importers": seen}))
"""


@pytest.mark.parametrize("html", [True, False])
def test_the_renderer_is_imported_on_a_thread_beside_the_core(
    html: bool, mlp_path: Path, tmp_path: Path
) -> None:
    """The report renderer's imports (matplotlib, ~0.4 s) run on their own thread while the core
    computes (cli/local_run.py ``_import_renderer_early``), and not at all with ``--no-html``."""
    args = ["compress", str(mlp_path), "--bits", "4", "--seed", "0", "--out", str(tmp_path / "o"), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-c", WHO_IMPORTS, *args, *([] if html else ["--no-html"])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["code"] == 0 and (tmp_path / "o" / "report.html").exists() is html
    assert last["importers"] == (["netshrink-import-renderer"] if html else [])
