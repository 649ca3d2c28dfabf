"""Where request records live: the store's protocol, and the store a URL names."""

from __future__ import annotations

import builtins
from typing import Protocol

import redis

from app.core.requests.record import RequestRecord, Step
from app.core.requests.redis_store import RedisRequestStore
from app.core.requests.sql_store import SqlRequestStore

__all__ = ["RequestStore", "request_store_from_url"]


class RequestStore(Protocol):
    """Where request records live."""

    def get(self, key: str) -> RequestRecord | None:
        """The record, or None."""

    def update(self, key: str, step: Step) -> tuple[RequestRecord | None, bool]:
        """Apply ``step`` atomically (compare-and-set); return the record and whether its
        state changed. ``(current, False)`` when the step changed nothing."""

    def list(self, *, state: str | None = None, cloud_id: str | None = None,
             resource_type: str | None = None, limit: int = 100) -> builtins.list[RequestRecord]:
        """Records, most recently changed first."""

    def due(self, limit: int) -> builtins.list[RequestRecord]:
        """Up to ``limit`` records in ``RECONCILE_STATES``, least recently checked first;
        each returned one counts as checked now."""

    def link(self, alias: str, key: str) -> None:
        """Make ``alias`` (a branch, a merge commit) find the record ``key``."""

    def resolve(self, alias: str) -> str | None:
        """The record key an alias names."""

    def claim_delivery(self, delivery: str, ttl: int) -> bool:
        """True the first time ``delivery`` is claimed within ``ttl`` seconds."""

    def release_delivery(self, delivery: str) -> None:
        """Forget a claim (its delivery could not be queued)."""


def request_store_from_url(url: str, *, prefix: str = "tfgen") -> RequestStore:
    """Open the request store a URL names: ``redis://`` or any SQLAlchemy URL."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5,
                                      health_check_interval=30)
        return RedisRequestStore(client, prefix=prefix)
    return SqlRequestStore(url)
