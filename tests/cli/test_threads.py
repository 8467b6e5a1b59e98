"""``--threads`` / ``NETSHRINK_TORCH_THREADS`` bound numpy's BLAS pool as well as torch's.

Checked in a fresh process (thread pools are process state), through threadpoolctl's own report of
every BLAS library loaded there: numpy's OpenBLAS defaults to one thread per core, and before
cli/threads.py a worker with one torch thread still ran numpy's products on every core.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, os, sys
from threadpoolctl import threadpool_info
import torch
from netshrink.cli.{module} import {func}
{func}({n})
blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({{"torch": torch.get_num_threads(), "blas": blas}}))
"""


def _pools(module: str, func: str, n: int) -> dict[str, object]:
    code = SCRIPT.format(module=module, func=func, n=n)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("module", "func"), [("local_run", "set_threads"), ("threads", "limit_threads")])
def test_one_thread_caps_torch_and_every_blas_pool(module: str, func: str) -> None:
    pools = _pools(module, func, 1)
    assert pools["torch"] == 1
    assert pools["blas"], "no BLAS library found: numpy's OpenBLAS should be loaded"
    assert pools["blas"] == [1] * len(pools["blas"])  # type: ignore[arg-type]


def test_two_threads_are_two_everywhere() -> None:
    pools = _pools("threads", "limit_threads", 2)
    assert pools["torch"] == 2 and pools["blas"] == [2] * len(pools["blas"])  # type: ignore[arg-type]
