"""``netshrink submit`` end to end over real HTTP, and the shared spec flags (cli/spec_flags.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from netshrink.cli import submit_cmd
from netshrink.cli.main import main
from netshrink.cli.spec_flags import SpecFlagError, add_spec_arguments, spec_from_args
from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.spec import CompressSpec
from tests import factories
from tests.client.contract_server import MODEL_BYTES, ContractState, free_port_url
from tests.threaded_server import embedded_service


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="netshrink submit")
    submit_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def spec_of(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    return spec_from_args(parser.parse_args(list(argv)))


# ---- spec flags ------------------------------------------------------------------------------
def test_flags_build_a_spec_the_core_accepts() -> None:
    spec = spec_of(
        "--prune-keep", "fc1=0.5,fc2=0.25", "--granularity", "neuron", "--fraction", "0.9",
        "--score", "output", "--bits", "4", "--scale", "per_layer", "--method", "randomized_greedy",
        "--exclude", "fc3,fc4", "--exclude", "fc5", "--draws", "3", "--seed", "11",
        "--target-error", "0.05", "--holdout-fraction", "0.25", "--eval-inputs", "uniform",
        "--target-opset", "17", "--compare-baselines", "--device", "cpu", "--kind", "compress",
    )  # fmt: skip
    assert spec == {
        "kind": "compress",
        "prune": {"keep": {"fc1": 0.5, "fc2": 0.25}, "granularity": "neuron", "fraction": 0.9,
                  "score": "output", "method": "randomized_greedy"},
        "quantize": {"bits": 4, "scale": "per_layer", "method": "randomized_greedy"},
        "exclude": ["fc3", "fc4", "fc5"],
        "target": {"metric": "relative_l2", "max": 0.05},
        "evaluation": {"inputs": "uniform", "holdout_fraction": 0.25},
        "draws": 3, "seed": 11, "target_opset": 17, "compare_baselines": True, "device": "cpu",
    }  # fmt: skip
    core = CompressSpec.from_dict(spec)
    assert core.prune is not None and core.prune.keep_for("fc2") == 0.25 and core.prune.keep_for("x") == 1.0
    assert core.quantize is not None and core.quantize.bits == 4 and core.target is not None


def test_unset_flags_leave_the_server_defaults() -> None:
    assert spec_of() == {}
    assert spec_of("--prune-keep", "0.3", "--fraction", "auto") == {
        "prune": {"keep": 0.3, "fraction": "auto"}
    }
    assert spec_of("--target-top1", "0.98") == {"target": {"metric": "top1_agreement", "min": 0.98}}
    CompressSpec.from_dict(spec_of("--bits", "3", "--method", "rtn"))


def test_draws_auto_and_compensate_flags() -> None:
    spec = spec_of("--bits", "4", "--draws", "auto", "--compensate")
    assert spec == {"quantize": {"bits": 4}, "draws": "auto", "compensate": True}
    core = CompressSpec.from_dict(spec)
    assert core.draws == "auto" and core.compensate is True
    assert spec_of("--bits", "4", "--no-compensate")["compensate"] is False
    assert CompressSpec.from_dict({}).draws == "auto"  # the default
    with pytest.raises(SystemExit):
        spec_of("--draws", "many")
    with pytest.raises(InvalidSpecError):
        CompressSpec.from_dict({"draws": "Auto"})
    with pytest.raises(InvalidSpecError):
        CompressSpec.from_dict({"compensate": "yes"})


def test_base_spec_file_is_overridden_by_flags(tmp_path: Path) -> None:
    base = tmp_path / "spec.json"
    base.write_text(json.dumps({"quantize": {"bits": 8, "scale": "per_row"}, "seed": 1, "exclude": ["a"]}))
    spec = spec_of("--spec", str(base), "--scale", "per_layer", "--exclude", "b", "--seed", "2")
    assert spec == {"quantize": {"bits": 8, "scale": "per_layer"}, "seed": 2, "exclude": ["a", "b"]}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--granularity", "neuron"], "--granularity need"),
        (["--scale", "per_row"], "--scale need"),
        (["--method", "rtn"], "--method needs"),
        (["--bits", "4", "--method", "obd"], "set --quant-method"),
        (["--prune-keep", "0.5", "--method", "rtn"], "set --prune-method"),
        (["--quant-method", "rtn"], "--quant-method needs --bits"),
    ],
)
def test_inconsistent_flags_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(SpecFlagError, match=message):
        spec_of(*argv)


def test_per_stage_methods_mix() -> None:
    spec = spec_of("--prune-keep", "0.5", "--bits", "4", "--prune-method", "obd", "--quant-method", "rtn")
    assert spec["prune"] == {"keep": 0.5, "method": "obd"} and spec["quantize"] == {
        "bits": 4,
        "method": "rtn",
    }


def test_malformed_values_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        spec_of("--prune-keep", "fc1=half")
    assert info.value.code == 2


# ---- the command -----------------------------------------------------------------------------
def test_submit_wait_out_downloads_and_summarizes(
    server: str, state: ContractState, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = parse(str(model_file), "--server", server, "--prune-keep", "0.5", "--bits", "4", "--seed", "3",
                 "--wait", "--out", str(out))  # fmt: skip
    assert submit_cmd.run(args) == 0
    assert (out / "model.onnx").read_bytes() == MODEL_BYTES
    assert json.loads((out / "report.json").read_text())["summary"]["bytes"]["ratio"] == 7.25
    stdout, stderr = capsys.readouterr()
    for needle in (
        "87,000",
        "12,000",
        "7.25x",
        "0.031",
        "0.15",
        "within the (1-delta) bound B/delta",
        "no target",
        "model.onnx",
    ):
        assert needle in stdout, needle
    assert "submitted job0001" in stderr and "layer 3/3" in stderr
    (job,) = state.jobs.values()
    assert job["spec"]["prune"]["keep"] == 0.5 and job["spec"]["quantize"]["bits"] == 4


def test_budget_not_met_exits_3_after_downloading(
    server: str, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(str(model_file), "--server", server, "--bits", "4", "--target-error", "0.01", "--json",
                 "--out", str(tmp_path))  # fmt: skip
    assert submit_cmd.run(args) == 3
    body = json.loads(capsys.readouterr().out)
    assert body["summary"]["budget_met"] is False and body["status"] == "succeeded"
    assert Path(body["artifacts"]["model.onnx"]).is_file()


def test_failed_job_exits_4(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boom = tmp_path / "boom.onnx"
    boom.write_bytes(b"x")
    assert submit_cmd.run(parse(str(boom), "--server", server, "--wait")) == 4
    assert "worker died" in capsys.readouterr().err


def test_bad_input_exits_2(
    server: str, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit_cmd.run(parse(str(model_file), "--server", server, "--prune-keep", "1.5")) == 2
    assert "/spec/prune/keep" in capsys.readouterr().err  # the server's 422 problem, field by field
    assert submit_cmd.run(parse(str(model_file), "--server", server, "--granularity", "neuron")) == 2
    assert submit_cmd.run(parse(str(tmp_path / "absent.onnx"), "--server", server)) == 2


def test_no_wait_prints_the_job_id(
    server: str,
    state: ContractState,
    model_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state.api_key = "sk-ci"
    monkeypatch.setenv("NETSHRINK_SERVER", server)
    monkeypatch.setenv("NETSHRINK_API_KEY", "sk-ci")
    assert submit_cmd.run(parse(str(model_file), "--idempotency-key", "ci-run-1")) == 0
    assert submit_cmd.run(parse(str(model_file), "--idempotency-key", "ci-run-1")) == 0
    assert capsys.readouterr().out.split() == ["job0001", "job0001"]  # a re-run step reuses the job


def test_unreachable_server_exits_5(model_file: Path) -> None:
    args = parse(str(model_file), "--server", free_port_url(), "--max-retries", "0", "--wait")
    assert submit_cmd.run(args) == 5


# ---- kind finetune, against the real service (the contract server runs no training) ----------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app with its embedded worker on a real port: finetune jobs run end to end."""
    with embedded_service(tmp_path_factory.mktemp("submit-service")) as url:
        yield url


