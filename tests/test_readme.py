"""The README's snippets run as written: every fenced block marked ``<!-- tested: NAME -->`` is
extracted and run, in order, in a fresh directory whose ``.venv`` is this test's environment, against
a real ``netshrink serve`` (embedded mode) on a free port.

This is the newcomer's first run: train the digits model in one line, submit it with curl, re-run the
download (it must not fail because the file exists), compress it locally, use the SDK and
``netshrink submit``, then the API-key flow with a key from ``netshrink keys create``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- tested: (\S+) -->\n```(bash|python)\n(.*?)```", re.S)


def snippets() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return {m.group(1): (m.group(2), m.group(3)) for m in BLOCK.finditer(text)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("newcomer")
    (d / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return d


@pytest.fixture(scope="module")
def env(workdir: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")}
    env["NETSHRINK_SERVER"] = f"http://127.0.0.1:{port}"
    env["NETSHRINK_DATA_DIR"] = str(workdir / "data")
    argv = [".venv/bin/netshrink", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=env, cwd=workdir)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "serve exited early"
            try:
                if httpx.get(f"{env['NETSHRINK_SERVER']}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def run(name: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    lang, code = snippets()[name]
    argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [".venv/bin/python", "-c", code]
    out = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, f"README snippet {name!r} failed:\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr
    return out


def test_the_readme_marks_its_snippets() -> None:
    assert {"quickstart-model", "quickstart-server", "quickstart-cli", "sdk", "submit", "api-keys"} <= set(
        snippets()
    )


def _check_model(path: Path) -> None:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 64), np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape[0] == 3


QUICKSTART_CLAIMS = (  # what the README's paragraph after the quick start says, as regexes
    ("ratio", r"gives a ([\d.]+)× smaller file"),
    ("relative error %", r"([\d.]+) % relative output error"),
    ("top-1 agreement %", r"([\d.]+) % top-1 agreement"),
    ("accuracy", r"accuracy ([\d.]+ → [\d.]+)"),
    ("compensated layers", r"with the (\w+)\s+layers compensated"),
    ("squared error / B_W", r"squared error is ([\d.]+·10⁻[⁰¹²³⁴⁵⁶⁷⁸⁹]+) of B_W"),
    ("relative W bound", r"relative bound\s+([\d.]+)\)"),
    ("uncompensated error %", r"has ([\d.]+) % relative error"),
    ("uncompensated tier-E bound", r"tier-E bound of ([\d.]+) relative"),
)
_WORDS = {2: "two", 3: "three", 4: "four"}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def quickstart_claims() -> dict[str, str]:
    """The figures the README's quick-start paragraph ("On our machine this gives ...") states."""
    text = README.read_text(encoding="utf-8")
    para = text[text.index("On our machine this gives") :].split("\n\n")[0]
    claims = {}
    for name, pattern in QUICKSTART_CLAIMS:
        found = re.search(pattern, para)
        assert found is not None, f"the quick-start paragraph no longer states the {name}"
        claims[name] = found.group(1)
    return claims


def quickstart_figures(report: dict[str, Any]) -> dict[str, str]:
    """The same figures from the quick-start's report.json, rounded as the paragraph writes them."""
    s = report["summary"]
    comp, cls = s["compensation"], s["classification"]
    fraction = s["bounds"]["W"]["measured_over_bound"]
    exponent = math.floor(math.log10(fraction))
    mantissa = f"{fraction / 10**exponent:.1f}".removesuffix(".0")
    return {
        "ratio": f"{s['bytes']['ratio']:.1f}",
        "relative error %": f"{100 * s['error']['relative_l2']:.1f}",
        "top-1 agreement %": f"{100 * cls['top1_agreement']:.0f}",
        "accuracy": f"{cls['accuracy_before']:.3f} → {cls['accuracy_after']:.3f}",
        "compensated layers": _WORDS.get(len(comp["layers"]), str(len(comp["layers"]))),
        "squared error / B_W": f"{mantissa}·10⁻{str(-exponent).translate(_SUPERSCRIPT)}",
        "relative W bound": f"{s['bounds']['W']['relative']:.1f}",
        "uncompensated error %": f"{100 * comp['uncompensated_same_draw']['relative_l2']:.1f}",
        "uncompensated tier-E bound": f"{comp['uncompensated_same_draw']['bounds']['E']['relative']:.2f}",
    }


@pytest.mark.slow
def test_readme_snippets_run_as_written(workdir: Path, env: dict[str, str]) -> None:
    run("quickstart-model", workdir, env)
    assert (workdir / "digits.onnx").is_file() and (workdir / "calib.npz").is_file()

    first = run("quickstart-server", workdir, env)
    assert '"bound_holds"' in first.stdout and '"holds": true' in first.stdout
    again = run("quickstart-server", workdir, env)  # files exist now: the re-run must still succeed
    assert '"bound_holds"' in again.stdout
    _check_model(workdir / "digits-4bit.onnx")
    assert (workdir / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    cli = run("quickstart-cli", workdir, env)
    # compensated by default (README): the summary says tier W bounds the file, and that it holds
    assert "within the tier-W bound" in cli.stdout and "compensated layers (tier W only)" in cli.stdout
    _check_model(workdir / "out" / "model.onnx")
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert quickstart_claims() == quickstart_figures(report)  # the README's figures are this run's

    sdk = run("sdk", workdir, env)
    assert "succeeded" in sdk.stdout and (workdir / "shrunk" / "model.onnx").is_file()

    run("submit", workdir, env)
    _check_model(workdir / "shrunk" / "model.onnx")

    keys = subprocess.run(
        [".venv/bin/netshrink", "keys", "create", "--name", "readme"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    (key,) = re.findall(r"api key:\s+(\S+)", keys.stdout)
    with_key = {**env, "NETSHRINK_API_KEY": key}
    out = run("api-keys", workdir, with_key)
    assert re.search(r"HTTP/1.1 202", out.stdout) and "location: /v1/jobs/" in out.stdout.lower()
    _check_model(workdir / "digits-4bit.onnx")
