"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu 5.7's Redis ``Channel.conn_or_acquire()`` builds a new ``redis.Redis`` for every message it
publishes (``_put``) and for each queue-size, purge and restore call, over the channel's one
connection pool. redis-py 8.1 fills a case-insensitive table of some 170 response callbacks in every
``Redis()``: a ``send_task`` to a loopback Redis took 0.37-0.41 ms of CPU, 0.26-0.28 ms with one
client per channel (the best of ten batches of 500, the two apps interleaved in one process, two
runs, 2026-12-05; README "Service overhead"). Here the channel builds its client once, on first
use, and keeps it. A ``redis.Redis`` is safe to share between threads (each command takes a connection
from the pool) and across a fork (the pool resets itself in the child), and a channel that kombu
replaces after a connection error brings a new client with it.

Used for ``redis://`` brokers only (``celery_app.broker_transport``): ``rediss://`` and the other
schemes keep kombu's own transport, whose set-up reads the scheme (TLS defaults, sockets, sentinel).
Ref: kombu ``kombu/transport/redis.py`` (``Channel.conn_or_acquire``, ``Channel._create_client``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A kombu Redis channel that keeps one synchronous client."""

    @cached_property
    def _kept_client(self) -> Any:
        return self._create_client()

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._kept_client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with ``Channel`` above."""

    Channel = Channel


__all__ = ["TRANSPORT", "Channel", "Transport"]
