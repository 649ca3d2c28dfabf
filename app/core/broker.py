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

It also keeps kombu's teardown after a lost connection from ending the worker. Celery
closes the lost connection twice (``Connection.collect``, then ``close``); when the
first pass cannot close every channel (one fails to read its pending ``BRPOP`` or
``LISTEN``), the Connection is detached from its transport with a channel still open,
and the second pass, or an ack from the worker's hub, makes that channel build a new
pool from the detached Connection: ``AttributeError: 'NoneType' object has no attribute
'hostname'``. kombu's teardown ignores connection errors, not that, so it was Celery's
"Unrecoverable error" and the worker's main process exited (kombu 5.7.0; the same
family as kombu#582 and #970). Here that channel raises a connection error instead: the
worker reconnects, and the channel's unacknowledged messages, still in Redis's unacked
hash, come back after the visibility timeout as they would after the crash.

Used for ``redis://`` brokers (``config/settings/flat.py`` sets Celery's
``broker_transport``); ``rediss://`` keeps kombu's own transport, whose scheme check
refuses a TLS URL without TLS options.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
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

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            # Detached from its Connection (see the module's docstring): nothing to reach.
            raise redis.exceptions.ConnectionError("the broker connection was closed")
        params: dict[str, Any] = super()._connparams(  # type: ignore[no-untyped-call]
            asynchronous=asynchronous)
        return params


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
