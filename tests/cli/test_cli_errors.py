"""Every subcommand that reads files, fed missing, unreadable, empty, malformed and wrong-kind files:
exit 2 with exactly one line on stderr and no traceback; local files are checked before any network
call (``submit`` against a closed port still says 2 for a missing file, and 5 only once the files are
fine). Ref: docs/api.md "CLI exit codes"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netshrink.cli.main import main
from tests import factories

CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens, connection refused at once


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli-inputs")
    good = factories.write_bytes(factories.mlp_onnx((8, 16, 4)), d / "good.onnx")
    np.savez(d / "data.npz", inputs=np.zeros((8, 8), np.float32), labels=np.zeros(8, np.int64))
    (d / "bad.json").write_text('{"layers": [')
    (d / "empty.onnx").write_bytes(b"")
    (d / "garbage.onnx").write_bytes(b"\x00\x01 this is not a model" * 10)
    (d / "adir").mkdir()
    (d / "notutf8.json").write_bytes(b"\xff\xfe\x00{")
    return {
        "good": good,
        "npz": d / "data.npz",
        "bad_json": d / "bad.json",
        "empty": d / "empty.onnx",
        "garbage": d / "garbage.onnx",
        "dir": d / "adir",
        "missing": d / "missing.onnx",
        "not_utf8": d / "notutf8.json",
        "out": d / "out",
    }


def _cases(f: dict[str, Path]) -> list[tuple[str, list[str], int, str]]:
    good, out = str(f["good"]), ["--out", str(f["out"])]
    srv = ["--server", CLOSED, "--max-retries", "0"]
    cases: list[tuple[str, list[str], int, str]] = []
    for cmd, extra in (
        ("compress", ["--bits", "8", *out]),
        ("analyze", out),
        ("submit", ["--bits", "8", *srv]),
    ):
        cases += [
            (f"{cmd}-missing-model", [cmd, str(f["missing"]), *extra], 2, "no such file"),
            (f"{cmd}-dir-model", [cmd, str(f["dir"]), *extra], 2, "is a directory"),
            (f"{cmd}-empty-model", [cmd, str(f["empty"]), *extra], 2, "is empty"),
            (
                f"{cmd}-bad-arch",
                [cmd, good, "--architecture", str(f["bad_json"]), *extra],
                2,
                "not valid JSON",
            ),
            (
                f"{cmd}-utf16-arch",
                [cmd, good, "--architecture", str(f["not_utf8"]), *extra],
                2,
                "not a JSON text",
            ),
        ]
    for cmd, extra in (("compress", ["--bits", "8", *out]), ("analyze", out)):
        cases += [
            (f"{cmd}-npz-as-model", [cmd, str(f["npz"]), *extra], 2, "NumPy .npz archive"),
            (f"{cmd}-garbage-model", [cmd, str(f["garbage"]), *extra], 2, "expected"),
        ]
    cases += [
        (
            "compress-missing-cal",
            ["compress", good, "--calibration", str(f["missing"]), "--bits", "8", *out],
            2,
            "no such file",
        ),
        (
            "compress-model-as-cal",
            ["compress", good, "--calibration", good, "--bits", "8", *out],
            2,
            "calibration",
        ),
        ("compress-bad-spec", ["compress", good, "--spec", str(f["bad_json"]), *out], 2, "not valid JSON"),
        ("submit-missing-cal", ["submit", good, "--calibration", str(f["missing"]), *srv], 2, "no such file"),
        ("submit-dir-cal", ["submit", good, "--calibration", str(f["dir"]), *srv], 2, "is a directory"),
        ("submit-bad-spec", ["submit", good, "--spec", str(f["bad_json"]), *srv], 2, "not valid JSON"),
        ("submit-unreachable", ["submit", good, "--bits", "8", *srv], 5, "unreachable"),
        ("finetune-missing-train", ["finetune", good, "--train", str(f["missing"]), *out], 2, "no such file"),
        (
            "finetune-bad-inline-spec",
            ["finetune", good, "--train", str(f["npz"]), "--spec", "{oops", *out],
            2,
            "not valid JSON",
        ),
        (
            "finetune-npz-as-model",
            ["finetune", str(f["npz"]), "--train", str(f["npz"]), *out],
            2,
            "NumPy .npz archive",
        ),
    ]
    return cases


def test_every_file_reading_subcommand_is_covered(files: dict[str, Path]) -> None:
    commands = {argv[0] for _, argv, _, _ in _cases(files)}
    assert commands == {"compress", "analyze", "submit", "finetune"}


def test_bad_inputs_exit_with_one_line_and_no_traceback(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for name, argv, code, needle in _cases(files):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        ok = rc == code and len(lines) == 1 and "Traceback" not in err and needle.lower() in err.lower()
        if not ok:
            failures.append(f"{name}: rc={rc} (want {code}), stderr={err!r}")
    assert failures == [], "\n".join(failures)


def test_a_real_process_prints_no_traceback(files: dict[str, Path]) -> None:
    """The same contract through the installed entry point, where an uncaught exception would print one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")}
    for argv, code in (
        (["submit", str(files["good"]), "--calibration", str(files["missing"]), "--server", CLOSED], 2),
        (["compress", str(files["npz"]), "--bits", "4", "--out", str(files["out"])], 2),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "netshrink.cli.main", *argv], capture_output=True, text=True, env=env
        )
        assert out.returncode == code, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_an_unexpected_error_is_one_line_exit_4(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is said to be one (exit 4, the exception's type), without a traceback unless asked."""
    import netshrink.cli.local_run as local_run

    def boom(*_: object, **__: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(local_run, "execute", boom)
    monkeypatch.setattr("netshrink.cli.compress_cmd.execute", boom)
    rc = main(["compress", str(files["good"]), "--bits", "8", "--out", str(files["out"])])
    err = capsys.readouterr().err
    assert rc == 4 and "internal error (ZeroDivisionError" in err and "Traceback" not in err
    monkeypatch.setenv("NETSHRINK_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["compress", str(files["good"]), "--bits", "8", "--out", str(files["out"])])


def test_compress_without_out_says_where_it_wrote(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compress", str(files["good"]), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"to {tmp_path / 'netshrink-out'} (no --out given)" in err
    assert "warning: nothing to compress" in err  # an empty spec says so
    report = json.loads((tmp_path / "netshrink-out" / "report.json").read_text())
    assert report["summary"]["warnings"] and "nothing to compress" in report["summary"]["warnings"][0]


def test_an_unreachable_job_store_is_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    """`netshrink keys create` with Redis down said "internal error" and exited 4, the code of a
    failed job (2026-12-05, found by probing); 5 is the documented "unreachable"."""
    import redis

    from netshrink.cli.main import _unexpected
    from netshrink.workers.jobs import StoreUnavailableError

    for exc in (StoreUnavailableError("Redis job store unreachable"), redis.ConnectionError("refused")):
        assert _unexpected("keys", exc) == 5
        assert "the job store is unreachable" in capsys.readouterr().err
    assert _unexpected("keys", RuntimeError("a bug")) == 4
