"""Per-key request rate limiting: a fixed window counted in the job store's backend.

- Redis: ``INCR`` + ``EXPIRE NX`` on ``<prefix>ratelimit:<owner>:<window>`` in one pipeline, so
  every API replica shares the count and keys clean themselves up.
- Embedded (no Redis): a dict in this process, which is the only API process in that mode.

A fixed window admits at most 2x the limit across a window edge; in exchange it costs one
round-trip and one key per caller. Responses carry the IETF draft's ``RateLimit-Limit``,
``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds to the window end); a 429 adds
``Retry-After``. Ref: docs/api.md "Auth and limits"; draft-ietf-httpapi-ratelimit-headers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis


@dataclass(frozen=True)
class RateLimitState:
    """The outcome of one hit."""

    limit: int
    remaining: int
    reset_s: int  # seconds until the window ends
    allowed: bool

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.reset_s)
        return out


class RateLimiter(Protocol):
    def hit(self, owner: str) -> RateLimitState: ...


def _window(now: float, window_s: int) -> tuple[int, int]:
    """(window index, whole seconds left in it, at least 1)."""
    index = int(now // window_s)
    return index, max(1, math.ceil((index + 1) * window_s - now))


def _state(count: int, limit: int, reset_s: int) -> RateLimitState:
    return RateLimitState(
        limit=limit, remaining=max(0, limit - count), reset_s=reset_s, allowed=count <= limit
    )


class MemoryRateLimiter:
    """In-process fixed window (embedded mode: one API process)."""

    def __init__(self, limit: int, window_s: int, clock: Callable[[], float] = time.time) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, owner: str) -> RateLimitState:
        index, reset_s = _window(self.clock(), self.window_s)
        with self._lock:
            if len(self._counts) > 10_000:  # drop finished windows
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= index}
            count = self._counts.get((owner, index), 0) + 1
            self._counts[(owner, index)] = count
        return _state(count, self.limit, reset_s)


class RedisRateLimiter:
    """Fixed window shared by every API replica through Redis."""

    def __init__(
        self,
        client: redis.Redis,
        limit: int,
        window_s: int,
        prefix: str = "netshrink:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.limit, self.window_s, self.prefix, self.clock = (
            client,
            limit,
            window_s,
            prefix,
            clock,
        )

    def hit(self, owner: str) -> RateLimitState:
        window = self.window()
        key = window.key(owner)
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, window.ttl_s, nx=True)
        count, _ = pipe.execute()
        return window.state(int(count))

    def window(self) -> RedisWindow:
        """The current window: its counter keys and TTL (``service/status_read.py`` counts in a script)."""
        index, reset_s = _window(self.clock(), self.window_s)
        return RedisWindow(f"{self.prefix}ratelimit:", f":{index}", self.window_s + 1, reset_s, self.limit)


@dataclass(frozen=True)
class RedisWindow:
    """One fixed window in Redis: the counter of ``owner`` is ``key_head + owner + key_tail``."""

    key_head: str
    key_tail: str
    ttl_s: int
    reset_s: int
    limit: int

    def key(self, owner: str) -> str:
        return self.key_head + owner + self.key_tail

    def state(self, count: int) -> RateLimitState:
        return _state(count, self.limit, self.reset_s)


__all__ = ["MemoryRateLimiter", "RateLimitState", "RateLimiter", "RedisRateLimiter", "RedisWindow"]
