"""``netshrink serve --workers N``: several API processes in Redis mode, each on its own
``SO_REUSEPORT`` socket so that connections spread over them; refused in embedded mode."""

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
from tests.serve_process import embedded_serve, free_port


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _tcp_rows(port: int) -> list[tuple[int, str, int]]:
    """(remote port, TCP state (``0A`` listening, ``01`` established), socket inode) of every socket
    whose local port is ``port`` (/proc/net/tcp and tcp6)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                rows.append((int(fields[2].rsplit(":", 1)[1], 16), fields[3], int(fields[9])))
    return rows


def _tcp_sockets(port: int) -> dict[int, str]:
    """Socket inode -> TCP state of every socket on ``port``."""
    return {inode: state for _, state, inode in _tcp_rows(port)}


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_workers_are_refused_in_embedded_mode(tmp_path: Path) -> None:
    assert main(["--workers", "2", "--data-dir", str(tmp_path), "--port", str(free_port())]) == 2


@pytest.mark.slow
@pytest.mark.redis
def test_workers_serve_one_port_from_several_processes(tmp_path: Path, redis_prefix: str) -> None:
    args = ["--redis-url", REDIS_URL, "--workers", "2"]
    env = {"NETSHRINK_REDIS_KEY_PREFIX": redis_prefix}
    with embedded_serve(tmp_path / "data", args=args, env=env, up_within_s=120) as (base, proc):
        serving = [p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
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
        serving = [p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        clients = [httpx.Client(base_url=base, timeout=30) for _ in range(20)]
        try:
            answers = [c.get("/healthz") for c in clients]
            assert all(a.status_code == 200 for a in answers)
            # kept alive, but for those a process over its share closed (connection_balance.py)
            alive = sum(a.headers.get("connection") != "close" for a in answers)
            states = _tcp_sockets(port)
            listening = {pid: {i for i in _socket_inodes(pid) if states.get(i) == "0A"} for pid in serving}
            held = {pid: sum(states.get(i) == "01" for i in _socket_inodes(pid)) for pid in serving}
            parent_listens = {i for i in _socket_inodes(proc.pid) if states.get(i) == "0A"}
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
def test_workers_on_a_taken_port_exit_1_without_starting_processes(redis_prefix: str) -> None:
    with socket.socket() as taken:  # a plain socket, outside any SO_REUSEPORT group
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = ["--redis-url", REDIS_URL, "--workers", "2", "--port", str(port)]
        assert main(args) == 1


def test_the_port_probe_refuses_a_port_held_by_another_reuse_port_group() -> None:
    """A second ``serve --workers`` on a port another one serves must fail, not join its group."""
    with reuse_port_socket("127.0.0.1", 0, 1) as first:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once it is closed


def _server_pid(client: http.client.HTTPConnection, port: int, serving: list[int]) -> int:
    """The serving process that holds the server end of ``client``'s connection (/proc)."""
    assert client.sock is not None
    client_port = client.sock.getsockname()[1]
    for remote, _, inode in _tcp_rows(port):
        if remote == client_port:
            return next(pid for pid in serving if inode in _socket_inodes(pid))
    raise AssertionError(f"no server end for client port {client_port}")


def _get(client: http.client.HTTPConnection) -> None:
    client.request("GET", "/healthz")  # reconnects by itself after a Connection: close
    response = client.getresponse()
    assert response.status == 200
    response.read()


def _serving(pid: int) -> list[int]:
    return [p for p in _children(pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


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
                pid = _server_pid(client, port, serving)
                target = target or pid
                if pid == target:
                    kept.append(client)
                    continue
            client.close()
        assert {_server_pid(c, port, serving) for c in kept} == {target}  # n / 0
        for client in kept:
            client.auto_open = 1
        for _ in range(rounds):
            for client in kept:
                _get(client)
            split = Counter(_server_pid(c, port, serving) for c in kept if c.sock is not None)
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
        split = _split_after_piling_up(int(base.rsplit(":", 1)[1]), _serving(proc.pid))
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
        first = _serving(proc.pid)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = _serving(proc.pid)
            if len(now) == 2 and first[0] not in now and _listening(port, now):
                break
            time.sleep(0.2)
        serving = _serving(proc.pid)
        assert len(serving) == 2 and first[0] not in serving, serving
        split = _split_after_piling_up(port, serving)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert sorted(split.values()) == [4, 4], split
    assert set(split) == set(serving)


def _listening(port: int, pids: list[int]) -> bool:
    """Every one of ``pids`` has its listening socket on ``port`` (it is serving)."""
    states = _tcp_sockets(port)
    return all(any(states.get(i) == "0A" for i in _socket_inodes(pid)) for pid in pids)
