"""Service overhead under load, loopback only (issue 13 §8): status GETs/s with p50/p99 at 20
concurrent connections and on a single connection, and submits (a small ONNX model → 202) at 20
concurrent clients, for the embedded mode (SQLite, in-process worker) and the Redis mode (API + a
real ``netshrink worker -c 1``). The targets: ≥ 1,000 status GETs/s with p99 < 50 ms, and submit
p99 < 100 ms at 20 clients, with no job running.

    python -m bench.load [--mode embedded|redis|both] [--slice-s 2] [--rounds 3] [--clients 20]
                         [--api-workers 2] [--baseline-tree DIR] [--baseline-api-workers N] [--dev]
                         [--data-root DIR] [--warmup-s 2]

**The load tool is wrk** (a C program, ``apt-get install wrk``; bench only, CI never runs this),
driven by ``bench/load.lua``: keep-alive connections, the ``Authorization`` header of the
service's API key (keys mode, as deployed; ``--dev`` runs without a key), and for submits one
multipart body encoded once up front. It costs a few µs of CPU per request, so nearly all of the
two cores go to the server; its CPU seconds are measured (``RUSAGE_CHILDREN``) and printed beside
the server's (the API process and its threads, from /proc).

Peers measured in the same run, interleaved slice by slice so that the other load on the machine
falls on all of them alike: the **framework floor** (``bench/load_servers.py``: FastAPI under the
same uvicorn answering the same status body from memory, and a submit by parsing the multipart
form and storing nothing) and, with ``--baseline-tree DIR``, the same service from another
checkout (``git archive <commit>`` unpacked there, then ``.ci/linked-tree true`` run in it).

In both modes the API runs as ``serve --workers N`` (``--api-workers``, default 2: one per core of
the 2-core development machine; in embedded mode each process also runs its worker thread); the
baseline tree the same, unless ``--baseline-api-workers`` says otherwise. The one-process embedded
server (plain ``netshrink serve``) is ``--api-workers 1``, or, in the same run as two,
``--baseline-tree`` of the same commit with ``--baseline-api-workers 1``.

No job runs while anything is measured. Status GETs poll one finished job (its worker idle). Submits
go to a second instance of the mode started without a worker (``--no-embedded-worker``; in Redis
mode no ``netshrink worker``): each 202 stores the upload and the job and sends the broker message,
and nothing consumes it. Before the submit slices each target takes ``--warmup-s`` (default 2 s) of
unmeasured submits at the measured concurrency, so every API process and every admission thread
has served some: after a warm-up of 1 s on 2 connections (until 2026-12-05), which could leave one
of the ``serve --workers 2`` processes unwarmed, the first embedded submit slice had the worst p99
in 3 of 4 runs (76.3, 87.6 and 120.9 ms against 56.5-77.1 ms in the later slices; 01:42-01:50 UTC).
wrk reports percentiles per slice: the tables give the requests/s over all
slices, the median of the slices' p50 and the **worst** slice's p99. Server CPU per request is
split into its system (kernel) part, and before each mode ``inode_probe_us`` times new
directory + file pairs in the data root: the filesystem's state (``bench/inodes.py``). Each slice
also records how wrk's connections were split between the server's processes (``ss``, mid-slice).
Results: bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from bench.inodes import inode_probe_us
from bench.load_servers import ROOT, Service, cpu_times, start_floor, start_netshrink

SPEC = json.dumps({"prune": {"keep": 0.5}, "seed": 1})
# The polled job: the same model and spec, evaluated on 16 Gaussian inputs so it finishes in seconds.
POLLED_SPEC = json.dumps(
    {"prune": {"keep": 0.5}, "seed": 1, "evaluation": {"inputs": "gaussian", "samples": 16}}
)
LUA = Path(__file__).with_name("load.lua")
TARGET_GETS_PER_S, TARGET_GET_P99_MS, TARGET_SUBMIT_P99_MS = 1000, 50.0, 100.0
Result = dict[str, Any]


def _model() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.factories import mlp_onnx

    return mlp_onnx()


def multipart(model: bytes) -> tuple[bytes, str]:
    """The submit body (``spec`` + ``model`` parts) encoded once: (bytes, Content-Type)."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{SPEC}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"; filename="m.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + model + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wrk(
    url: str, conns: int, seconds: float, key: str | None, body: Path | None = None, ctype: str = ""
) -> Result:
    """One wrk run: its JSON line (requests, duration, p50/p99/max µs, errors) and its CPU seconds."""
    env = os.environ | {
        "NETSHRINK_BENCH_KEY": key or "",
        "NETSHRINK_BENCH_BODY": str(body or ""),
        "NETSHRINK_BENCH_CTYPE": ctype,
    }
    argv = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    result: Result = json.loads(line.removeprefix("WRK_JSON "))
    result["client_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def connection_split(port: str) -> list[int]:
    """Established connections to ``port`` per server process, most first (``ss -tnp``; [] without
    ss). With ``serve --workers N`` each process listens on its own ``SO_REUSEPORT`` socket, the
    kernel places wrk's keep-alive connections by a hash, and a process over its share closes some
    until the split is even (``cli/connection_balance.py``); a baseline tree from before either
    shared one socket, where whichever process woke first accepted a burst of them."""
    if shutil.which("ss") is None:
        return []
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    return sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)


