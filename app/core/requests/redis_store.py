"""Request records in Redis: JSON strings, a sorted set by change time, one for the
reconciler; every Redis error leaves as ``DatabaseUnavailable`` (``RedisCalls``)."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Iterator

import redis
from redis.client import Pipeline

from app.core.boundary import RedisCalls
from app.core.requests.record import RECONCILE_STATES, RequestRecord, Step
from app.errors import DatabaseUnavailable

__all__ = ["RedisRequestStore"]


class RedisRequestStore:
    """Records as JSON strings; a sorted set by change time, one for the reconciler."""

    def __init__(self, client: redis.Redis, *, prefix: str = "tfgen") -> None:
        self.client = client
        self.prefix = prefix
        self._call = RedisCalls(client, "request store", DatabaseUnavailable)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:request:{key}"

    @property
    def _by_time(self) -> str:
        return f"{self.prefix}:requests"

    @property
    def _due(self) -> str:
        return f"{self.prefix}:requests:due"

    def get(self, key: str) -> RequestRecord | None:
        """GET the record."""
        raw = self._call(self.client.get, self._key(key))
        return RequestRecord.from_json(raw) if raw else None

    def update(self, key: str, step: Step) -> tuple[RequestRecord | None, bool]:
        """WATCH, run the step, MULTI/EXEC; again on a race."""
        name = self._key(key)

        def attempt(pipe: Pipeline) -> tuple[RequestRecord | None, bool]:
            raw = pipe.get(name)
            current = RequestRecord.from_json(raw) if raw else None
            outcome = step(current)
            if outcome is None:
                pipe.reset()  # type: ignore[no-untyped-call]
                return current, False
            record, changed = outcome
            score = dt.datetime.now(dt.UTC).timestamp()
            pipe.multi()
            pipe.set(name, record.to_json())
            pipe.zadd(self._by_time, {key: score})
            if record.state in RECONCILE_STATES:
                pipe.zadd(self._due, {key: 0}, nx=True)
            else:
                pipe.zrem(self._due, key)
            return record, changed

        return self._call.transaction(attempt, name)

    def list(self, *, state: str | None = None, cloud_id: str | None = None,
             resource_type: str | None = None, limit: int = 100) -> builtins.list[RequestRecord]:
        """Newest first, filtered here (records are few: one per APEX request)."""
        out: builtins.list[RequestRecord] = []
        for record in self._newest():
            if (state and record.state != state) or (cloud_id and record.cloud_id != cloud_id) \
                    or (resource_type and record.resource_type != resource_type):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def _newest(self, page: int = 200) -> Iterator[RequestRecord]:
        start = 0
        while True:
            keys = self._call(self.client.zrevrange, self._by_time, start, start + page - 1)
            if not keys:
                return
            raws = self._call(self.client.mget, [self._key(_text(k)) for k in keys])
            yield from (RequestRecord.from_json(r) for r in raws if r)
            start += page

    def due(self, limit: int) -> builtins.list[RequestRecord]:
        """The least recently checked first; each gets checked-at now."""
        keys = [_text(k) for k in self._call(self.client.zrange, self._due, 0, limit - 1)]
        if not keys:
            return []
        now = dt.datetime.now(dt.UTC).timestamp()
        self._call(self.client.zadd, self._due, dict.fromkeys(keys, now), xx=True)
        records = (self.get(k) for k in keys)
        return [r for r in records if r is not None and r.state in RECONCILE_STATES]

    def link(self, alias: str, key: str) -> None:
        """SET the alias."""
        self._call(self.client.set, f"{self.prefix}:request-alias:{alias}", key)

    def resolve(self, alias: str) -> str | None:
        """GET the alias."""
        raw = self._call(self.client.get, f"{self.prefix}:request-alias:{alias}")
        return _text(raw) if raw else None

    def claim_delivery(self, delivery: str, ttl: int) -> bool:
        """SET NX with a TTL."""
        name = f"{self.prefix}:hook-delivery:{delivery}"
        return bool(self._call(self.client.set, name, "1", nx=True, ex=ttl))

    def release_delivery(self, delivery: str) -> None:
        """DEL the claim."""
        self._call(self.client.delete, f"{self.prefix}:hook-delivery:{delivery}")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value

