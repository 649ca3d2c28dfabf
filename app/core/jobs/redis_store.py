"""Job records as Redis hashes, with per-owner, global and unfinished sorted-set indexes."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Collection, Mapping
from functools import cached_property
from typing import Any

import redis

from app.core.boundary import RedisCalls
from app.core.events import RedisEventLog, entry_cursor
from app.core.jobs.record import (
    _FIELD_ORDER,
    EventFor,
    JobRecord,
    apply_changes,
    parse_time,
    text,
)
from app.core.lru import BoundedLRU
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

# One compare-and-set, one round trip: the record is written only if it is still the one
# the caller computed from (the SHA-1 of its fields in ``_FIELD_ORDER``, joined by
# newlines; JSON texts never hold a raw newline, an absent field is empty); else the
# record as it stands is returned and the caller computes again. A status change's event
# is XADDed first: if that fails (a wrong-typed or unwritable stream) the script stops
# before the record is touched. The job is then marked in the follow-up index until what
# comes after the event is done.
# KEYS: job key, unfinished index, event stream, follow-up index.
# ARGV: digest, ttl, final (1/0), uuid, event document ('' for none), MAXLEN ~ cap, MINID,
# now, record fields.
_COMPARE_AND_SET = """
local cur = redis.call('HMGET', KEYS[1], FIELDS)
for i = 1, #cur do
  if not cur[i] then cur[i] = '' end
end
if redis.sha1hex(table.concat(cur, '\\n')) ~= ARGV[1] then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local id = ''
if ARGV[5] ~= '' then
  id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
  redis.call('XTRIM', KEYS[3], 'MINID', ARGV[7])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[8], ARGV[4])
end
return {1, id}
""".replace("FIELDS", ", ".join(f"'{name}'" for name in _FIELD_ORDER))

#: Transition attempts before a record that keeps changing is reported as an outage.
TRANSITION_ATTEMPTS = 1000
#: Records a store remembers as it last read or wrote them (a transition's first guess).
SEEN_RECORDS = 256


def _digest(fields: Mapping[Any, Any]) -> str:
    """The SHA-1 ``_COMPARE_AND_SET`` computes of a record's fields."""
    parts = []
    for name in _FIELD_ORDER:
        value = fields.get(name, fields.get(name.encode(), b""))
        parts.append(value.encode() if isinstance(value, str) else value)
    return hashlib.sha1(b"\n".join(parts), usedforsecurity=False).hexdigest()


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


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
                             "change and its event are one script")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.events = events
        self._call = RedisCalls(client, "job store", JobStoreUnavailable)
        self._seen: BoundedLRU[str, Mapping[Any, Any]] = BoundedLRU(SEEN_RECORDS)

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
        """Return the record, or None (and remember it for a transition's first guess)."""
        data = self._call(self.client.hgetall, self._key(uuid))
        if not data:
            self._forget(uuid)
            return None
        self._remember(uuid, data)
        return JobRecord.from_fields(data)

    def delete(self, uuid: str) -> None:
        """Remove the record and its index entries."""
        record = self.get(uuid)
        self._forget(uuid)
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
        """Apply ``changes`` when the status is allowed: one compare-and-set script.

        The new record is computed from the record as this store last read or wrote it
        (one round trip when it is still current: a worker's stage transitions), else
        from a fresh read; the script writes it only if the record is unchanged, and
        otherwise answers the record as it stands, to compute again from. With ``event``
        (and an event log bound), the event is XADDed by the same script before the
        record: both or neither.

        Returns:
            The record as written (``cancel_requested`` as it stood when written), or
            None when there is none or its status is not in ``allowed`` (decided on a
            fresh read; a lost race is run again, never answered None).

        Raises:
            JobStoreUnavailable: Redis did not answer, or refused the write (the record
                and the event log are then as they were), or the record kept changing.
        """
        data, fresh = self._seen.get(uuid), False
        for _ in range(TRANSITION_ATTEMPTS):
            if data is None:
                data, fresh = self._call(self.client.hgetall, self._key(uuid)), True
            record = JobRecord.from_fields(data) if data else None
            if record is None or record.status not in allowed:
                if fresh:
                    self._forget(uuid)
                    return None
                data = None
                continue
            record = apply_changes(record, changes)
            doc = event(record) if event is not None and self.events is not None else None
            fields = record.to_fields()
            done, reply = self._call(self._cas_script, self._cas_keys(uuid),
                                     [_digest(data), *self._cas_args(record, doc), *(
                                         part for item in fields.items() for part in item)])
            if done:
                self._remember(uuid, fields)
                if doc is not None:
                    doc["id"] = entry_cursor(reply)
                return record
            data, fresh = _pairs(reply), True
        raise JobStoreUnavailable(f"job store: job {uuid} kept changing during a transition")

    def _cas_keys(self, uuid: str) -> list[str]:
        stream = self.events.key if self.events is not None else f"{self.prefix}:events"
        return [self._key(uuid), self._active(), stream, self._followups()]

    def _cas_args(self, record: JobRecord, event: dict[str, Any] | None) -> list[Any]:
        """ttl, final, uuid, event document, MAXLEN, MINID, now."""
        head = [self.ttl, 1 if record.final else 0, record.uuid]
        if event is None or self.events is None:
            return [*head, "", 0, 0, 0]
        document, max_len, min_id = self.events.entry(event)
        return [*head, document, max_len, min_id, time.time()]

    @cached_property
    def _cas_script(self) -> Any:
        return self.client.register_script(_COMPARE_AND_SET)

    def _remember(self, uuid: str, fields: Mapping[Any, Any]) -> None:
        """Keep a record's fields as last read or written (a hint: the script checks it)."""
        self._seen.put(uuid, fields)

    def _forget(self, uuid: str) -> None:
        self._seen.pop(uuid)

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
