"""Job records as Redis hashes, with per-owner, global and unfinished sorted-set indexes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection, Mapping
from functools import cached_property
from typing import Any

import redis
from redis.client import Pipeline

from app.core.boundary import RedisCalls
from app.core.events import RedisEventLog, entry_cursor
from app.core.jobs.record import EventFor, JobRecord, apply_changes, parse_time, text
from app.errors import JobStoreUnavailable

__all__ = ["RedisJobStore"]

# --- Redis -------------------------------------------------------------------------------

# KEYS: idempotency key, job key, owner index, global index, unfinished index.
# ARGV: uuid, ttl, score, job key prefix, then the record's field/value pairs.
_CREATE_ONCE = """
local bound = redis.call('GET', KEYS[1])
if bound and redis.call('EXISTS', ARGV[4] .. bound) == 1 then
  return bound
end
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

# A status change and its event, in one step (run inside the transition's MULTI/EXEC, so
# the WATCH on the job key still decides races). The XADD comes first: if it fails (a
# wrong-typed or unwritable stream), the script stops before the record is touched. The
# job is marked in the follow-up index until what comes after the event is done.
# KEYS: job key, unfinished index, event stream, follow-up index.
# ARGV: ttl, final (1/0), uuid, event document, MAXLEN ~ cap, MINID, now, record fields.
_TRANSITION_WITH_EVENT = """
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[4])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[3])
end
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[3])
return id
"""