def _split_after(delay_s: float, port: str) -> list[int]:
    time.sleep(delay_s)
    return connection_split(port)


def measure_slice(service: Service, path: str, conns: int, seconds: float, **kw: Any) -> Result:
    user0, sys0 = cpu_times(service.api.pid)
    port = service.base.rsplit(":", 1)[1]
    with ThreadPoolExecutor(1) as pool:  # the split is read mid-slice, while wrk holds its connections
        split = pool.submit(_split_after, seconds / 2, port)
        result = wrk(service.base + path, conns, seconds, service.key, **kw)
        result["connection_split"] = split.result()
    user1, sys1 = cpu_times(service.api.pid)
    result["server_cpu_s"] = (user1 - user0) + (sys1 - sys0)
    result["server_sys_s"] = sys1 - sys0
    return result


def merge(slices: list[Result]) -> Result:
    """Slices of one target: requests/s over all, median p50, worst p99, CPU per request."""
    n = sum(s["requests"] for s in slices)
    wall = sum(s["duration_us"] for s in slices) / 1e6
    return {
        "rps": round(n / wall, 1),
        "p50_ms": round(statistics.median(s["p50_us"] for s in slices) / 1000, 2),
        "p99_ms": round(max(s["p99_us"] for s in slices) / 1000, 2),
        "slice_p99_ms": [round(s["p99_us"] / 1000, 2) for s in slices],
        "slice_connection_split": [s.get("connection_split", []) for s in slices],
        "max_ms": round(max(s["max_us"] for s in slices) / 1000, 2),
        "requests": n,
        "errors": sum(s["socket_errors"] + s["non_2xx"] for s in slices),
        "wall_s": round(wall, 2),
        "server_cpu_ms_per_req": round(1000 * sum(s["server_cpu_s"] for s in slices) / max(1, n), 3),
        "server_sys_ms_per_req": round(1000 * sum(s.get("server_sys_s", 0.0) for s in slices) / max(1, n), 3),
        "client_cpu_ms_per_req": round(1000 * sum(s["client_cpu_s"] for s in slices) / max(1, n), 3),
        "server_cpu_per_s": round(sum(s["server_cpu_s"] for s in slices) / wall, 2),
        "client_cpu_per_s": round(sum(s["client_cpu_s"] for s in slices) / wall, 2),
    }


def interleave(targets: list[tuple[Service, str]], conns: int, args: argparse.Namespace, **kw: Any) -> Result:
    """``args.rounds`` slices per target, rotating the order each round; merged per target."""
    slices: dict[str, list[Result]] = {s.name: [] for s, _ in targets}
    for r in range(args.rounds):
        for service, path in targets[r % len(targets) :] + targets[: r % len(targets)]:
            slices[service.name].append(measure_slice(service, path, conns, args.slice_s, **kw))
    return {name: merge(v) for name, v in slices.items()}


