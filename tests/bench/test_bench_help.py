"""Every runnable bench module answers ``--help`` with its usage and exits 0, without starting its run.

Six of them once ignored ``--help`` and ran the whole benchmark (overwriting bench/results/). The modules
are found in bench/ (any module with a top-level ``main`` or ``if __name__ == "__main__":``), not listed
here. Each runs from a copy of bench/'s files in a temporary folder, so a module that regresses and runs
anyway writes its results there, never over the committed ones.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
TIMEOUT_S = 60  # torch's import is most of it: 2-5 s each on the loaded 2-core machine


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _runnable(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(_is_main_guard(n) or (isinstance(n, ast.FunctionDef) and n.name == "main") for n in body)


MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__" and _runnable(p))


def test_the_discovery_finds_the_benchmarks() -> None:
    assert {"core", "width", "width_layers", "heavy_tails", "tightness", "example_report"} <= set(MODULES)


@pytest.fixture(scope="module")
def bench_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of bench/'s files (not results/ or .cache/) as ``bench``."""
    root = tmp_path_factory.mktemp("bench-help")
    (root / "bench").mkdir()
    for f in BENCH.iterdir():
        if f.is_file():
            shutil.copy2(f, root / "bench" / f.name)
    return root


@pytest.mark.parametrize("module", MODULES)
def test_help_prints_usage_and_exits_0(module: str, bench_copy: Path) -> None:
    # -m puts the cwd (the copy) first on sys.path; PYTHONPATH adds the repository for ``tests``.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bench_copy), str(ROOT)])}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{module}", "--help"],
            cwd=bench_copy,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"bench.{module} --help still running after {TIMEOUT_S} s: it ignores --help")
    tail = f"\n--- stdout (end) ---\n{proc.stdout[-1500:]}\n--- stderr (end) ---\n{proc.stderr[-1500:]}"
    assert proc.returncode == 0, f"bench.{module} --help exited {proc.returncode}{tail}"
    assert "usage:" in proc.stdout, f"bench.{module} --help printed no usage (did it run instead?){tail}"
