"""End-to-end smoke test of the Docker image: redis + api + worker, checked over HTTP.

Run by ``.ci/docker-smoke`` (``make docker-smoke``), which starts a private dockerd, builds the
images and points ``DOCKER_HOST`` at it; this script needs that daemon and the repo's venv (httpx,
numpy, onnx, onnxruntime, PyYAML).

The stack is docker-compose.yml's, run with three ``docker run`` (Debian bookworm ships no
``docker compose`` plugin; its ``docker-compose`` 1.29 is not used): the api and worker containers
get the compose file's own ``command`` and ``environment`` (read from the file, so a change there is
tested here), plus the CI differences that a compose override would carry, listed in
``ci_overrides``: host networking on free ports (no bridge network in CI) and a Redis image built
from Debian's redis-server (no registry). Everything else, the job time limits and the crash-recovery
settings included, keeps the compose file's and the settings' defaults.

Checks: the containers run as a non-root user; the api container runs the compose file's
``serve --workers N`` as N API processes; /healthz and /readyz answer; an API key is created
with ``netshrink keys create`` inside the container; a small ONNX model is compressed through the
HTTP API and its artifact, downloaded, runs in onnxruntime on the host; a job whose worker
container is restarted mid-job (SIGTERM, then SIGKILL after 1 s) still ends, succeeded: its lease
runs out and the reaper of the restarted worker queues it again (README "Crash recovery").
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
DOCKER = os.environ.get("DOCKER", "docker")
T0 = time.monotonic()


def log(message: str) -> None:
    print(f"::: docker_smoke [{time.monotonic() - T0:5.1f}s] {message}", flush=True)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not after {timeout_s:.0f} s (last: {last!r})")


# ---- the compose file, with the CI override ------------------------------------------------------
def resolve(value: str) -> str:
    """Compose's ``${VAR:-default}`` interpolation, from this process's environment."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), str(value))


def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of a docker-compose.yml service, interpolated."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]
    command = [resolve(c) for c in service["command"]]
    env = {k: resolve(v) for k, v in service["environment"].items()}
    return command, env


def ci_overrides(redis_port: int, api_port: int) -> dict[str, str]:
    """What differs from docker-compose.yml in CI (the role of a compose override file)."""
    return {
        "NETSHRINK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",  # host network, not "redis:6379"
        "NETSHRINK_PORT": str(api_port),  # the API's listen port on the host network
    }