def wait_finished(service: Service, path: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(service.base + path, headers=service.headers, timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{service.name}: {path} not finished after {timeout_s} s")


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def _api_workers(name: str, args: argparse.Namespace) -> int:
    """``serve --workers`` for this service: ``--api-workers``, or for the baseline tree
    ``--baseline-api-workers`` (default: the same; 1 for a tree from before ``serve --workers``, and
    in embedded mode for one from before embedded ``serve --workers``, 2026-12-04)."""
    if name == "baseline" and args.baseline_api_workers is not None:
        return int(args.baseline_api_workers)
    return int(args.api_workers)


def run_mode(mode: str, args: argparse.Namespace, model: bytes, tmp: Path) -> Result:
    trees = [("netshrink", None)] + ([("baseline", args.baseline_tree)] if args.baseline_tree else [])
    keys = not args.dev
    tmp.mkdir(parents=True, exist_ok=True)
    out: Result = {"loadavg_before": _loadavg(), "inode_probe_us": inode_probe_us(tmp)}
    body_path = tmp / "submit.body"
    body, ctype = multipart(model)
    body_path.write_bytes(body)
    # Every process starts at once (start-up imports dominate the wall time); the submit instances
    # idle (no worker, no requests) while the status GETs are measured.
    plans = [("status", name, tree, True) for name, tree in trees] + [
        ("submit", name, tree, False) for name, tree in trees
    ]
    with ThreadPoolExecutor(len(plans) + 1) as pool:
        floor_future = pool.submit(start_floor, "{}")  # the submit floor; the status floor needs a body
        futures = [
            pool.submit(
                start_netshrink, name, mode, tmp / f"{name}-{phase}", tree=tree, worker=worker, keys=keys,
                api_workers=_api_workers(name, args),
            )
            for phase, name, tree, worker in plans
        ]  # fmt: skip
        started = [f.exception() or f.result() for f in [*futures, floor_future]]
    services = [s for s in started if isinstance(s, Service)]
    try:
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed
        status_services, submit_services = services[: len(trees)], services[len(trees) :]
        files = {"model": ("m.onnx", model, "application/octet-stream")}
        targets: list[tuple[Service, str]] = []
        for s in status_services:  # one finished job each, polled; its worker idles afterwards
            r = httpx.post(
                s.base + "/v1/jobs", files=files, data={"spec": POLLED_SPEC}, headers=s.headers, timeout=120
            )
            targets.append((s, f"/v1/jobs/{r.json()['id']}"))
        for s, path in targets:
            wait_finished(s, path)
        status_body = httpx.get(services[0].base + targets[0][1], headers=services[0].headers).text
        floor = start_floor(status_body)
        services.append(floor)
        targets.append((floor, targets[0][1]))
        out[f"status_{args.clients}"] = interleave(targets, args.clients, args)
        out["status_1"] = interleave(targets, 1, args)
        targets = [(s, "/v1/jobs") for s in submit_services]  # the last one is the submit floor
        for s, path in targets:  # warm-up at the measured concurrency; not measured (see the docstring)
            wrk(s.base + path, args.clients, args.warmup_s, s.key, body_path, ctype)
        out[f"submit_{args.clients}"] = interleave(targets, args.clients, args, body=body_path, ctype=ctype)
    finally:
        for s in services:
            s.stop()
    out["loadavg_after"] = _loadavg()
    return out


def _server_cpu(r: Result) -> str:
    """The server's CPU per request, with its system (kernel) part in parentheses."""
    return f"{r['server_cpu_ms_per_req']:.2f} ({r.get('server_sys_ms_per_req', 0.0):.2f})"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(results: Result, modes: list[str], clients: int) -> str:
    lines = [
        "| mode | target | conns | GETs/s | p50 / p99 ms | server CPU ms/GET (sys) | wrk CPU ms/GET | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for key in (f"status_{clients}", "status_1"):
            for name, r in results[mode][key].items():
                conns = key.removeprefix("status_")
                goal = "-"
                if name == "netshrink" and conns == str(clients):
                    ok = r["rps"] >= TARGET_GETS_PER_S and r["p99_ms"] < TARGET_GET_P99_MS and not r["errors"]
                    goal = f"{_met(ok)} (≥ {TARGET_GETS_PER_S:,}/s, p99 < {TARGET_GET_P99_MS:.0f} ms)"
                lines.append(
                    f"| {mode} | {name} | {conns} | {r['rps']:,.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} "
                    f"| {_server_cpu(r)} | {r['client_cpu_ms_per_req']:.3f} | {goal} |"
                )
    lines += [
        "",
        f"| mode | target | submits/s ({clients} clients) | p50 / p99 ms | non-202 "
        "| server CPU ms/submit (sys) | wrk CPU ms/submit | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for name, r in results[mode][f"submit_{clients}"].items():
            goal = "-"
            if name == "netshrink":
                ok = r["p99_ms"] < TARGET_SUBMIT_P99_MS and not r["errors"]
                goal = f"{_met(ok)} (p99 < {TARGET_SUBMIT_P99_MS:.0f} ms)"
            lines.append(
                f"| {mode} | {name} | {r['rps']:,.1f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} "
                f"| {r['errors']} | {_server_cpu(r)} | {r['client_cpu_ms_per_req']:.3f} "
                f"| {goal} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--mode", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--slice-s", type=float, default=2.0, help="seconds per interleaved wrk slice")
    parser.add_argument("--rounds", type=int, default=3, help="slices per target")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--warmup-s", type=float, default=2.0, help="unmeasured submits per target first, at --clients"
    )
    parser.add_argument("--baseline-tree", type=Path, default=None, help="also measure this checkout")
    parser.add_argument("--api-workers", type=int, default=2, help="serve --workers N (either mode)")
    parser.add_argument(
        "--baseline-api-workers", type=int, default=None, help="the baseline's --workers (default: the same)"
    )
    parser.add_argument("--dev", action="store_true", help="dev mode (no API key) instead of keys mode")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="where the services keep their data (default: $TMPDIR)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.load needs wrk on PATH (Debian/Ubuntu: apt-get install wrk)")
    model = _model()
    modes = ["embedded", "redis"] if args.mode == "both" else [args.mode]
    results: Result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    t0 = time.monotonic()
    with TemporaryDirectory(prefix="netshrink-load-", dir=args.data_root) as tmp:
        for mode in modes:
            results[mode] = run_mode(mode, args, model, Path(tmp) / mode)
            print(mode, json.dumps(results[mode]), flush=True)
    results["wall_s"] = round(time.monotonic() - t0, 1)
    print(f"\n{results['date']}, {results['cpus']} CPUs, {results['wall_s']} s; load average", end=" ")
    print(
        ", ".join(f"{m} {results[m]['loadavg_before'][0]} -> {results[m]['loadavg_after'][0]}" for m in modes)
    )
    print("inode probe (µs per new directory + 8 KiB file in the data root, before each mode):", end=" ")
    print(", ".join(f"{m} {results[m]['inode_probe_us']}" for m in modes))
    print(table(results, modes, args.clients))
    out = ROOT / "bench" / "results" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
