"""``netshrink serve --workers N``: several API processes, each on its own ``SO_REUSEPORT`` socket so
that connections spread over them; in embedded mode each also runs its own worker thread."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from netshrink.cli.serve_cmd import main
from netshrink.cli.serve_workers import check_port_free, reuse_port_socket
from tests.conftest import REDIS_URL
from tests.factories import mlp_onnx
from tests.serve_process import (
    api_processes,
    connections_to_each,
    embedded_serve,
    serving_pid,
    socket_inodes,
    submit_over,
    tcp_sockets,
)


@pytest.mark.slow
def test_embedded_workers_each_run_the_jobs_they_admit(tmp_path: Path) -> None:
    """Embedded ``serve --workers 2``: each process has its own worker thread and memory:// broker and
    runs what it admitted, over the one SQLite store; both hold the data directory's lock shared."""
    with embedded_serve(tmp_path / "data", args=["--workers", "2"], up_within_s=120) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        serving = api_processes(proc.pid)
        assert len(serving) == 2, serving
        spec = {"prune": {"keep": 0.5}, "seed": 1, "evaluation": {"inputs": "gaussian", "samples": 64}}
        with httpx.Client(base_url=base, timeout=30) as client:  # both processes up (their workers)
            deadline = time.monotonic() + 120
            while client.get("/v1/workers").json()["alive"] < 2:
                assert time.monotonic() < deadline, "the second embedded worker did not start"
                time.sleep(0.2)
        model = mlp_onnx()  # before connecting: an export takes seconds, and idle connections close after 5
        ids: list[str] = []
        for _ in range(2):  # two jobs admitted by each process, one per connection
            held = connections_to_each(port, serving)
            ids += [submit_over(conn, model, spec) for conn in held.values()]
            for conn in held.values():
                conn.close()
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                status = {i: client.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
                if all(s in ("succeeded", "failed", "cancelled") for s in status.values()):
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
            workers = client.get("/v1/workers").json()
        lock = os.stat(tmp_path / "data" / "serve.lock").st_ino
        shared = [
            row for row in Path("/proc/locks").read_text().splitlines() if row.endswith(f":{lock} 0 EOF")
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert set(status.values()) == {"succeeded"}, status
    assert workers["alive"] == 2, workers
    assert len(shared) == 2 and all("FLOCK" in r and "READ" in r for r in shared), shared


@pytest.mark.slow
@pytest.mark.redis
def test_workers_serve_one_port_from_several_processes(tmp_path: Path, redis_prefix: str) -> None:
    args = ["--redis-url", REDIS_URL, "--workers", "2"]
    env = {"NETSHRINK_REDIS_KEY_PREFIX": redis_prefix}
    with embedded_serve(tmp_path / "data", args=args, env=env, up_within_s=120) as (base, proc):
        serving = api_processes(proc.pid)
        assert len(serving) == 2, serving
        spec = json.dumps({"prune": {"keep": 0.5}, "seed": 1})
        files = {"model": ("m.onnx", mlp_onnx(), "application/octet-stream")}
        with httpx.Client(base_url=base, timeout=30) as client:
            created = client.post("/v1/jobs", files=files, data={"spec": spec})
            assert created.status_code == 202, created.text
            for _ in range(20):  # new connections land on either process; each reads the shared store
                with httpx.Client(base_url=base, timeout=30) as fresh:
                    assert fresh.get(created.headers["location"]).json()["status"] == "queued"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not any(Path(f"/proc/{p}").exists() for p in serving)


@pytest.mark.slow
@pytest.mark.redis
def test_each_worker_listens_on_its_own_socket_and_connections_spread(
    tmp_path: Path, redis_prefix: str
) -> None:
    """uvicorn's shared socket let one process accept a whole burst of keep-alive connections (20 / 0
    in bench.load). Each process now listens on its own SO_REUSEPORT socket (the parent on none), and
    20 new connections land on both: all 20 on one would happen with probability 2 x 2^-20. (A process
    over its share closes some after their answer; ``test_an_uneven_connection_split_evens_out``.)"""
    args = ["--redis-url", REDIS_URL, "--workers", "2"]
    env = {"NETSHRINK_REDIS_KEY_PREFIX": redis_prefix}
    with embedded_serve(tmp_path / "data", args=args, env=env, up_within_s=120) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        serving = api_processes(proc.pid)
        clients = [httpx.Client(base_url=base, timeout=30) for _ in range(20)]
        try:
            answers = [c.get("/healthz") for c in clients]
            assert all(a.status_code == 200 for a in answers)
            # kept alive, but for those a process over its share closed (connection_balance.py)
            alive = sum(a.headers.get("connection") != "close" for a in answers)
            states = tcp_sockets(port)
            listening = {pid: {i for i in socket_inodes(pid) if states.get(i) == "0A"} for pid in serving}
            held = {pid: sum(states.get(i) == "01" for i in socket_inodes(pid)) for pid in serving}
            parent_listens = {i for i in socket_inodes(proc.pid) if states.get(i) == "0A"}
        finally:
            for c in clients:
                c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not parent_listens
    assert [len(v) for v in listening.values()] == [1, 1]
    assert len(set().union(*listening.values())) == 2  # two sockets, not one shared
    assert sum(held.values()) == alive and min(held.values()) >= 1, held


@pytest.mark.redis
@pytest.mark.parametrize("workers", ["2", "1"])
def test_a_taken_port_exits_1_without_starting_the_app(redis_prefix: str, workers: str) -> None:
    """One process too (2026-12-05, found by probing: it loaded the app, then exited 3)."""
    with socket.socket() as taken:  # a plain socket, outside any SO_REUSEPORT group
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = ["--redis-url", REDIS_URL, "--workers", workers, "--port", str(port)]
        assert main(args) == 1


def test_the_port_probe_refuses_a_port_held_by_another_reuse_port_group() -> None:
    """A second ``serve --workers`` on a port another one serves must fail, not join its group."""
    with reuse_port_socket("127.0.0.1", 0, 1) as first:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once it is closed


def _get(client: http.client.HTTPConnection) -> None:
    client.request("GET", "/healthz")  # reconnects by itself after a Connection: close
    response = client.getresponse()
    assert response.status == 200
    response.read()


def _split_after_piling_up(port: int, serving: list[int], n: int = 8, rounds: int = 300) -> Counter[int]:
    """Put ``n`` keep-alive connections on one process (keeping only those that land on its
    socket), then send requests over them round by round until the split is even or ``rounds``
    have gone by; the split of their connections over ``serving`` at the end."""
    kept: list[http.client.HTTPConnection] = []
    try:
        target = None
        while len(kept) < n:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            client.connect()
            client.auto_open = 0  # no silent reconnection while the split is being built
            client.request("GET", "/healthz")
            response = client.getresponse()
            response.read()
            if response.getheader("connection", "").lower() != "close" and client.sock is not None:
                pid = serving_pid(client, port, serving)
                target = target or pid
                if pid == target:
                    kept.append(client)
                    continue
            client.close()
        assert {serving_pid(c, port, serving) for c in kept} == {target}  # n / 0
        for client in kept:
            client.auto_open = 1
        for _ in range(rounds):
            for client in kept:
                _get(client)
            split = Counter(serving_pid(c, port, serving) for c in kept if c.sock is not None)
            if sorted(split.values()) == [n // 2, n // 2]:
                break
        return split
    finally:
        for client in kept:
            client.close()


@pytest.mark.slow
@pytest.mark.redis
def test_an_uneven_connection_split_evens_out(tmp_path: Path, redis_prefix: str) -> None:
    """The kernel's SO_REUSEPORT hash splits keep-alive connections at random, and they stay where
    they landed (bench.load saw 17 / 3 of 20). Here 8 connections are all put on one process on
    purpose; that process then closes them one at a time (``Connection: close``) while it holds more
    than its share, and the clients' reconnections even the split out to 4 / 4. Without the shared
    counts the split stays 8 / 0."""
    args = ["--redis-url", REDIS_URL, "--workers", "2"]
    env = {"NETSHRINK_REDIS_KEY_PREFIX": redis_prefix}
    with embedded_serve(tmp_path / "data", args=args, env=env, up_within_s=120) as (base, proc):
        split = _split_after_piling_up(int(base.rsplit(":", 1)[1]), api_processes(proc.pid))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert sorted(split.values()) == [4, 4], split


@pytest.mark.slow
@pytest.mark.redis
def test_a_process_that_replaces_a_killed_one_shares_the_connections(
    tmp_path: Path, redis_prefix: str
) -> None:
    """SIGKILL one API process: uvicorn's supervisor starts another, which claims a slot for its
    count (freeing the dead one's), and connections even out over it and the survivor again."""
    args = ["--redis-url", REDIS_URL, "--workers", "2"]
    env = {"NETSHRINK_REDIS_KEY_PREFIX": redis_prefix}
    with embedded_serve(tmp_path / "data", args=args, env=env, up_within_s=120) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        first = api_processes(proc.pid)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = api_processes(proc.pid)
            if len(now) == 2 and first[0] not in now and _listening(port, now):
                break
            time.sleep(0.2)
        serving = api_processes(proc.pid)
        assert len(serving) == 2 and first[0] not in serving, serving
        # Listening is not serving: the replacement accepts once its app is imported. Until then the
        # connections piled up on the survivor sit idle, and uvicorn closes them after 5 s.
        for conn in connections_to_each(port, serving).values():
            conn.close()
        split = _split_after_piling_up(port, serving)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert sorted(split.values()) == [4, 4], split
    assert set(split) == set(serving)


def _listening(port: int, pids: list[int]) -> bool:
    """Every one of ``pids`` has its listening socket on ``port`` (it is serving)."""
    states = tcp_sockets(port)
    return all(any(states.get(i) == "0A" for i in socket_inodes(pid)) for pid in pids)


@pytest.mark.slow
def test_api_processes_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL the supervisor alone: its API processes (embedded: with their worker threads) stop too
    instead of serving on as orphans (``die_with_parent``); they stop as on SIGTERM, so their queued
    jobs are handed back."""
    with embedded_serve(tmp_path / "data", args=["--workers", "2"], up_within_s=120) as (base, proc):
        serving = api_processes(proc.pid)
        assert len(serving) == 2, serving
        proc.kill()
        proc.wait(30)
        deadline = time.monotonic() + 60
        while any(Path(f"/proc/{p}").exists() and b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
                  for p in serving):  # fmt: skip
            assert time.monotonic() < deadline, "orphaned API processes still run"
            time.sleep(0.2)