class Stack:
    """The three containers and the data volume of one run, all labelled ``netshrink-ci``."""

    def __init__(self, image: str, redis_image: str) -> None:
        self.image, self.redis_image = image, redis_image
        self.run = f"ns-ci-{uuid.uuid4().hex[:8]}"
        self.volume = f"{self.run}-data"
        self.redis_port, self.api_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"

    def env(self, service: str) -> tuple[list[str], dict[str, str]]:
        command, env = compose_service(service)
        return command, {**env, **ci_overrides(self.redis_port, self.api_port)}

    def _run_args(self, env: dict[str, str]) -> list[str]:
        args = ["--network", "host", "--label", f"netshrink-ci={self.run}", "-v", f"{self.volume}:/data"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        return args

    def start_redis(self) -> None:
        docker(
            "run", "-d", "--name", f"{self.run}-redis", "--network", "host",
            "--label", f"netshrink-ci={self.run}", self.redis_image,
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--appendonly", "yes",
        )  # fmt: skip
        ping = ["exec", f"{self.run}-redis", "redis-cli", "-p", str(self.redis_port), "ping"]
        wait_for("redis-cli ping", lambda: docker(*ping, check=False) == "PONG", 30)

    def create_key(self) -> str:
        """``netshrink keys create`` in a one-off container (compose: ``run --rm api keys create``)."""
        _, env = self.env("api")
        out = docker("run", "--rm", *self._run_args(env), self.image, "keys", "create", "--name", "ci")
        match = re.search(r"^api key:\s+(\S+)$", out, re.MULTILINE)
        assert match, f"no key in `keys create` output: {out!r}"
        return match.group(1)

    def start(self, service: str) -> str:
        command, env = self.env(service)
        name = f"{self.run}-{service}"
        docker("run", "-d", "--name", name, *self._run_args(env), self.image, *command)
        return name

    def logs(self) -> None:
        names = docker("ps", "-a", "--filter", f"label=netshrink-ci={self.run}", "--format", "{{.Names}}")
        for name in names.split():
            out = subprocess.run([DOCKER, "logs", "--tail", "40", name], capture_output=True, text=True)
            print(f"----- docker logs --tail 40 {name}\n{out.stdout}{out.stderr}", file=sys.stderr)

    def remove(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label=netshrink-ci={self.run}", check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("volume", "rm", "-f", self.volume, check=False)


# ---- a small model --------------------------------------------------------------------------------
def mlp_onnx(widths: tuple[int, ...], seed: int) -> bytes:
    """Gemm -> Relu -> ... -> Gemm, as torch's exporter writes ``nn.Linear`` (transB=1), opset 21."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)  # (out, in)
        b = (0.1 * rng.standard_normal(n_out)).astype(np.float32)  # (out,)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(widths) - 2
        y = "output" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y], f"fc{i}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"], f"relu{i}"))
            y = f"r{i}"
        x = y
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "mlp",
        [vi("input", TensorProto.FLOAT, ["batch", widths[0]])],
        [vi("output", TensorProto.FLOAT, ["batch", widths[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data


def run_onnx(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"input": x})
    return np.asarray(y)


# ---- the checks -----------------------------------------------------------------------------------
def check_non_root(stack: Stack, container: str) -> None:
    uid = docker("exec", container, "id", "-u")
    user = docker("inspect", "--format", "{{.Config.User}}", container)
    assert uid != "0", f"{container} runs as root"
    log(f"{container}: uid {uid} (image USER {user})")


# The API processes of `serve --workers N`: uvicorn spawns them (multiprocessing's spawn start method).
# The needle is split so that this program's own command line does not hold it.
COUNT_SPAWNED = """import os
def spawned(pid):
    try:
        return (b'spawn' + b'_main') in open(f'/proc/{pid}/cmdline', 'rb').read()
    except OSError:  # gone meanwhile
        return False
print(sum(spawned(p) for p in os.listdir('/proc') if p.isdigit()))
"""


def check_api_processes(stack: Stack, container: str) -> None:
    """The compose file's ``serve --workers N`` runs N API processes under the supervisor."""
    command, _ = stack.env("api")
    expected = int(command[command.index("--workers") + 1])
    running = wait_for(
        f"{expected} API processes",
        lambda: (n := int(docker("exec", container, "python", "-c", COUNT_SPAWNED))) == expected and n,
        60,
    )
    log(f"{container}: {running} API processes (serve --workers {expected})")


def submit(client: httpx.Client, model: bytes, spec: dict[str, Any]) -> dict[str, Any]:
    files = {"model": ("model.onnx", model, "application/octet-stream")}
    r = client.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)})
    assert r.status_code == 202, f"submit: {r.status_code} {r.text}"
    job: dict[str, Any] = r.json()
    return job


def wait_terminal(client: httpx.Client, job_id: str, timeout_s: float) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

    result: dict[str, Any] = wait_for(f"job {job_id} terminal", probe, timeout_s)
    return result


def check_compress_and_download(client: httpx.Client) -> None:
    model = mlp_onnx((16, 32, 32, 4), seed=1)
    job = submit(client, model, {"prune": {"keep": 0.5}, "seed": 7})
    done = wait_terminal(client, job["id"], 180)
    assert done["status"] == "succeeded", f"job ended {done['status']}: {done.get('error')}"
    info = next(a for a in done["artifacts"] if a["name"] == "model.onnx")
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
    assert r.status_code == 200, f"download: {r.status_code} {r.text}"
    digest = hashlib.sha256(r.content).digest()
    assert digest.hex() == info["sha256"], "artifact bytes differ from the sha256 the job lists"
    assert r.headers["Content-Digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    onnx.checker.check_model(onnx.load_model(io.BytesIO(r.content)), full_check=True)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)  # (batch, in)
    y_ref, y = run_onnx(model, x), run_onnx(r.content, x)  # (batch, 4) each
    assert y.shape == y_ref.shape and np.isfinite(y).all()
    rel = float(np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref))
    assert 0 < rel < 1, f"relative L2 error of the compressed model {rel:.3g} (expect in (0, 1))"
    report = client.get(f"/v1/jobs/{job['id']}/report")
    assert report.status_code == 200, report.text
    log(
        f"job {job['id']}: succeeded; model.onnx ({len(r.content)} B, sha256 checked) runs in onnxruntime "
        f"{ort.__version__} on the host, relative L2 error {rel:.3f} on 64 Gaussian inputs"
    )


