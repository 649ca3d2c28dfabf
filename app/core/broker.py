"""kombu's Redis transport, keeping one client object per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` for every publish, ack and queue
command it sends outside its consumer loop (``Channel.conn_or_acquire`` ->
``_create_client``). The client is only a front for the channel's connection pool, but
redis-py 8 copies its ~170 response callbacks into a new case-insensitive dict for
each one: ~90 us of CPU per publish, a tenth of the API's submit
(docs/benchmarks.md). Here the channel keeps the client it built and reuses it for as
long as the channel keeps the same pool; a reconnect (kombu drops the pool) builds a
new one. The commands, their connections and their retries are kombu's and redis-py's
as before: a ``redis.Redis`` is safe to share between threads, each command takes a
connection from the pool.

Used for ``redis://`` brokers (``config/settings/flat.py`` sets Celery's
``broker_transport``); ``rediss://`` keeps kombu's own transport, whose scheme check
refuses a TLS URL without TLS options.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A kombu Redis channel whose client object outlives a command."""

    _kept_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """``client`` when given, else the channel's kept client (built anew per pool)."""
        if client:
            yield client
            return
        kept = self._kept_client
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._kept_client = self._create_client()  # type: ignore[no-untyped-call]
        yield kept


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
