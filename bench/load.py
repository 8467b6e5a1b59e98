"""Service overhead under load, loopback only (issue 13 §8): status GETs/s with p50/p99 at 20
concurrent connections and on a single connection, and submit latency at 20 concurrent clients,
for the embedded mode (SQLite, in-process worker) and the Redis mode (API + a real ``netshrink
worker -c 1``).

    python -m bench.load [--mode embedded|redis|both] [--slice-s 2] [--rounds 3] [--clients 20]
                         [--submits 60] [--baseline-tree DIR] [--no-worker]

Peers measured in the same run, interleaved slice by slice so that the other load on the machine
falls on all of them alike: the **framework floor** (``bench/load_servers.py``: FastAPI + uvicorn
answering the same status body from memory, with no store, auth or rate limit) and, with
``--baseline-tree DIR``, the same service from another checkout (e.g. ``git archive <commit>``
unpacked there, then ``.ci/linked-tree true`` run in it), so a change is judged by its ratio.

No job runs while status GETs are measured: the polled job has finished and the worker is idle.
Submits are measured with no job running too: each client cancels its job right after the 202
(untimed, but it is load on the same API), so the worker only skips cancelled jobs; after each
submit block the bench waits until nothing is queued or running. The status load uses a
minimal keep-alive HTTP/1.1 client on asyncio streams (cheaper per request than httpx, so more of
the CPU is left to the server); submits use httpx multipart. The client runs on the same cores as
the server: its own CPU seconds and the machine's load average are printed with the figures.
Results: bench/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from bench.load_servers import ROOT, Service, cpu_s, start_floor, start_netshrink

SPEC = json.dumps({"prune": {"keep": 0.5}, "seed": 1})
Result = dict[str, Any]


def _model() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.factories import mlp_onnx

    return mlp_onnx()


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples_s)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "max_ms": round(ms[-1], 2), "n": len(ms)}


async def _get_loop(host: str, port: int, path: str, stop: float, out: list[float]) -> int:
    """One keep-alive connection issuing GET ``path`` until ``stop``; returns the non-200 count."""
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
    errors = 0
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            out.append(time.perf_counter() - t0)
            errors += not head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    return errors


def status_slice(service: Service, path: str, clients: int, seconds: float) -> Result:
    """``clients`` connections polling ``path`` for ``seconds``: latencies, wall and CPU seconds."""
    host, port = service.base.removeprefix("http://").split(":")
    latencies: list[float] = []

    async def run() -> int:
        stop = time.perf_counter() + seconds
        loops = (_get_loop(host, int(port), path, stop, latencies) for _ in range(clients))
        return sum(await asyncio.gather(*loops))

    server0, client0, t0 = cpu_s(service.api.pid), time.process_time(), time.perf_counter()
    errors = asyncio.run(run())
    return {
        "latencies": latencies,
        "wall_s": time.perf_counter() - t0,
        "errors": errors,
        "server_cpu_s": cpu_s(service.api.pid) - server0,
        "client_cpu_s": time.process_time() - client0,
    }


def _merge(slices: list[Result]) -> Result:
    wall = sum(s["wall_s"] for s in slices)
    latencies = [x for s in slices for x in s["latencies"]]
    return {
        "rps": round(len(latencies) / wall, 1),
        "errors": sum(s["errors"] for s in slices),
        **_percentiles(latencies),
        "wall_s": round(wall, 2),
        "server_cpu_per_s": round(sum(s["server_cpu_s"] for s in slices) / wall, 2),
        "client_cpu_per_s": round(sum(s["client_cpu_s"] for s in slices) / wall, 2),
        "server_cpu_ms_per_req": round(
            1000 * sum(s["server_cpu_s"] for s in slices) / max(1, len(latencies)), 3
        ),
    }


async def _submit_block(base: str, model: bytes, clients: int, total: int, cancel: bool) -> Result:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    left = [total]

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            while left[0] > 0:
                left[0] -= 1
                files = {"model": ("m.onnx", model, "application/octet-stream")}
                t0 = time.perf_counter()
                r = await c.post("/v1/jobs", files=files, data={"spec": SPEC})
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if cancel and r.status_code == 202:  # untimed: keep the worker from running it
                    await c.post(f"/v1/jobs/{r.json()['id']}/cancel")

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return {"latencies": latencies, "statuses": statuses}


def wait_drained(base: str, timeout_s: float = 300) -> float:
    """Seconds until no job of the service is queued or running (the worker is idle again)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        busy = [httpx.get(f"{base}/v1/jobs", params={"status": s, "limit": 1}, timeout=30).json()["items"]
                for s in ("queued", "running")]  # fmt: skip
        if not any(busy):
            return round(time.monotonic() - t0, 1)
        time.sleep(0.5)
    raise RuntimeError(f"{base}: jobs still active after {timeout_s} s")


