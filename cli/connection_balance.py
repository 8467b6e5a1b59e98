"""Even out keep-alive connections over the API processes of ``serve --workers N``.

Each process listens on its own ``SO_REUSEPORT`` socket (``cli/serve_workers.py``), and the kernel
places a new connection by a hash of its addresses: a random split. A keep-alive client's
connections then stay where they landed. 20 of them split 14 / 6 or worse in one try of 9
(binomial), and ``bench.load`` saw 15 / 5 and 17 / 3: the process holding 14 of the 20 connections
has to do 70 % of the work with one core, since each process runs its Python on one core at a time
while the other core idles, and its clients wait (issue 13 §8, 5 s slices of 20 submitting clients:
p99 76.6 and 86.4 ms at 14 / 6, 95.2 ms at 17 / 3, 58.2-78.7 ms at 10 / 10 and 11 / 9).

So the processes share their counts of open connections (``ConnectionCounts``: one slot per
process in shared memory), and a process holding more than its fair share, the total over the
processes rounded up, answers its next response with ``Connection: close`` (``ConnectionShedding``).
The client opens a new connection, which the kernel hashes again, so the split moves towards even
until no process is over its share; with 20 connections over 2 processes that is 10 / 10. A process
sheds at most one connection per ``cooldown_s``, so the counts can catch up with the connection it
just closed. Closing a keep-alive connection after a response is ordinary HTTP/1.1 (RFC 9112
§9.6): clients open a new one for their next request. Envoy's "exact connection balancing" is the
same goal reached in its listener.
Ref: socket(7) ``SO_REUSEPORT``; RFC 9112 §9.6 (``Connection: close``);
Envoy: https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/listener/v3/listener.proto
(``connection_balance_config``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import time
from collections.abc import Callable, Sized

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOLDOWN_S = 0.01
_CLOSE = (b"connection", b"close")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to someone else
        return False
    return True


class ConnectionCounts:
    """Open connections per process of one ``serve --workers N`` group: ``processes`` slots of
    (pid, count) in shared memory, made in the supervisor before its processes are spawned (they
    inherit it). A slot's count is written only by the process that claimed it."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.processes = processes
        self._slots = ctx.RawArray(ctypes.c_int64, 2 * processes)  # [pid0, count0, pid1, count1, ...]
        self._lock = ctx.Lock()  # claims only; counts are single aligned word writes

    def claim(self) -> int | None:
        """The calling process's slot: its own, a free one, or one whose process is gone. Every
        slot of a gone process is freed on the way, so its last count stops weighing on the share
        (uvicorn reaps a dead process before it starts the one that replaces it, and that one
        claims). None when every slot is held by a live process."""
        pid = os.getpid()
        with self._lock:
            for index in range(self.processes):
                holder = self._slots[2 * index]
                if holder not in (0, pid) and not _alive(holder):
                    self._slots[2 * index], self._slots[2 * index + 1] = 0, 0
            for index in range(self.processes):
                if self._slots[2 * index] in (0, pid):
                    self._slots[2 * index], self._slots[2 * index + 1] = pid, 0
                    return index
        return None

    def release(self, index: int) -> None:
        with self._lock:
            if self._slots[2 * index] == os.getpid():
                self._slots[2 * index], self._slots[2 * index + 1] = 0, 0

    def publish(self, index: int, count: int) -> None:
        self._slots[2 * index + 1] = count

    def fair_share(self) -> int:
        """The open connections over the processes that hold a slot, rounded up (0 without any)."""
        total = held = 0
        for index in range(self.processes):
            if self._slots[2 * index]:
                held += 1
                total += self._slots[2 * index + 1]
        return -(-total // held) if held else 0


class ConnectionShedding:
    """ASGI wrapper: on a response start, publish this process's open connections (``connections``,
    uvicorn's set of them) and add ``Connection: close`` when they exceed the fair share, at most
    once per ``cooldown_s``. Lifespan and WebSocket scopes pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        connections: Sized,
        counts: ConnectionCounts,
        index: int,
        *,
        cooldown_s: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.connections, self.counts, self.index = app, connections, counts, index
        self.cooldown_s, self.clock = cooldown_s, clock
        self._next_shed = 0.0
        self.shed = 0  # connections closed so far, for tests and debugging

    def should_shed(self) -> bool:
        mine = len(self.connections)
        self.counts.publish(self.index, mine)
        if mine <= self.counts.fair_share():
            return False
        now = self.clock()
        if now < self._next_shed:
            return False
        self._next_shed = now + self.cooldown_s
        self.shed += 1
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing_if_over(message: Message) -> None:
            if message["type"] == "http.response.start" and self.should_shed():
                message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        await self.app(scope, receive, send_closing_if_over)


__all__ = ["COOLDOWN_S", "ConnectionCounts", "ConnectionShedding"]