class RedisJobStore:
    """Job records as Redis hashes, with per-owner and global sorted-set indexes.

    Args:
        client: The job store's Redis.
        prefix: Of every key.
        ttl: Seconds a record is kept.
        events: The event log status changes write their events to, in the same step
            (it must live in the same Redis).
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "tfgen", ttl: int = 604800,
                 events: RedisEventLog | None = None) -> None:
        if events is not None and not events.same_server(client):
            raise ValueError("the event log must live in the job store's Redis: a status "
                             "change and its event are one MULTI/EXEC")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.events = events
        self._call = RedisCalls(client, "job store", JobStoreUnavailable)

    def _key(self, uuid: str) -> str:
        return f"{self.prefix}:job:{uuid}"

    def _index(self, owner: str | None) -> str:
        return f"{self.prefix}:jobs:{owner}" if owner else f"{self.prefix}:jobs"

    def _active(self) -> str:
        return f"{self.prefix}:jobs-unfinished"

    def create(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Store a new record and index it by owner and time (one MULTI, or one script).

        With ``idempotency_key``, a Lua script checks the key, writes the record and
        binds the key in one step: no reader ever sees the key without its record.
        """
        score = parse_time(record.submitted_at).timestamp()
        if idempotency_key:
            return self._create_once(record, idempotency_key, score)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._key(record.uuid), mapping=record.to_fields())
        pipe.expire(self._key(record.uuid), self.ttl)
        pipe.zadd(self._index(record.owner), {record.uuid: score})
        pipe.zadd(self._index(None), {record.uuid: score})
        pipe.zadd(self._active(), {record.uuid: score})
        self._call(pipe.execute)
        return record

    def _create_once(self, record: JobRecord, key: str, score: float) -> JobRecord:
        flat = [part for item in record.to_fields().items() for part in item]
        keys = [self._idem(key), self._key(record.uuid), self._index(record.owner),
                self._index(None), self._active()]
        for _ in range(3):
            bound = text(self._call(self._create_script, keys,
                                     [record.uuid, self.ttl, score, self._key(""), *flat]))
            if bound == record.uuid:
                return record
            earlier = self.get(bound)
            if earlier is not None:
                return earlier
        raise JobStoreUnavailable("job store: idempotency key kept changing hands")

    @cached_property
    def _create_script(self) -> Any:
        return self.client.register_script(_CREATE_ONCE)

    def _idem(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def get(self, uuid: str) -> JobRecord | None:
        """Return the record, or None."""
        data = self._call(self.client.hgetall, self._key(uuid))
        return JobRecord.from_fields(data) if data else None

    def delete(self, uuid: str) -> None:
        """Remove the record and its index entries."""
        record = self.get(uuid)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._key(uuid))
        pipe.zrem(self._index(None), uuid)
        pipe.zrem(self._active(), uuid)
        if record:
            pipe.zrem(self._index(record.owner), uuid)
        self._call(pipe.execute)

    def transition(
        self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any],
        event: EventFor | None = None,
    ) -> JobRecord | None:
        """Apply ``changes`` when the status is allowed: WATCH, check, MULTI, again on a race.

        With ``event`` (and an event log bound), the event is XADDed inside the same
        MULTI/EXEC, by a script that writes it before the record: both or neither.

        Returns:
            The record as written, or None when there is none or its status is not in
            ``allowed`` (a lost race is run again, never answered None).

        Raises:
            JobStoreUnavailable: Redis did not answer, or refused the write (the record
                and the event log are then as they were).
        """
        key = self._key(uuid)
        written: dict[str, Any] = {}

        def attempt(pipe: Pipeline) -> None:
            written.clear()
            data = pipe.hgetall(key)
            record = JobRecord.from_fields(data) if data else None
            if record is None or record.status not in allowed:
                pipe.reset()  # type: ignore[no-untyped-call]
                return
            record = apply_changes(record, changes)
            doc = event(record) if event is not None and self.events is not None else None
            written.update(record=record, event=doc)
            pipe.multi()
            if doc is not None:
                assert self.events is not None
                self._queue_with_event(pipe, record, doc, self.events)
                return
            pipe.hset(key, mapping=record.to_fields())
            pipe.expire(key, self.ttl)
            if record.final:
                pipe.zrem(self._active(), uuid)

        results = self._call(self.client.transaction, attempt, key, value_from_callable=False)
        if written.get("event") is not None:
            written["event"]["id"] = entry_cursor(results[0])
        record: JobRecord | None = written.get("record")
        return record

    def _queue_with_event(self, pipe: Pipeline, record: JobRecord, event: dict[str, Any],
                          events: RedisEventLog) -> None:
        document, max_len, min_id = events.entry(event)
        flat = [part for item in record.to_fields().items() for part in item]
        pipe.eval(_TRANSITION_WITH_EVENT, 4, self._key(record.uuid), self._active(),
                  events.key, self._followups(), self.ttl, 1 if record.final else 0,
                  record.uuid, document, max_len, min_id, time.time(), *flat)

    def _followups(self) -> str:
        return f"{self.prefix}:jobs-followup"

    def followups(self, older_than: float, limit: int = 500) -> tuple[str, ...]:
        """Jobs whose last event was written ``older_than`` seconds ago or more and whose
        follow-up (``followup_done``) has not been done, oldest first."""
        cutoff = time.time() - older_than
        found = self._call(self.client.zrangebyscore, self._followups(), "-inf", cutoff,
                           start=0, num=limit)
        return tuple(text(u) for u in found)

    def followup_done(self, uuid: str) -> None:
        """What comes after job ``uuid``'s event has been done."""
        self._call(self.client.zrem, self._followups(), uuid)

    def list(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """Recent records, newest first; expired ones are dropped from the index."""
        index = self._index(owner)
        cutoff = dt.datetime.now(dt.UTC).timestamp() - self.ttl
        self._call(self.client.zremrangebyscore, index, "-inf", cutoff)
        uuids = self._call(self.client.zrevrange, index, 0, limit - 1)
        records = (self.get(u.decode() if isinstance(u, bytes) else u) for u in uuids)
        return [r for r in records if r is not None]

    def unfinished(self, limit: int = 500) -> tuple[JobRecord, ...]:
        """Records not yet final, oldest first; ended or expired ones leave the index."""
        uuids = [text(u) for u in self._call(self.client.zrange, self._active(), 0, limit - 1)]
        records = []
        for uuid in uuids:
            record = self.get(uuid)
            if record is None or record.final:
                self._call(self.client.zrem, self._active(), uuid)
            else:
                records.append(record)
        return tuple(records)

    def ping(self) -> None:
        """Ping Redis."""
        self._call(self.client.ping)

    def release_idempotency(self, key: str) -> None:
        """Delete the key."""
        self._call(self.client.delete, self._idem(key))
