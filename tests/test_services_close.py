"""An app dropped before its process ends (a test's stack, a one-off command) can release
the connections its stores opened, instead of leaving sockets for gc to find."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.conftest import Stack, sqlite_apex, stack_env


def _open(client: redis.Redis) -> int:
    pool = client.connection_pool
    return sum(1 for c in pool._available_connections if c._sock is not None)  # type: ignore[attr-defined]


def test_close_releases_every_store_connection(tmp_path: Path, redis_client: redis.Redis) -> None:
    stack = Stack(stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), "close"))
    svc = stack.app.extensions["tfgen"]
    svc.jobs.get("nothing")
    svc.events.scan(None, 1)
    svc.requests.get("nothing")
    svc.waivers.for_request("aws", "rds", 1)
    clients = [svc.jobs.inner.client, svc.events.client, svc.requests.client,
               svc.waivers.client]
    assert all(_open(c) for c in clients)
    svc.close()
    assert [_open(c) for c in clients] == [0, 0, 0, 0]
