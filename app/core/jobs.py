"""Job records: tfgen's own truth about a job, keyed by its UUID.

Celery reads an unknown task id as PENDING forever, so the API never asks Celery: it
writes a record before answering 202 and reads it back on every poll. Records outlive
Celery's result expiry and are kept ``JOB_RESULT_TTL`` seconds.

Two stores share one interface: Redis (production and tests, beside the broker) and SQL
(the embedded SQLite default). State changes go through ``transition``, an atomic
compare-and-set on the status, so a cancel and a worker racing on one job cannot both win.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, Protocol

import redis
import sqlalchemy as sa
from redis.client import Pipeline
from sqlalchemy import exc as sa_exc

from app.core.backoff import full_jitter
from app.core.boundary import SQL_UNAVAILABLE, RedisCalls, translating
from app.core.model import JobRequest
from app.errors import JobStoreUnavailable

__all__ = [
    "ACTIVE",
    "FINAL",
    "JobRecord",
    "JobStore",
    "RedisJobStore",
    "SqlJobStore",
    "deadline",
    "expire_overdue",
    "job_store_from_url",
    "sweep_overdue",
    "utcnow",
]

FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
ACTIVE = frozenset({"PENDING", "STARTED", "PROGRESS", "RETRY"})


def utcnow() -> str:
    """Now, as an ISO-8601 UTC timestamp with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> dt.datetime:
    """Parse a timestamp written by ``utcnow``."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class JobRecord:
    """One job as the API shows it (the design's job document) plus bookkeeping."""

    uuid: str
    owner: str
    request: dict[str, Any]
    status: str = "PENDING"
    stage: str = "queued"
    submitted_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    correlation_id: str | None = None
    cancel_requested: bool = False
    stages: list[dict[str, Any]] = field(default_factory=list)
    attempt_started_at: str | None = None
    worker: str | None = None
    deliveries: int = 0
    """Deliveries of the current task message that started; a child killed mid-job
    (SIGKILL, SIGABRT) cannot count its own death, so each start counts instead."""

    @property
    def job_request(self) -> JobRequest:
        """The request as a value object."""
        return JobRequest.from_dict(self.request)

    @property
    def final(self) -> bool:
        """True once the job has ended (SUCCESS, FAILURE or REVOKED)."""
        return self.status in FINAL

    def document(self) -> dict[str, Any]:
        """Return the job document APEX polls (the design's shape)."""
        return {
            "uuid": self.uuid,
            "status": self.status,
            "stage": self.stage,
            "owner": self.owner,
            "request": self.request,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "correlation_id": self.correlation_id,
            "cancel_requested": self.cancel_requested,
            "stages": self.stages,
        }

    def to_fields(self) -> dict[Any, str]:
        """Serialise every field to a string (Redis hash, SQL row)."""
        return {k: json.dumps(v, separators=(",", ":")) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, data: Mapping[Any, Any]) -> JobRecord:
        """Rebuild from ``to_fields`` output."""
        names = {f.name for f in fields(cls)}
        return cls(**{_text(k): json.loads(v) for k, v in data.items() if _text(k) in names})


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobStore(Protocol):
    """Where job records live."""

    ttl: int

    def create(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Store a new record, bound to ``idempotency_key`` in the same atomic step.

        Returns:
            ``record`` when stored; when ``idempotency_key`` is already bound to a job
            whose record exists, that job's record (and nothing is stored). A key bound
            to a job without a record (never created, or expired) is taken over.
        """

    def get(self, uuid: str) -> JobRecord | None:
        """Return the record, or None when unknown or expired."""

    def delete(self, uuid: str) -> None:
        """Remove a record (an enqueue that failed leaves nothing behind)."""

    def transition(
        self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any]
    ) -> JobRecord | None:
        """Apply ``changes`` only if the status is in ``allowed``; return the new record.

        Returns None (and changes nothing) when the record is missing or its status is
        not allowed. ``stages`` in ``changes`` is appended, ``attempts`` is added.
        """

    def list(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """Recent records, newest first; ``owner=None`` lists everyone's."""

    def unfinished(self, limit: int = 500) -> tuple[JobRecord, ...]:
        """Records not yet final, oldest first (the overdue sweep reads these)."""

    def ping(self) -> None:
        """Raise ``JobStoreUnavailable`` when the store does not answer."""

    def release_idempotency(self, key: str) -> None:
        """Forget ``key`` (its job was never enqueued)."""


def _apply(record: JobRecord, changes: Mapping[str, Any]) -> JobRecord:
    for key, value in changes.items():
        if key == "stages":
            record.stages = [*record.stages, *value]
        elif key == "attempts":
            record.attempts += int(value)
        else:
            setattr(record, key, value)
    return record


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

class RedisJobStore:
    """Job records as Redis hashes, with per-owner and global sorted-set indexes."""

    def __init__(self, client: redis.Redis, *, prefix: str = "tfgen", ttl: int = 604800) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
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
            bound = _text(self._call(self._create_script, keys,
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
        self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any]
    ) -> JobRecord | None:
        """Apply ``changes`` when the status is allowed: WATCH, check, MULTI, again on a race.

        Returns:
            The record as written, or None when there is none or its status is not in
            ``allowed`` (a lost race is run again, never answered None).

        Raises:
            JobStoreUnavailable: Redis did not answer.
        """
        key = self._key(uuid)

        def attempt(pipe: Pipeline) -> JobRecord | None:
            data = pipe.hgetall(key)
            record = JobRecord.from_fields(data) if data else None
            if record is None or record.status not in allowed:
                pipe.reset()  # type: ignore[no-untyped-call]
                return None
            record = _apply(record, changes)
            pipe.multi()
            pipe.hset(key, mapping=record.to_fields())
            pipe.expire(key, self.ttl)
            if record.final:
                pipe.zrem(self._active(), uuid)
            return record

        return self._call.transaction(attempt, key)

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
        uuids = [_text(u) for u in self._call(self.client.zrange, self._active(), 0, limit - 1)]
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


# --- SQL (embedded) ----------------------------------------------------------------------


# The SQL job store's boundary: a database that does not answer is JobStoreUnavailable,
# as with Redis.
_sql = translating(SQL_UNAVAILABLE, JobStoreUnavailable, "job store")

#: Lost compare-and-set races after which a SQL transition gives up (retryable). Each
#: lost race means another writer's transition went through, and the loser waits a
#: jittered backoff (at most 50 ms) before it reads again.
SQL_TRANSITION_ATTEMPTS = 100


class SqlJobStore:
    """Job records in one SQL table: the embedded default (SQLite), no server needed."""

    def __init__(self, url: str, *, ttl: int = 604800, table: str = "tfgen_job") -> None:
        self.ttl = ttl
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        meta = sa.MetaData()
        self.table = sa.Table(
            table, meta,
            sa.Column("uuid", sa.String(36), primary_key=True),
            sa.Column("owner", sa.String(128), nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("submitted_at", sa.String(32), nullable=False, index=True),
            sa.Column("document", sa.Text, nullable=False),
        )
        self.idempotency = sa.Table(
            f"{table}_idempotency", meta,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("uuid", sa.String(36), nullable=False),
        )
        self._lock = threading.Lock()
        _sql(meta.create_all)(self.engine)

    def _row(self, record: JobRecord) -> dict[str, Any]:
        return {"uuid": record.uuid, "owner": record.owner, "status": record.status,
                "submitted_at": record.submitted_at,
                "document": json.dumps(record.to_fields())}

    def _expired(self, record: JobRecord) -> bool:
        age = dt.datetime.now(dt.UTC) - parse_time(record.finished_at or record.submitted_at)
        return age.total_seconds() > self.ttl

    @_sql
    def create(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Insert the record, and its idempotency key in the same transaction.

        The key's primary key decides between concurrent duplicates: the loser's
        transaction (record included) rolls back, and it returns the winner's record.
        """
        t = self.idempotency
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert().values(**self._row(record)))
                    if idempotency_key:
                        conn.execute(t.insert().values(key=idempotency_key, uuid=record.uuid))
                return record
            except sa_exc.IntegrityError:
                if not idempotency_key:
                    raise
            with self.engine.begin() as conn:
                bound = conn.execute(sa.select(t.c.uuid)
                                     .where(t.c.key == idempotency_key)).scalar()
                earlier = self.get(str(bound)) if bound else None
                if earlier is not None:
                    return earlier
                # Bound to a job that has no record: take the key over.
                conn.execute(t.delete().where(t.c.key == idempotency_key, t.c.uuid == bound))
        raise JobStoreUnavailable("job store: idempotency key kept changing hands")

    @_sql
    def get(self, uuid: str) -> JobRecord | None:
        """Return the record unless unknown or past its TTL."""
        with self.engine.connect() as conn:
            doc = conn.execute(sa.select(self.table.c.document)
                               .where(self.table.c.uuid == uuid)).scalar_one_or_none()
        if doc is None:
            return None
        record = JobRecord.from_fields(json.loads(doc))
        return None if self._expired(record) else record

    @_sql
    def delete(self, uuid: str) -> None:
        """Delete the record."""
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.uuid == uuid))

    @_sql
    def transition(
        self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any]
    ) -> JobRecord | None:
        """Apply ``changes`` when the status is allowed: UPDATE guarded on the old status.

        Returns:
            The record as written, or None when there is none or its status is not in
            ``allowed``. A lost race (another process wrote in between) is run again.

        Raises:
            JobStoreUnavailable: The database did not answer, or the record kept
                changing under ``SQL_TRANSITION_ATTEMPTS`` attempts (retryable; never
                answered None as if the transition were refused).
        """
        with self._lock:
            for attempt in range(SQL_TRANSITION_ATTEMPTS):
                current = self.get(uuid)
                if current is None or current.status not in allowed:
                    return None
                updated = _apply(JobRecord.from_fields(current.to_fields()), changes)
                t = self.table
                with self.engine.begin() as conn:
                    done = conn.execute(
                        t.update()
                        .where(t.c.uuid == uuid, t.c.document == json.dumps(current.to_fields()))
                        .values(status=updated.status, document=json.dumps(updated.to_fields()))
                    ).rowcount
                if done:
                    return updated
                time.sleep(full_jitter(attempt, 0.001, 0.05))
        raise JobStoreUnavailable(f"job store: job {uuid} kept changing during a transition")

    @_sql
    def list(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """Recent records, newest first."""
        t = self.table
        query = sa.select(t.c.document).order_by(t.c.submitted_at.desc()).limit(limit)
        if owner:
            query = query.where(t.c.owner == owner)
        with self.engine.connect() as conn:
            docs = conn.execute(query).scalars().all()
        records = (JobRecord.from_fields(json.loads(d)) for d in docs)
        return [r for r in records if not self._expired(r)]

    @_sql
    def unfinished(self, limit: int = 500) -> tuple[JobRecord, ...]:
        """Records not yet final, oldest first."""
        t = self.table
        query = (sa.select(t.c.document).where(t.c.status.in_(sorted(ACTIVE)))
                 .order_by(t.c.submitted_at).limit(limit))
        with self.engine.connect() as conn:
            docs = conn.execute(query).scalars().all()
        return tuple(JobRecord.from_fields(json.loads(d)) for d in docs)

    @_sql
    def release_idempotency(self, key: str) -> None:
        """Delete the key."""
        with self.engine.begin() as conn:
            conn.execute(self.idempotency.delete().where(self.idempotency.c.key == key))

    @_sql
    def ping(self) -> None:
        """Run a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))


def deadline(record: JobRecord, config: Mapping[str, Any]) -> dt.datetime | None:
    """When an unfinished job is overdue and must be ended as ``TIMEOUT``.

    Queued: it should have run or expired (``JOB_QUEUE_EXPIRES``). Running: the hard time
    limit, plus the broker's visibility timeout so that a message of a worker that died
    whole is redelivered and re-run before the job is declared lost. Counted from the
    first start of the current message (``attempt_started_at`` is not moved by a
    redelivery), so a job whose worker keeps dying cannot push its deadline on.
    """
    if record.final:
        return None
    grace = 30
    hard = int(config["JOB_TIME_LIMIT"])
    visibility = int(config["CELERY"]["broker_transport_options"].get("visibility_timeout", 0))
    queue = int(config["JOB_QUEUE_EXPIRES"])
    if record.status == "PENDING":
        base, allowance = record.submitted_at, queue + grace
    elif record.status == "RETRY":
        base = record.stages[-1]["at"] if record.stages else record.submitted_at
        allowance = int(config["JOB_RETRY_BACKOFF_MAX"]) + queue + grace
    else:
        base = record.attempt_started_at or record.submitted_at
        allowance = hard + visibility + grace
    return parse_time(base) + dt.timedelta(seconds=allowance)


def expire_overdue(store: JobStore, record: JobRecord, config: Mapping[str, Any]) -> JobRecord:
    """End ``record`` as FAILURE/TIMEOUT when past its deadline; return the current record."""
    return _expire(store, record, config)[0]


def _expire(store: JobStore, record: JobRecord, config: Mapping[str, Any]
            ) -> tuple[JobRecord, bool]:
    due = deadline(record, config)
    if due is None or dt.datetime.now(dt.UTC) < due:
        return record, False
    error = {"code": "TIMEOUT", "retryable": True,
             "message": f"job did not finish in time (was {record.status} at {record.stage})"}
    ended = store.transition(record.uuid, {record.status},
                             {"status": "FAILURE", "error": error, "finished_at": utcnow()})
    return (ended or store.get(record.uuid) or record), ended is not None


def sweep_overdue(store: JobStore, config: Mapping[str, Any], limit: int = 500
                  ) -> list[JobRecord]:
    """End every unfinished job past its deadline; return the ones this call ended.

    Run periodically (``tfgen.sweep`` under ``celery beat``), so a job whose message was
    lost ends as ``TIMEOUT`` without waiting for someone to read it.
    """
    ended = []
    for record in store.unfinished(limit):
        current, changed = _expire(store, record, config)
        if changed:
            ended.append(current)
    return ended


def job_store_from_url(url: str, *, prefix: str = "tfgen", ttl: int = 604800) -> JobStore:
    """Open the job store a URL names: ``redis://`` or any SQLAlchemy URL."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5,
                                      health_check_interval=30)
        return RedisJobStore(client, prefix=prefix, ttl=ttl)
    return SqlJobStore(url, ttl=ttl)