def check_worker_restart(stack: Stack, client: httpx.Client, worker: str) -> None:
    """Restart the worker container while it runs a job: the job must still end, succeeded."""
    # Long enough to be cut by the restart, whose warm shutdown lets a job run on for 1 s: the former
    # 64-128-128-10 job with 32 draws on 2,048 samples took 1.06 s on a faster machine (2026-12-03
    # 17:49) and finished inside that second. This one is 16x the work (width 256, 64 draws, 4,096
    # samples): 6.2 s in-process on one thread there.
    model = mlp_onnx((64, 256, 256, 10), seed=2)
    spec = {
        "prune": {"keep": 0.5},
        "draws": 64,
        "seed": 3,
        "evaluation": {"inputs": "gaussian", "samples": 4096},
    }
    job = submit(client, model, spec)

    def running() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}").json()
        assert body["status"] in {"queued", "running"}, f"job ended before the restart: {body['status']}"
        return body if body["status"] == "running" else None

    wait_for(f"job {job['id']} running", running, 60, interval_s=0.1)
    started = time.monotonic()
    docker("restart", "--time", "1", worker)  # SIGTERM (warm shutdown), SIGKILL after 1 s, start
    took = time.monotonic() - started
    log(f"job {job['id']} was running: `docker restart --time 1 {worker}` took {took:.1f} s")
    # Recovery with the default settings: the killed job's lease (2 x lease_heartbeat_s = 20 s) runs
    # out and the restarted worker's reaper (every 15 s) queues it again: within 35 s of the kill,
    # then the job's work again. 300 s leaves slack for a slower, loaded machine. (Without the
    # reaper, the broker would hand the job out again only after its one-hour visibility timeout.)
    done = wait_terminal(client, job["id"], 300)
    assert done["status"] == "succeeded", f"job ended {done['status']}: {done.get('error')}"
    assert done["attempts"] >= 2, f"attempts={done['attempts']}: the restart did not interrupt the job"
    log(
        f"job {job['id']}: succeeded after the restart, attempts={done['attempts']}, "
        f"{time.monotonic() - started:.0f} s from the restart to the end"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--redis-image", required=True)
    args = parser.parse_args()
    stack = Stack(args.image, args.redis_image)
    try:
        stack.start_redis()
        log(f"redis on 127.0.0.1:{stack.redis_port} ({args.redis_image})")
        key = stack.create_key()
        log("API key created with `netshrink keys create` in a container")
        api, worker = stack.start("api"), stack.start("worker")
        commands = {s: " ".join(stack.env(s)[0]) for s in ("api", "worker")}
        log(f"api ({commands['api']}) on {stack.base_url}; worker ({commands['worker']})")
        with httpx.Client(base_url=stack.base_url, timeout=30) as anon:
            wait_for("GET /healthz 200", lambda: anon.get("/healthz").status_code == 200, 120)
            ready = anon.get("/readyz")
            assert ready.status_code == 200, f"/readyz: {ready.status_code} {ready.text}"
            log(f"/healthz 200, /readyz 200 {ready.json()['checks']}")
            assert anon.get("/v1/jobs").status_code == 401, "the API answers without a key"
        for container in (api, worker):
            check_non_root(stack, container)
        check_api_processes(stack, api)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:

            def alive() -> list[dict[str, Any]]:
                return [w for w in client.get("/v1/workers").json()["workers"] if w["alive"]]

            workers = wait_for("a live worker (heartbeat)", alive, 60)
            log(f"workers: {[w['name'] for w in workers]}")
            check_compress_and_download(client)
            check_worker_restart(stack, client, worker)
        log("all checks passed")
        return 0
    except BaseException:
        stack.logs()
        raise
    finally:
        stack.remove()


if __name__ == "__main__":
    sys.exit(main())
