"""``serve --workers N``: uvicorn's supervisor, with one listening socket per API process.

uvicorn's own ``workers=N`` binds one socket in the parent and shares it. Whichever process wakes
first accepts a burst of new connections, and keep-alive clients then stay with it: ``bench.load``
recorded 20 / 0 splits of its 20 connections between two processes, whose slice then ran at one
process's speed (issue 13 §8). Here each process binds its own socket with ``SO_REUSEPORT``, and
the kernel spreads new connections over the sockets of the group by a hash of their addresses
(socket(7)). The parent binds none, so no connection can land on a socket nobody accepts from.
That hash is random, so the processes also share their connection counts, and one holding more
than its share closes a connection after a response until the split is even
(``connection_balance.py``).

The supervisor is uvicorn's ``Multiprocess`` (health checks, restarts, signals, graceful stop); only
the process class differs, and a child that cannot bind exits with uvicorn's ``STARTUP_FAILURE``,
which stops the parent instead of restarting the child forever.
Ref: socket(7) ``SO_REUSEPORT``; uvicorn.supervisors.multiprocess (uvicorn 0.54, pinned).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import socket
import sys
import threading

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import multiprocess

from netshrink.cli.connection_balance import ConnectionCounts, ConnectionShedding
from netshrink.cli.threads import limit_threads

log = logging.getLogger("uvicorn.error")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _tcp_socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on (host, port) in the port's ``SO_REUSEPORT`` group."""
    sock = _tcp_socket(host)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def check_port_free(host: str, port: int) -> None:
    """OSError when anything listens on (host, port), another server's ``SO_REUSEPORT`` group
    included: the probe binds without joining a group, so a second ``serve --workers`` on the
    same port fails here instead of silently sharing the first one's connections."""
    probe = _tcp_socket(host)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)
    finally:
        probe.close()


class ReusePortProcess(multiprocess.Process):
    """One API process of the supervisor; in the child, it serves its own ``SO_REUSEPORT`` socket
    and, given the group's ``counts``, keeps its share of the connections even
    (``connection_balance.py``)."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        counts: ConnectionCounts | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(config, sockets)
        self.counts = counts  # pickled with this object into the spawned child
        self.threads = threads  # embedded mode: the job thread budget (cli/threads.py), per process

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover - child
        """uvicorn's ``Process.target`` (answer health checks, then ``Server.run``) on this process's
        own socket, with two changes: the health-check answers start first, and the process ends with
        its supervisor.

        uvicorn's supervisor pings every process each 0.5 s and kills one that does not answer
        within ``timeout_worker_healthcheck``; its answering thread started only once this method
        handed over, after the app was imported (and, embedded, torch). Four embedded
        ``serve --workers 2`` starting at once on the 2-core machine (bench.load) took longer than
        that, so each process was killed during its start-up and replaced, for minutes, none ever
        serving."""
        die_with_parent()
        threading.Thread(target=self.always_pong, daemon=True).start()
        try:
            own = reuse_port_socket(self.config.host, self.config.port, self.config.backlog)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.config.host, self.config.port, exc)
            sys.exit(STARTUP_FAILURE)
        if self.threads is not None:
            limit_threads(self.threads)
        counts = self.counts
        index = counts.claim() if counts is not None else None
        if counts is not None and index is not None:
            self.config.load()  # what Server.serve would do first; then wrap the loaded app
            self.config.loaded_app = ConnectionShedding(
                self.config.loaded_app, self.server.server_state.connections, counts, index
            )
        elif counts is not None:
            log.warning("no connection-count slot left for this process: it serves without balancing")
        try:
            self.server.run([own])
        finally:
            if counts is not None and index is not None:
                counts.release(index)


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """SIGTERM this process when its parent (the supervisor) dies, even by SIGKILL (Linux
    ``prctl(PR_SET_PDEATHSIG)``): an orphaned API process would otherwise go on serving, and in
    embedded mode go on running jobs, after its service is gone. It then stops as on any SIGTERM
    (an embedded one hands its queued jobs back: ``workers/reaper.hand_back_queued``)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(config: Config, *, threads: int | None = None) -> None:
    """Serve ``config.workers`` processes, each on its own socket, until a signal stops them;
    ``threads``: each process's torch/BLAS thread budget (embedded mode, where they run jobs)."""
    check_port_free(config.host, config.port)  # fail here, once, if the port is taken
    log.info("Uvicorn running on http://%s:%d with %d processes, one SO_REUSEPORT socket each",
             config.host, config.port, config.workers)  # fmt: skip
    # Slots for twice the processes: SIGTTIN adds processes at run time.
    counts = ConnectionCounts(2 * config.workers)
    shared = multiprocess.Process
    # Multiprocess builds its processes by this name, as Process(config, sockets)
    multiprocess.Process = functools.partial(ReusePortProcess, counts=counts, threads=threads)  # type: ignore[misc,assignment]
    try:
        multiprocess.Multiprocess(config, sockets=[]).run()
    finally:
        multiprocess.Process = shared  # type: ignore[misc]


__all__ = ["ReusePortProcess", "check_port_free", "reuse_port_socket", "run_workers"]