def run_mode(mode: str, args: argparse.Namespace, model: bytes, tmp: Path) -> Result:
    services: list[Service] = []
    try:
        services.append(start_netshrink("netshrink", mode, tmp / "new", worker=not args.no_worker))
        if args.baseline_tree:
            base_dir, tree = tmp / "base", args.baseline_tree
            services.append(start_netshrink("baseline", mode, base_dir, tree=tree, worker=not args.no_worker))
        files = {"model": ("m.onnx", model, "application/octet-stream")}
        paths: dict[str, str] = {}
        for s in services:  # one job per service, finished (or queued without a worker); warms imports
            job = httpx.post(s.base + "/v1/jobs", files=files, data={"spec": SPEC}, timeout=120).json()
            paths[s.name] = f"/v1/jobs/{job['id']}"
            if not args.no_worker:
                wait_drained(s.base)
        body = httpx.get(services[0].base + paths["netshrink"]).text
        services.append(start_floor(body))
        paths["floor"] = paths["netshrink"]
        out: Result = {"loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
        for clients, key in ((args.clients, f"status_{args.clients}"), (1, "status_1")):
            slices: dict[str, list[Result]] = {s.name: [] for s in services}
            for r in range(args.rounds):
                order = services[r % len(services) :] + services[: r % len(services)]
                for s in order:
                    slices[s.name].append(status_slice(s, paths[s.name], clients, args.slice_s))
            out[key] = {name: _merge(v) for name, v in slices.items()}
        submit: dict[str, Result] = {}
        per_block = max(1, args.submits // args.rounds)
        for s in services[:-1]:  # the floor has no submit
            submit[s.name] = {"latencies": [], "statuses": {}, "wall_s": 0.0, "drain_s": []}
            submit[s.name]["cpu"] = [0.0, 0.0]  # server, client seconds
        for r in range(args.rounds if args.submits else 0):
            for s in services[:-1] if r % 2 == 0 else services[-2::-1]:
                server0, client0, t0 = cpu_s(s.api.pid), time.process_time(), time.perf_counter()
                block = asyncio.run(_submit_block(s.base, model, args.clients, per_block, not args.no_worker))
                acc = submit[s.name]
                acc["wall_s"] += time.perf_counter() - t0
                acc["cpu"][0] += cpu_s(s.api.pid) - server0  # the API process (+ embedded worker)
                acc["cpu"][1] += time.process_time() - client0
                acc["latencies"] += block["latencies"]
                for code, n in block["statuses"].items():
                    acc["statuses"][code] = acc["statuses"].get(code, 0) + n
                if not args.no_worker:
                    acc["drain_s"].append(wait_drained(s.base))
        out[f"submit_{args.clients}"] = {} if not args.submits else {
            name: {"rps": round(len(a["latencies"]) / a["wall_s"], 1), **_percentiles(a["latencies"]),
                   "statuses": a["statuses"], "drain_s": a["drain_s"],
                   "server_cpu_ms_per_submit": round(1000 * a["cpu"][0] / max(1, len(a["latencies"])), 1),
                   "client_cpu_ms_per_submit": round(1000 * a["cpu"][1] / max(1, len(a["latencies"])), 1)}
            for name, a in submit.items()
        }  # fmt: skip
        out["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
        return out
    finally:
        for s in services:
            s.stop()


def _table(results: Result, modes: list[str], clients: int) -> str:
    lines = ["| mode | target | conns | GETs/s | p50 / p99 ms | server CPU ms/req | client CPU s/s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode in modes:
        for key in (f"status_{clients}", "status_1"):
            for name, r in results[mode][key].items():
                conns = key.removeprefix("status_")
                lines.append(
                    f"| {mode} | {name} | {conns} | {r['rps']:,.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} "
                    f"| {r['server_cpu_ms_per_req']:.2f} | {r['client_cpu_per_s']:.2f} |"
                )
    lines += ["", "| mode | target | submits/s | p50 / p99 ms | statuses | server / client CPU ms each |"]
    lines += ["|---|---|---|---|---|---|"]
    for mode in modes:
        for name, r in results[mode].get(f"submit_{clients}", {}).items():
            lines.append(
                f"| {mode} | {name} | {r['rps']:.1f} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} "
                f"| {r['statuses']} | {r['server_cpu_ms_per_submit']} / {r['client_cpu_ms_per_submit']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--mode", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--slice-s", type=float, default=2.0, help="seconds per interleaved slice")
    parser.add_argument("--rounds", type=int, default=3, help="slices per target (and submit blocks)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--submits", type=int, default=60, help="submits per target, in --rounds blocks")
    parser.add_argument("--baseline-tree", type=Path, default=None, help="also measure this checkout")
    parser.add_argument("--no-worker", action="store_true", help="no worker: submitted jobs stay queued")
    args = parser.parse_args()
    model = _model()
    modes = ["embedded", "redis"] if args.mode == "both" else [args.mode]
    results: Result = {"cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}
    with TemporaryDirectory(prefix="netshrink-load-") as tmp:
        for mode in modes:
            results[mode] = run_mode(mode, args, model, Path(tmp) / mode)
            print(mode, json.dumps(results[mode]), flush=True)
    print(_table(results, modes, args.clients))
    out = ROOT / "bench" / "results" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
