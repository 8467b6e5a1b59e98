"""A real ``netshrink serve`` (embedded mode) in a child process, for tests that need the whole
service over HTTP: free port, private data dir, no inherited ``NETSHRINK_*`` settings."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    """The pids of ``pid``'s live children (/proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def tcp_rows(port: int) -> list[tuple[int, str, int]]:
    """(remote port, TCP state (``0A`` listening, ``01`` established), socket inode) of every socket
    whose local port is ``port`` (/proc/net/tcp and tcp6)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                rows.append((int(fields[2].rsplit(":", 1)[1], 16), fields[3], int(fields[9])))
    return rows


def tcp_sockets(port: int) -> dict[int, str]:
    """Socket inode -> TCP state of every socket on ``port``."""
    return {inode: state for _, state, inode in tcp_rows(port)}


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def api_processes(pid: int) -> list[int]:
    """The API processes ``serve --workers N`` (pid ``pid``) spawned: its children that run
    multiprocessing's ``spawn_main``."""
    return [p for p in child_pids(pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def serving_pid(client: http.client.HTTPConnection, port: int, serving: list[int]) -> int:
    """The serving process that holds the server end of ``client``'s connection (/proc)."""
    assert client.sock is not None
    client_port = client.sock.getsockname()[1]
    for remote, _, inode in tcp_rows(port):
        if remote == client_port:
            return next(pid for pid in serving if inode in socket_inodes(pid))
    raise AssertionError(f"no server end for client port {client_port}")


def submit_over(conn: http.client.HTTPConnection, model: bytes, spec: dict[str, Any]) -> str:
    """POST /v1/jobs over this very connection (so over the process that holds it); the job id."""
    request = httpx.Request(
        "POST", "http://x/v1/jobs", files={"model": ("m.onnx", model)}, data={"spec": json.dumps(spec)}
    )
    conn.request("POST", "/v1/jobs", request.read(), {"Content-Type": request.headers["content-type"]})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 202, body
    return str(json.loads(body)["id"])


def connections_to_each(port: int, serving: list[int]) -> dict[int, http.client.HTTPConnection]:
    """One keep-alive connection held by each of the ``serving`` processes (new connections land on
    a process by a hash of their addresses; the others are closed). Use them at once: uvicorn
    closes an idle one after 5 s."""
    held: dict[int, http.client.HTTPConnection] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        conn.auto_open = 0  # never silently reconnect (perhaps to another process)
        conn.request("GET", "/healthz")  # answered: the connection is accepted, so it has an owner
        response = conn.getresponse()
        response.read()
        pid = serving_pid(conn, port, serving) if response.getheader("connection") != "close" else None
        if pid is None or pid in held:
            conn.close()
        else:
            held[pid] = conn
        if len(held) == len(serving):
            return held
    raise AssertionError(f"200 connections all landed on {sorted(held)} of {serving}")


@contextmanager
def embedded_serve(
    data_dir: Path,
    *,
    up_within_s: float = 90,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wrap: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base URL, process) once ``/healthz`` answers 200; SIGTERM and wait on the way out.
    ``args`` and ``env`` add flags and ``NETSHRINK_*`` settings (e.g. Redis mode); ``wrap`` is a
    command that ``exec``s the server (its arguments follow), e.g. ``unshare`` for a private mount.

    The caller may assert on ``proc.wait`` itself (after the block, ``proc.returncode`` is set)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSHRINK_")} | dict(env or {})
    env["PYTHONPATH"] = str(ROOT)
    argv = ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning", *args]
    code = f"import sys; from netshrink.cli.serve_cmd import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([*wrap, sys.executable, "-c", code], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + up_within_s
        while True:
            assert proc.poll() is None, "serve exited early"
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