@pytest.fixture(scope="module")
def finetune_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("submit-ft")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 8)).astype(np.float32)
    np.savez(d / "train.npz", inputs=X, labels=np.argmax(X[:, :4], axis=1).astype(np.int64))
    return factories.write_bytes(factories.mlp_onnx(), d / "mlp.onnx"), d / "train.npz"


@pytest.mark.parametrize(("target", "code", "as_json"), [(1e-9, 3, False), (1e-9, 3, True), (10.0, 0, True)])
def test_finetune_follow_up_budget_decides_exit_3(
    service: str,
    finetune_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: float,
    code: int,
    as_json: bool,
) -> None:
    """``--kind finetune`` with a follow-up compress that misses its budget exits 3 (README "The CI
    step"), after downloading every artifact; it exited 0 with ``budget_met: false`` in report.json."""
    model, train = finetune_files
    spec = tmp_path / "ft.json"
    follow = {"quantize": {"bits": 2}, "target": {"metric": "relative_l2", "max": target}}
    spec.write_text(json.dumps({"finetune": {"epochs": 1, "batch_size": 32}, **follow}))
    out = tmp_path / "out"
    argv = ["submit", str(model), "--server", service, "--kind", "finetune", "--train", str(train)]
    argv += ["--spec", str(spec), "--seed", "0", "--out", str(out), *(["--json"] if as_json else [])]
    assert main(argv) == code, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "finetune" and report["compress"]["summary"]["budget_met"] is (code == 0)
    assert {"model.onnx", "compressed_model.onnx", "report.json"} <= {p.name for p in out.iterdir()}
    captured = capsys.readouterr()
    assert ("error budget of the follow-up compress was not met" in captured.err) is (code == 3)
    if as_json:
        body = json.loads(captured.out)
        assert body["status"] == "succeeded" and body["summary"]["compress"]["budget_met"] is (code == 0)
