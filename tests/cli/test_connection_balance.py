"""``cli/connection_balance.py``: shared connection counts and the ``Connection: close`` that
evens keep-alive connections out over ``serve --workers N`` processes. The real-process test is
``test_serve_cmd.py::test_an_uneven_connection_split_evens_out``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from netshrink.cli.connection_balance import ConnectionCounts, ConnectionShedding


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def live_pid() -> Iterator[int]:
    """Another live process (this one's own pid would be taken for its own slot)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_process_claims_a_free_slot_and_reclaims_its_own() -> None:
    counts = ConnectionCounts(2)
    first = counts.claim()
    assert first == 0
    assert counts.claim() == 0  # the same process again: its own slot, not a second one
    counts.publish(0, 7)
    assert counts.fair_share() == 7
    counts.release(0)
    assert counts.fair_share() == 0


def test_a_dead_process_slot_is_reclaimed_and_a_live_one_is_not(live_pid: int) -> None:
    counts = ConnectionCounts(2)
    counts._slots[0], counts._slots[1] = live_pid, 5  # its slot is kept
    counts._slots[2], counts._slots[3] = _dead_pid(), 9  # a process that is gone
    assert counts.claim() == 1
    assert counts._slots[3] == 0  # the dead one's count went with it
    assert counts.fair_share() == 3  # ceil((5 + 0) / 2)


def test_a_claim_frees_every_slot_of_a_gone_process(live_pid: int) -> None:
    """A stale count would keep weighing on the share: 20 connections over two live processes and a
    dead one's 0 give a share of 7 that neither can reach, and both would shed for ever."""
    counts = ConnectionCounts(4)
    dead = _dead_pid()
    counts._slots[0:8] = [0, 0, dead, 0, live_pid, 20, dead, 3]
    assert counts.claim() == 0  # the first free slot; both of the dead one's slots freed too
    assert list(counts._slots[2:4]) == [0, 0] and list(counts._slots[6:8]) == [0, 0]
    assert counts.fair_share() == 10  # ceil((0 + 20) / 2)


def test_no_slot_when_every_one_is_held_by_a_live_process(live_pid: int) -> None:
    counts = ConnectionCounts(1)
    counts._slots[0] = live_pid
    assert counts.claim() is None


def test_fair_share_rounds_up_over_the_processes_that_hold_a_slot() -> None:
    counts = ConnectionCounts(4)  # 2 of the 4 slots held
    counts._slots[0:4] = [1, 14, 1, 7]
    assert counts.fair_share() == 11  # ceil(21 / 2); the two free slots do not count


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})
    else:
        await send({"type": "lifespan.startup.complete"})


def _serve(wrapper: ConnectionShedding, scope_type: str = "http") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    anyio.run(wrapper, {"type": scope_type}, receive, send)
    return sent


def _shedding(mine: int, other: int, clock: _Clock) -> tuple[ConnectionShedding, list[int]]:
    counts = ConnectionCounts(2)
    index = counts.claim()
    assert index == 0
    counts._slots[2], counts._slots[3] = 1, other  # another process holding `other` connections
    connections = list(range(mine))
    return ConnectionShedding(_app, connections, counts, index, cooldown_s=0.01, clock=clock), connections


def test_a_process_over_its_share_closes_one_connection_per_cooldown() -> None:
    clock = _Clock()
    wrapper, _ = _shedding(14, 6, clock)
    first = _serve(wrapper)
    assert first[0]["headers"] == [(b"x-a", b"1"), (b"connection", b"close")]
    assert first[1] == {"type": "http.response.body", "body": b"ok"}
    assert (b"connection", b"close") not in _serve(wrapper)[0]["headers"]  # within the cooldown
    clock.now += 0.011
    assert (b"connection", b"close") in _serve(wrapper)[0]["headers"]
    assert wrapper.shed == 2
    assert wrapper.counts._slots[1] == 14  # it published its own count


def test_a_process_at_or_under_its_share_keeps_its_connections() -> None:
    clock = _Clock()
    for mine, other in ((10, 10), (11, 10), (3, 9), (0, 0)):
        wrapper, _ = _shedding(mine, other, clock)
        for _ in range(3):
            clock.now += 1
            assert (b"connection", b"close") not in _serve(wrapper)[0]["headers"], (mine, other)
        assert wrapper.shed == 0


def test_the_share_follows_the_connections_as_they_close() -> None:
    clock = _Clock()
    wrapper, connections = _shedding(12, 8, clock)
    assert wrapper.should_shed()
    connections.pop()  # the client closed it and reconnected to the other process
    wrapper.counts._slots[3] = 9
    clock.now += 1
    assert wrapper.should_shed()  # 11 > ceil(20 / 2)
    connections.pop()
    wrapper.counts._slots[3] = 10
    clock.now += 1
    assert not wrapper.should_shed()  # 10 / 10


def test_lifespan_passes_through_untouched() -> None:
    clock = _Clock()
    wrapper, _ = _shedding(20, 0, clock)
    assert _serve(wrapper, "lifespan") == [{"type": "lifespan.startup.complete"}]
    assert wrapper.shed == 0
